"""Train a face-recognition model from a config, then evaluate it on the configured targets.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [auto|PATH]] [--load-from CKPT]
                          [--device-target CPU|GPU|Ascend|auto] [--seed N] [--dry-run] [--cfg-options k=v ...]

Config errors (missing or unknown keys, unknown registry names, bad values) exit with status 2
and one ``config error:`` line before any model or data is built; other user errors (a missing
checkpoint, a run that diverged) are one ``error:`` line and status 1. ``--debug`` shows tracebacks. Under ``tools/dist_train.sh`` (msrun) every worker
runs this script; rank 0 logs, saves and evaluates. Several copies started by mpirun without msrun
stop at once with one ``error:`` line (exit 2). ``--dry-run`` builds the model, optimizer and compiled
step, runs 2 steps on random inputs and reports sizes, memory, precision and batch (``Runner.dry_run``).
"""
import sys

from facekit.config import add_cfg_options_argument, load_config
from facekit.utils import cli


def parse_args(argv=None):
    parser = cli.ArgumentParser(description='Train a facekit model from a config file.')
    parser.add_argument('config', help='config file (.py/.yaml/.json)')
    parser.add_argument('--work-dir', help='where logs and checkpoints go (default work_dirs/<config name>)')
    parser.add_argument('--resume', nargs='?', const='auto', default=None,
                        help="continue a run: 'auto' (default when given alone) = newest checkpoint in the "
                             'work dir, or a checkpoint path')
    parser.add_argument('--load-from', help='initialise the backbone (and the head if its shape matches) from '
                                            'a checkpoint; optimizer and schedule start fresh (fine-tuning)')
    parser.add_argument('--device-target', help='CPU | GPU | Ascend | auto (overrides runtime.device_target)')
    parser.add_argument('--seed', type=int, help='global seed (overrides runtime.seed)')
    parser.add_argument('--dry-run', action='store_true',
                        help='build everything and run 2 steps on random inputs (no data read), report parameter '
                             'counts, head memory per rank, precision, global batch and steps per epoch, then exit')
    add_cfg_options_argument(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    overrides = {'work_dir': args.work_dir, 'resume': args.resume, 'load_from': args.load_from,
                 'runtime.device_target': args.device_target, 'runtime.seed': args.seed}
    from facekit.engine import Runner
    cfg = load_config(args.config, args.cfg_options)
    cfg.merge_from_dict({k: v for k, v in overrides.items() if v is not None})
    runner = Runner.from_cfg(cfg)
    if args.dry_run:
        runner.dry_run()
    else:
        runner.train()
    runner.close()
    return 0


if __name__ == '__main__':
    sys.exit(cli.run_tool(main))
