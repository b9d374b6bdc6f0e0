"""Build a verification .bin (balanced same/different pairs) and report its raw-pixel floor.

    # pairs from held-out identities of your own aligned folder (root/<identity>/<image>)
    python tools/dataset_converters/make_bin.py --root data/my_heldout --num-pairs 6000 --output data/my_heldout.bin
    # pairs from bundled synthetic identities never used for training (offset 1,000,000)
    python tools/dataset_converters/make_bin.py --synthetic --num-classes 100 --images-per-class 10 \
        --num-pairs 1000 --output data/synthetic/heldout.bin
    # only measure the raw-pixel floor of an existing .bin
    python tools/dataset_converters/make_bin.py --floor data/ms1mv2/lfw.bin

The raw-pixel floor is the 10-fold accuracy of comparing normalized pixels directly; a
trained model's accuracy on the same pairs means something only well above it.
Synthetic knobs are passed as ``--knob name=value`` (Python literals), e.g. ``--knob rotation=30``.
"""
import argparse
import ast
import sys

from facekit.utils import cli


def parse_args(argv=None):
    p = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument('--root', help='image folder of (held-out) identities')
    src.add_argument('--rec', help='RecordIO folder (train.rec/train.idx) of held-out identities')
    src.add_argument('--synthetic', action='store_true', help='held-out SyntheticIdentities')
    src.add_argument('--floor', metavar='BIN', help='only print the raw-pixel floor of this .bin')
    p.add_argument('--output', help='the .bin to write')
    p.add_argument('--num-pairs', type=int, default=1000)
    p.add_argument('--seed', type=int, default=0, help='pair sampling seed')
    p.add_argument('--format', default='.jpg', choices=['.jpg', '.png'], help='image encoding in the .bin')
    p.add_argument('--num-classes', type=int, default=100, help='synthetic: held-out identities')
    p.add_argument('--images-per-class', type=int, default=10, help='synthetic: images per identity')
    p.add_argument('--identity-offset', type=int, default=1_000_000, help='synthetic: first identity number')
    p.add_argument('--synthetic-seed', type=int, default=0, help='synthetic: seed of the identity universe')
    p.add_argument('--knob', action='append', default=[], metavar='NAME=VALUE', help='synthetic generator knob')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from facekit.datasets import ImageFolderDataset, MXFaceDataset, SyntheticIdentities, make_verification_bin
    from facekit.evaluation.floor import raw_pixel_floor

    if args.floor:
        pairs = args.floor
    else:
        if not args.output:
            return cli.fail('--output is required when building pairs', 2)
        if args.synthetic:
            knobs = {}
            for item in args.knob:
                name, _, value = item.partition('=')
                try:
                    knobs[name] = ast.literal_eval(value)
                except (ValueError, SyntaxError):
                    return cli.fail(f'--knob {item!r}: the value must be a Python literal', 2)
            ds = SyntheticIdentities(args.num_classes, args.images_per_class, seed=args.synthetic_seed,
                                     identity_offset=args.identity_offset, **knobs)
        elif args.rec:
            ds = MXFaceDataset(args.rec)
        else:
            ds = ImageFolderDataset(args.root, on_error='raise')
        pairs = make_verification_bin(ds, args.num_pairs, args.seed, path=args.output, img_format=args.format)
        print(f'wrote {args.output}: {len(pairs[1])} pairs ({int(pairs[1].sum())} same) from {ds!r}')
    floor = raw_pixel_floor(pairs)
    strict = raw_pixel_floor(pairs, standardize=True)
    print(f"raw-pixel floor: {floor['accuracy']:.4f} +- {floor['accuracy_std']:.4f} "
          f"(10-fold, {floor['num_pairs']} pairs, AUC {floor['auc']:.4f}); standardized pixels: "
          f"{strict['accuracy']:.4f} +- {strict['accuracy_std']:.4f}")
    return 0


if __name__ == '__main__':
    sys.exit(cli.run_tool(main))
