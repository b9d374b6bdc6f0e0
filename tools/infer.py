"""Embed faces, or compare two, from the command line.

    python tools/infer.py CONFIG CHECKPOINT IMG            # embedding summary per image
    python tools/infer.py CONFIG CHECKPOINT IMG1 IMG2      # cosine similarity of two faces
    python tools/infer.py CONFIG CHECKPOINT FOLDER --save-npy feats.npy
    python tools/infer.py CONFIG MODEL.onnx IMG1 IMG2 --backend onnxruntime   # served by onnxruntime (CPU)

IMG may be an image file or a folder (its images sorted by name). Images should be aligned
112x112 crops (see facekit.apis.align_face); others are resized with a warning.
"""
import sys

from facekit.utils import cli


def parse_args(argv=None):
    parser = cli.ArgumentParser(description='Face embeddings / similarity with a facekit model.')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('img', help='image file or folder')
    parser.add_argument('img2', nargs='?', default=None, help='second image: print the similarity of the two')
    parser.add_argument('--flip', action='store_true', help='flip test: add the mirrored image embedding')
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--threshold', type=float, default=None,
                        help='cosine-similarity threshold: with IMG2, also print same/different')
    parser.add_argument('--save-npy', default=None, help='save the (N, E) normalized embeddings here')
    parser.add_argument('--device-target', default='auto')
    parser.add_argument('--backend', default='mindspore', choices=['mindspore', 'onnxruntime'],
                        help='onnxruntime (CPU): serve an .onnx as it is, or export CHECKPOINT once to a cached .onnx; '
                             'an .onnx with the default backend is converted into the MindSpore backbone')
    parser.add_argument('--threads', type=int, default=0, help='onnxruntime intra-op threads (0: one per core)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import numpy as np
    from facekit.apis import FaceEmbedder, collect_images

    embedder = FaceEmbedder(args.config, args.checkpoint, device_target=args.device_target,
                            batch_size=args.batch_size, flip=args.flip, backend=args.backend,
                            num_threads=args.threads)
    inputs = [args.img] if args.img2 is None else [args.img, args.img2]
    names, images = collect_images(inputs)
    if args.img2 is not None and len(images) != 2:
        return cli.fail(f'comparing needs two single images, got {len(images)} images from {inputs}', 2)
    emb, norms = embedder.embed(images, return_norms=True)
    if args.img2 is None:
        for name, e, n in zip(names, emb, norms):
            head = ' '.join(f'{v:+.4f}' for v in e[:4])
            print(f'{name}: dim {e.shape[0]}, raw norm {n:.3f}, [{head} ...]')
    else:
        sim = float(emb[0] @ emb[1])
        line = f'cosine similarity {sim:.4f} (squared distance {2 - 2 * sim:.4f})'
        if args.threshold is not None:
            line += f": {'same' if sim >= args.threshold else 'different'} person at threshold {args.threshold}"
        print(line)
    if args.save_npy:
        np.save(args.save_npy, emb)
        print(f'saved {emb.shape} embeddings to {args.save_npy}')
    return 0


if __name__ == '__main__':
    sys.exit(cli.run_tool(main))
