"""Evaluate a checkpoint: 10-fold verification on .bin targets (and any evaluator in the config).

    python tools/test.py CONFIG CHECKPOINT [--target lfw,cfp_fp,agedb_30,calfw,cplfw]
        [--data-root DIR] [--batch-size N] [--device-target auto] [--out results.json]
        [--work-dir DIR] [--nfolds 10] [--no-flip] [--roc] [--cfg-options k=v ...]

Without --target the config's ``test_evaluators`` (else ``val_evaluators``) are run. With
--target, ``<data root>/<name>.bin`` is evaluated for each name; the data roots searched are
--data-root, the config's ``data_root``, and the folders of the config's evaluator .bin files.
Missing .bin files are listed first with every path searched; the others are still evaluated.

Results: a table per evaluator kind on stdout, all numbers as JSON (--out, default
``<work dir>/eval_<checkpoint name>.json``), ROC PNGs in the work dir with --roc.
Under msrun (tools/dist_test.sh) each rank embeds a share of the batches; rank 0 reports.
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
os.environ.setdefault('ONEDNN_MAX_CPU_ISA', 'AVX2')

DEFAULT_TARGETS = 'lfw,cfp_fp,agedb_30,calfw,cplfw'


def parse_args(argv=None):
    from facekit.config import add_cfg_options_argument
    parser = argparse.ArgumentParser(description='Evaluate a facekit checkpoint (10-fold verification, TAR@FAR).')
    parser.add_argument('config', help='experiment config file')
    parser.add_argument('checkpoint', help='.ckpt file (FaceRecognizer or bare backbone)')
    parser.add_argument('--target', default=None,
                        help=f'comma-separated .bin names, e.g. {DEFAULT_TARGETS}; default: the config\'s evaluators')
    parser.add_argument('--data-root', default=None, help='folder holding <target>.bin files')
    parser.add_argument('--batch-size', type=int, default=None, help='images per forward pass (default 64)')
    parser.add_argument('--device-target', default=None, help="CPU | GPU | Ascend | auto (default: config's runtime)")
    parser.add_argument('--mode', default=None, choices=['graph', 'pynative'], help="default: config's runtime")
    parser.add_argument('--nfolds', type=int, default=None, help='folds of the verification protocol (10)')
    parser.add_argument('--no-flip', action='store_true', help='embed the original images only')
    parser.add_argument('--work-dir', default=None, help='default: the config\'s work_dir or work_dirs/<config name>')
    parser.add_argument('--out', default=None, help='JSON results path (default: <work dir>/eval_<checkpoint>.json)')
    parser.add_argument('--roc', action='store_true', help='write an ROC curve PNG per target to the work dir')
    add_cfg_options_argument(parser)
    return parser.parse_args(argv)


def data_roots(args, cfg):
    """Folders searched for <target>.bin, in order, without duplicates."""
    roots = []
    if args.data_root:
        roots.append(args.data_root)
    if cfg.get('data_root'):
        roots.append(cfg.get('data_root'))
    for ev in list(cfg.get('test_evaluators') or []) + list(cfg.get('val_evaluators') or []):
        if ev.get('bin_path'):
            roots.append(osp.dirname(ev['bin_path']) or '.')
    if not roots:
        roots.append('data')
    out = []
    for r in roots:
        r = osp.abspath(osp.expanduser(str(r)))
        if r not in out:
            out.append(r)
    return out


def evaluator_cfgs(args, cfg):
    """(evaluator config dicts to run, [(name, [searched paths])] of missing .bin files)."""
    configured = [dict(e) for e in (cfg.get('test_evaluators') or cfg.get('val_evaluators') or [])]
    overrides = {}
    if args.batch_size is not None:
        overrides['batch_size'] = args.batch_size
    if args.no_flip:
        overrides['flip'] = False
    selected, missing = [], []
    if args.target:
        by_name = {e.get('name'): e for e in configured if e.get('type') == 'VerificationEvaluator'}
        roots = data_roots(args, cfg)
        for name in [t.strip() for t in args.target.split(',') if t.strip()]:
            searched = [osp.join(root, f'{name}.bin') for root in roots]
            base = by_name.get(name, {})
            if base.get('bin_path'):
                searched.append(osp.abspath(base['bin_path']))
            found = next((p for p in searched if osp.isfile(p)), None)
            if found is None:
                missing.append((name, searched))
                continue
            ev = dict(base, type='VerificationEvaluator', bin_path=found, name=name)
            ev.pop('dataset', None)
            selected.append(ev)
    else:
        if not configured:
            raise SystemExit(f'{args.config} has no test_evaluators or val_evaluators; pass --target NAMES')
        for ev in configured:
            if ev.get('bin_path') and not osp.isfile(ev['bin_path']):
                missing.append((ev.get('name') or osp.basename(ev['bin_path']), [osp.abspath(ev['bin_path'])]))
                continue
            selected.append(ev)
    for ev in selected:
        ev.update(overrides)
        if args.nfolds is not None and ev.get('type') == 'VerificationEvaluator':
            ev['nfolds'] = args.nfolds
    return selected, missing


def build_backbone(cfg, checkpoint):
    """The config's backbone with the checkpoint's backbone weights (strict: names and shapes).

    A FaceRecognizer checkpoint (``backbone.*`` names) must hold exactly the backbone's parameters
    under that prefix; a bare-backbone checkpoint must hold every backbone parameter.
    Raises CheckpointMismatchError naming missing / unexpected / mis-shaped parameters.
    """
    from facekit.registry import BACKBONES
    from facekit.utils.checkpoint import CheckpointMismatchError, load_checkpoint, load_state_into
    if 'model' not in cfg or 'backbone' not in cfg.model:
        raise SystemExit(f"config {cfg.filename} has no model.backbone")
    backbone = BACKBONES.build(cfg.model.backbone.to_dict())
    params = load_checkpoint(checkpoint)
    if any(k.startswith('backbone.') for k in params):
        try:
            load_state_into(backbone, params, prefix='backbone.', strict=True)
        except CheckpointMismatchError as e:
            raise CheckpointMismatchError(f'{checkpoint} vs config {cfg.filename} (model.backbone type '
                                          f"{cfg.model.backbone.get('type')!r}): {e}") from e
    else:
        missing, unexpected = load_state_into(backbone, params, strict=False)
        if missing:
            raise CheckpointMismatchError(
                f'{checkpoint} lacks {len(missing)} parameters of the config\'s backbone '
                f"{cfg.model.backbone.get('type')!r}: {', '.join(missing[:20])}")
        if unexpected:
            print(f'note: {len(unexpected)} checkpoint entries are not backbone parameters and were ignored: '
                  f"{', '.join(unexpected[:10])}", file=sys.stderr)
    backbone.set_train(False)
    return backbone


def init_distributed():
    """DistInfo for msrun workers, None for one process.

    msrun runs this script in a scheduler process (MS_ROLE=MS_SCHED) and in N workers
    (MS_ROLE=MS_WORKER); all must call ``init()``: the scheduler's serves the cluster.
    """
    role = os.environ.get('MS_ROLE')
    if role not in ('MS_SCHED', 'MS_WORKER') or int(os.environ.get('MS_WORKER_NUM', '1')) <= 1:
        return None
    from mindspore.communication import init
    from facekit.evaluation import DistInfo
    init()
    if role == 'MS_SCHED':  # the scheduler has no rank and embeds nothing
        sys.exit(0)
    return DistInfo.from_mindspore()


def main(argv=None):
    args = parse_args(argv)
    from facekit.config import Config
    from facekit.evaluation import reporting
    from facekit.registry import EVALUATORS
    from facekit.utils.runtime import setup_runtime

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    runtime = cfg.get('runtime') or {}
    setup_runtime(args.device_target or runtime.get('device_target', 'auto'),
                  mode=args.mode or runtime.get('mode', 'graph'))
    dist = init_distributed()
    rank = dist.rank if dist else 0
    log = print if rank == 0 else (lambda *a, **k: None)

    selected, missing = evaluator_cfgs(args, cfg)
    for name, searched in missing:
        log(f'MISSING {name}: no .bin file; searched:\n' + '\n'.join(f'    {p}' for p in searched), flush=True)
    if not selected:
        log('nothing to evaluate', file=sys.stderr)
        return 1

    from facekit.utils.checkpoint import CheckpointMismatchError
    try:
        backbone = build_backbone(cfg, args.checkpoint)
    except (CheckpointMismatchError, FileNotFoundError) as e:
        print(f'ERROR: {e}', file=sys.stderr)
        return 1
    work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        'work_dirs', osp.splitext(osp.basename(args.config))[0])
    results = {}
    for ev_cfg in selected:
        evaluator = EVALUATORS.build(ev_cfg)
        log(f'evaluating {evaluator.name} ...', flush=True)
        results[evaluator.name] = evaluator.evaluate(backbone, dist=dist)
        r = results[evaluator.name]
        if 'accuracy' in r:  # the reference script's three lines
            log(f"[{evaluator.name}]XNorm: {r['xnorm']:f}\n"
                f"[{evaluator.name}]Accuracy: {reporting.format_mean_std(r['accuracy_noflip'], r['accuracy_noflip_std'])}\n"
                f"[{evaluator.name}]Accuracy-Flip: {reporting.format_mean_std(r['accuracy'], r['accuracy_std'])}"
                f"  ({r['embed_seconds']:.1f} s embedding)", flush=True)
    if rank != 0:
        return 0

    verification = {k: v for k, v in results.items() if 'accuracy' in v}
    tar_far = {k: v for k, v in results.items() if 'tar_at_far' in v}
    if verification:
        print(reporting.verification_table(verification))
    if tar_far:
        print(reporting.tar_far_table(tar_far))
    out = args.out or osp.join(work_dir, f'eval_{osp.splitext(osp.basename(args.checkpoint))[0]}.json')
    payload = dict(config=osp.abspath(args.config), checkpoint=osp.abspath(args.checkpoint),
                   missing={name: searched for name, searched in missing}, results=results)
    reporting.write_json(payload, out)
    print(f'results written to {out}')
    if args.roc:
        for name, r in results.items():
            png = reporting.plot_roc({name: (r['fpr'], r['tpr'])}, osp.join(work_dir, f'roc_{name}.png'), title=name)
            print(f'ROC written to {png}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
