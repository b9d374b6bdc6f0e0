"""Draw a run's training curves: loss, learning rate, gradient norm and evaluation metrics against iteration.

    python tools/plot_curves.py WORK_DIR [--out PNG] [--metrics accuracy,xnorm]

Reads ``WORK_DIR/metrics.jsonl`` (written by every training run) and writes ``WORK_DIR/curves.png``
(or ``--out``). Without ``--metrics`` each evaluation target's primary metric is drawn; ``--metrics``
names summary keys instead (e.g. ``accuracy,auc,xnorm`` for verification targets).
"""
import os.path as osp
import sys

from facekit.utils import cli


def parse_args(argv=None):
    parser = cli.ArgumentParser(description='Draw the training curves of a work dir (metrics.jsonl -> PNG).')
    parser.add_argument('work_dir', help='a training work dir (holds metrics.jsonl)')
    parser.add_argument('--out', default=None, help='PNG path (default <work_dir>/curves.png)')
    parser.add_argument('--metrics', default=None,
                        help="comma-separated evaluation keys to draw (default: each target's primary metric)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from facekit.visualization.curves import plot_curves
    source = osp.join(args.work_dir, 'metrics.jsonl')
    if not osp.isfile(source):
        return cli.fail(f'{source} not found: WORK_DIR must be a training work dir (it holds metrics.jsonl)')
    metrics = [m.strip() for m in args.metrics.split(',') if m.strip()] if args.metrics else None
    out = plot_curves(source, args.out or osp.join(args.work_dir, 'curves.png'), metrics=metrics)
    print(f'curves written to {out}')
    return 0


if __name__ == '__main__':
    sys.exit(cli.run_tool(main))
