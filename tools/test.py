"""Evaluate a checkpoint: 10-fold verification on .bin targets (and any evaluator in the config).

    python tools/test.py CONFIG CHECKPOINT [--target lfw,cfp_fp,agedb_30,calfw,cplfw]
        [--data-root DIR] [--batch-size N] [--device-target auto] [--out results.json]
        [--work-dir DIR] [--nfolds 10] [--no-flip] [--roc] [--backend mindspore|onnxruntime]
        [--report DIR | --no-report] [--cfg-options k=v ...]

Without --target the config's ``test_evaluators`` (else ``val_evaluators``) are run. With
--target, ``<data root>/<name>.bin`` is evaluated for each name; the data roots searched are
--data-root, the config's ``data_root``, and the folders of the config's evaluator .bin files.
Missing .bin files are listed first with every path searched; the others are still evaluated.
``--target ijbb`` / ``ijbc`` evaluates the IJB release under ``<data root>/IJBB`` / ``IJBC`` (meta/ and
loose_crop/ as insightface distributes them; see docs/evaluation.md).

CHECKPOINT may be any weights format facekit loads; an ``.onnx`` is converted into the MindSpore
backbone by default. ``--backend onnxruntime`` embeds with onnxruntime on CPU instead: an ``.onnx``
is served as it is, another checkpoint is exported once (cached) and checked against MindSpore.

Results: each evaluator's table on stdout, all numbers as JSON (--out, default
``<work dir>/eval_<checkpoint name>.json``), ROC PNGs in the work dir with --roc, and a report folder
(--report, default ``<work dir>/report_<checkpoint name>``): the tables as text, Markdown and JSON,
the ROC of all targets, each target's genuine/impostor score histogram with its threshold, and the
embedding-norm (XNorm) distribution.
Under msrun (tools/dist_test.sh) each rank embeds a share of the batches; rank 0 reports.
"""
import sys

from facekit.config import add_cfg_options_argument, load_config
from facekit.utils import cli

DEFAULT_TARGETS = 'lfw,cfp_fp,agedb_30,calfw,cplfw'


def parse_args(argv=None):
    parser = cli.ArgumentParser(description='Evaluate a facekit checkpoint (10-fold verification, TAR@FAR).')
    parser.add_argument('config', help='experiment config file')
    parser.add_argument('checkpoint', help='weights file: .ckpt (FaceRecognizer or bare backbone), .pth, .onnx')
    parser.add_argument('--target', default=None,
                        help=f'comma-separated .bin names, e.g. {DEFAULT_TARGETS}, and/or ijbb, ijbc (IJB releases); '
                             'default: the config\'s evaluators')
    parser.add_argument('--data-root', default=None, help='folder holding <target>.bin files and/or IJBB/, IJBC/')
    parser.add_argument('--batch-size', type=int, default=None, help='images per forward pass (default 64)')
    parser.add_argument('--device-target', default=None, help="CPU | GPU | Ascend | auto (default: config's runtime)")
    parser.add_argument('--mode', default=None, choices=['graph', 'pynative'], help="default: config's runtime")
    parser.add_argument('--nfolds', type=int, default=None, help='folds of the verification protocol (10)')
    parser.add_argument('--no-flip', action='store_true', help='embed the original images only')
    parser.add_argument('--work-dir', default=None, help='default: the config\'s work_dir or work_dirs/<config name>')
    parser.add_argument('--out', default=None, help='JSON results path (default: <work dir>/eval_<checkpoint>.json)')
    parser.add_argument('--backend', default=None, choices=['mindspore', 'onnxruntime'],
                        help='embed with MindSpore (default) or onnxruntime on CPU (an .onnx served as it is, '
                             'another checkpoint exported once to a cached .onnx)')
    parser.add_argument('--roc', action='store_true', help='write an ROC curve PNG per target to the work dir')
    report = parser.add_mutually_exclusive_group()
    report.add_argument('--report', default=None, metavar='DIR',
                        help='report folder: tables (txt, md, json), ROC, score histograms, XNorm '
                             '(default <work dir>/report_<checkpoint name>)')
    report.add_argument('--no-report', action='store_true', help='write no report folder')
    add_cfg_options_argument(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    targets = [t.strip() for t in args.target.split(',') if t.strip()] if args.target else None
    test_cfg = dict(targets=targets, data_root=args.data_root, batch_size=args.batch_size,
                    flip=False if args.no_flip else None, nfolds=args.nfolds, out=args.out, roc=args.roc,
                    backend=args.backend, report=False if args.no_report else args.report)
    overrides = {'work_dir': args.work_dir, 'load_from': args.checkpoint, 'runtime.mode': args.mode,
                 'runtime.device_target': args.device_target}
    from facekit.engine import Runner
    cfg = load_config(args.config, args.cfg_options)
    cfg.merge_from_dict({k: v for k, v in overrides.items() if v is not None})
    cfg.merge_from_dict({f'test_cfg.{k}': v for k, v in test_cfg.items() if v is not None})
    runner = Runner.from_cfg(cfg)
    results = runner.test()
    runner.close()
    if not results:
        return cli.fail('nothing was evaluated: no evaluation target was found (the MISSING lines above list '
                        'the paths searched)')
    return 0


if __name__ == '__main__':
    sys.exit(cli.run_tool(main))
