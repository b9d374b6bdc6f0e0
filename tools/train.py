"""Train a face-recognition model from a config, then evaluate it on the configured targets.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [auto|PATH]] [--load-from CKPT]
                          [--device-target CPU|GPU|Ascend|auto] [--seed N] [--cfg-options k=v ...]

Config errors (missing keys, unknown registry names, bad values) exit with status 2 and a
message before any model or data is built. Under ``tools/dist_train.sh`` (msrun) every worker
runs this script; rank 0 logs, saves and evaluates.
"""
import argparse
import os
import os.path as osp
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def parse_args(argv=None):
    from facekit.config import add_cfg_options_argument
    parser = argparse.ArgumentParser(description='Train a facekit model from a config file.')
    parser.add_argument('config', help='config file (.py/.yaml/.json)')
    parser.add_argument('--work-dir', help='where logs and checkpoints go (default work_dirs/<config name>)')
    parser.add_argument('--resume', nargs='?', const='auto', default=None,
                        help="continue a run: 'auto' (default when given alone) = newest checkpoint in the "
                             'work dir, or a checkpoint path')
    parser.add_argument('--load-from', help='initialise the backbone (and the head if its shape matches) from '
                                            'a checkpoint; optimizer and schedule start fresh (fine-tuning)')
    parser.add_argument('--device-target', help='CPU | GPU | Ascend | auto (overrides runtime.device_target)')
    parser.add_argument('--seed', type=int, help='global seed (overrides runtime.seed)')
    add_cfg_options_argument(parser)
    return parser.parse_args(argv)


class ConfigCheckError(Exception):
    """A config problem found before training starts."""


def _require(cfg, key, what):
    node = cfg.to_dict()
    for part in key.split('.'):
        if not isinstance(node, dict) or part not in node:
            raise ConfigCheckError(f"{cfg.filename}: missing '{key}' ({what})")
        node = node[part]
    return node


def _check_type(section, value, registry):
    if not isinstance(value, dict) or 'type' not in value:
        raise ConfigCheckError(f"'{section}' must be a dict with a 'type' key, got {value!r}")
    t = value['type']
    if isinstance(t, str) and t not in registry and '.' not in t:
        try:
            registry.get(t)
        except KeyError as e:
            raise ConfigCheckError(f"{section}.type: {e.args[0]}") from None


def check_config(cfg):
    """Validate what training needs, cheaply (no model, no data). Raises ConfigCheckError."""
    from facekit.registry import (BACKBONES, DATASETS, EVALUATORS, HEADS, HOOKS, LOSSES, LR_SCHEDULES, MODELS,
                                  OPTIMIZERS, TRANSFORMS)
    model = _require(cfg, 'model', 'the FaceRecognizer config')
    _check_type('model', model, MODELS)
    for part, reg in (('backbone', BACKBONES), ('head', HEADS), ('loss', LOSSES)):
        if part in model and isinstance(model[part], dict):
            _check_type(f'model.{part}', model[part], reg)
    loader = _require(cfg, 'train_dataloader', 'batch_size, dataset, ...')
    bs = _require(cfg, 'train_dataloader.batch_size', 'per-device batch size')
    if not isinstance(bs, int) or bs <= 0:
        raise ConfigCheckError(f'train_dataloader.batch_size must be a positive int, got {bs!r}')
    dataset = _require(cfg, 'train_dataloader.dataset', 'the training set')
    if isinstance(dataset, dict):
        _check_type('train_dataloader.dataset', dataset, DATASETS)
        for i, t in enumerate(dataset.get('pipeline', []) or []):
            _check_type(f'train_dataloader.dataset.pipeline.{i}', t, TRANSFORMS)
    del loader
    _check_type('optimizer', _require(cfg, 'optimizer', 'e.g. dict(type="SGD", lr=0.1)'), OPTIMIZERS)
    if cfg.get('lr_schedule') is not None:
        _check_type('lr_schedule', cfg.lr_schedule, LR_SCHEDULES)
    epochs = _require(cfg, 'train_cfg.max_epochs', 'number of epochs')
    if not isinstance(epochs, (int, float)) or epochs <= 0:
        raise ConfigCheckError(f'train_cfg.max_epochs must be a positive number, got {epochs!r}')
    for i, h in enumerate(cfg.get('hooks', []) or []):
        _check_type(f'hooks.{i}', h, HOOKS)
    for i, ev in enumerate(cfg.get('val_evaluators', []) or []):
        _check_type(f'val_evaluators.{i}', ev, EVALUATORS)
        if isinstance(ev.get('dataset'), dict):
            _check_type(f'val_evaluators.{i}.dataset', ev['dataset'], DATASETS)
    runtime = cfg.get('runtime', {}) or {}
    if str(runtime.get('mode', 'graph')).lower() not in ('graph', 'pynative'):
        raise ConfigCheckError(f"runtime.mode must be 'graph' or 'pynative', got {runtime.get('mode')!r}")
    from facekit.engine.amp import AMP_LEVELS, parse_loss_scale
    if str(runtime.get('amp_level', 'O0')).upper() not in AMP_LEVELS:
        raise ConfigCheckError(f"runtime.amp_level must be one of {AMP_LEVELS}, got {runtime.get('amp_level')!r}")
    try:
        parse_loss_scale(runtime.get('loss_scale'))
    except ValueError as e:
        raise ConfigCheckError(str(e)) from None


