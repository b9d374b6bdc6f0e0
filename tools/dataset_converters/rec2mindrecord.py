"""Copy a RecordIO face set to MindRecord for MindSpore's native (C++) loading pipeline.

    python tools/dataset_converters/rec2mindrecord.py --rec data/ms1mv2 --output data/ms1mv2/train.mindrecord

Image bytes are copied unchanged. Writes ``train.mindrecord``, ``train.mindrecord.db`` and
``train.mindrecord.json`` (num_images, num_classes); the files appear only when complete.
Train from it with ``dataset=dict(type='MindRecordFaceDataset', path=..., pipeline=[...])``.
Why bother: docs/benchmarks.md "Data loading" measures it against the .rec pipeline.
"""
import argparse
import sys
import time

from facekit.utils import cli


def parse_args(argv=None):
    p = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--rec', required=True, help='folder with train.rec / train.idx')
    p.add_argument('--rec-name', default='train', help='file stem of the .rec/.idx pair')
    p.add_argument('--output', required=True, help='output file, *.mindrecord')
    p.add_argument('--no-progress', action='store_true',
                   help='no progress bar (there is none anyway when stderr is not a terminal or CI=true)')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from facekit.datasets.mindrecord import rec_to_mindrecord
    t0 = time.perf_counter()
    n, c = rec_to_mindrecord(args.rec, args.output, rec_name=args.rec_name, progress=not args.no_progress)
    print(f'wrote {n} images of {c} identities to {args.output} in {time.perf_counter() - t0:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(cli.run_tool(main))