def final_evaluation(runner, cfg):
    """Evaluate every val_evaluator once more on the final weights; print the table(s); write JSON."""
    from facekit.evaluation import verification_table, write_json
    from facekit.evaluation.reporting import summary_only
    if not runner.evaluators:
        return {}
    results = runner.eval_results if runner.last_eval_iter == runner.iter else runner.evaluate()
    print(verification_table(results, title=f'verification (10-fold) after {runner.iter} iterations'))
    out = {name: summary_only(r) for name, r in results.items()}
    if (cfg.get('train_cfg', {}) or {}).get('raw_pixel_floor', False):
        from facekit.evaluation.floor import raw_pixel_floor
        from facekit.evaluation.reporting import _table, format_mean_std
        rows = [['target', 'trained (flip)', 'raw-pixel floor', 'margin', 'standardized floor', 'margin']]
        for ev in runner.evaluators:
            r = results[ev.name]
            pairs = ev.load()
            # DESIGN.md's floor: normalized pixels (plain or flip-summed, the higher); and the stricter
            # standardized floor (each image's channels to zero mean, unit std: undoes colour casts).
            floors = {}
            for standardize in (False, True):
                fs = [raw_pixel_floor(pairs, nfolds=ev.nfolds, flip=flip, standardize=standardize)
                      for flip in (False, True)]
                floors[standardize] = max(fs, key=lambda f: f['accuracy'])
            raw, std = floors[False], floors[True]
            out[ev.name].update(raw_pixel_floor=raw['accuracy'], raw_pixel_floor_std=raw['accuracy_std'],
                                standardized_floor=std['accuracy'], standardized_floor_std=std['accuracy_std'])
            rows.append([ev.name, format_mean_std(r['accuracy'], r['accuracy_std']),
                         format_mean_std(raw['accuracy'], raw['accuracy_std']),
                         f"{r['accuracy'] - raw['accuracy']:+.5f}",
                         format_mean_std(std['accuracy'], std['accuracy_std']),
                         f"{r['accuracy'] - std['accuracy']:+.5f}"])
        print(_table(rows, 'held-out verification vs the raw-pixel floor'))
    path = write_json(out, osp.join(runner.work_dir, 'eval_results.json'))
    print(f'results written to {path}')
    return out


def main(argv=None):
    args = parse_args(argv)
    from facekit.config import Config, ConfigError
    try:
        cfg = Config.fromfile(args.config)
        if args.cfg_options:
            cfg.merge_from_dict(args.cfg_options)
        runtime = cfg.get('runtime', None)
        if runtime is None:
            cfg.merge_from_dict({'runtime': {}})
        if args.device_target:
            cfg.merge_from_dict({'runtime.device_target': args.device_target})
        if args.seed is not None:
            cfg.merge_from_dict({'runtime.seed': args.seed})
        import facekit  # noqa: F401  (fills the model/data/evaluation registries)
        import facekit.engine  # noqa: F401  (optimizers, schedules, hooks)
        check_config(cfg)
    except (ConfigError, ConfigCheckError, FileNotFoundError, ImportError, SyntaxError) as e:
        print(f'config error: {e}', file=sys.stderr)
        return 2
    if args.resume and args.load_from:
        print('config error: --resume and --load-from are exclusive (resume continues a run; load-from '
              'starts a new one from weights)', file=sys.stderr)
        return 2
    if args.resume and args.resume != 'auto' and not osp.isfile(args.resume):
        print(f'config error: --resume checkpoint not found: {args.resume}', file=sys.stderr)
        return 2
    if args.load_from and not osp.isfile(args.load_from):
        print(f'config error: --load-from checkpoint not found: {args.load_from}', file=sys.stderr)
        return 2

    work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        'work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.merge_from_dict({'work_dir': osp.abspath(work_dir)})

    from facekit.engine import dist
    from facekit.engine.runner import Runner, find_latest_checkpoint
    from facekit.utils.runtime import setup_runtime
    runtime = cfg.runtime
    try:
        target = setup_runtime(runtime.get('device_target', 'auto'), runtime.get('mode', 'graph'),
                               seed=runtime.get('seed'))
    except ValueError as e:
        print(f'config error: {e}', file=sys.stderr)
        return 2
    _apply_graph_options(runtime)
    dist.init_dist(runtime.get('comm_backend'))
    cfg.merge_from_dict({'runtime.device_target_resolved': target})

    t0 = time.time()
    runner = Runner.from_cfg(cfg)
    if args.resume:
        path = find_latest_checkpoint(runner.work_dir) if args.resume == 'auto' else args.resume
        if path is None:
            runner.log(f'--resume auto: no checkpoint in {runner.work_dir}; starting from scratch')
        else:
            runner.resume(path)
    elif args.load_from:
        runner.load_from(args.load_from)
    runner.train()
    train_s = time.time() - t0
    if dist.is_main_process():
        runner.log(f'training finished in {train_s:.1f} s ({runner.iter} iterations)')
        if (cfg.get('train_cfg', {}) or {}).get('final_eval', True):
            final_evaluation(runner, cfg)
        runner.log(f'total wall time {time.time() - t0:.1f} s')
    dist.barrier()
    runner.close()
    return 0


def _apply_graph_options(runtime):
    """Optional MindSpore graph-compiler settings from ``runtime.jit_level`` (O0/O1/O2)."""
    level = runtime.get('jit_level')
    if level:
        import mindspore as ms
        ms.set_context(jit_config={'jit_level': str(level)})


if __name__ == '__main__':
    sys.exit(main())
