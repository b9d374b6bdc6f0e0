"""Export a trained backbone for deployment: MindIR (MindSpore Lite / serving) or ONNX (onnxruntime, TensorRT ...).

    python tools/export.py CONFIG CHECKPOINT --format onnx [--batch dynamic|N] [--fp16] [--out PATH]

The file has one input ``data``: (N, 3, 112, 112) float32 RGB normalized (x / 255 - 0.5) / 0.5,
and one output ``embedding``: (N, E) float32 raw embeddings (L2-normalize before cosine similarity).
After writing, the file is run against the in-framework model on random input and the export is
rejected if they differ (max abs diff / max(1, max |ref|) above 1e-4 for fp32, 1e-2 for fp16).
"""
import os.path as osp
import sys

from facekit.utils import cli


def parse_args(argv=None):
    parser = cli.ArgumentParser(description='Export a facekit backbone to MindIR or ONNX.')
    parser.add_argument('config', help='experiment config file (its model.backbone is exported)')
    parser.add_argument('checkpoint', help='.ckpt file (FaceRecognizer or bare backbone)')
    parser.add_argument('--format', choices=['mindir', 'onnx'], default='onnx')
    parser.add_argument('--batch', default='dynamic', help="'dynamic' (default) or a fixed batch size N")
    parser.add_argument('--fp16', action='store_true', help='compute in float16 (input/output stay float32)')
    parser.add_argument('--out', default=None,
                        help='output path without extension (default: next to the checkpoint, same name)')
    parser.add_argument('--no-check', action='store_true', help='skip the parity run after export')
    parser.add_argument('--device-target', default='auto')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from facekit.apis.export import check_parity, export_backbone
    from facekit.apis.model_loading import backbone_cfg_from_config, build_backbone, input_size_of
    from facekit.utils.runtime import setup_runtime

    batch = args.batch if args.batch == 'dynamic' else int(args.batch)
    setup_runtime(args.device_target, mode='graph')
    cfg = backbone_cfg_from_config(args.config)
    backbone = build_backbone(cfg, args.checkpoint)
    out = args.out or osp.splitext(args.checkpoint)[0]
    path = export_backbone(backbone, out, fmt=args.format, batch=batch, fp16=args.fp16,
                           input_size=input_size_of(cfg))
    print(f'wrote {path} ({osp.getsize(path) / 2**20:.1f} MiB): input data (N,3,112,112) float32 '
          f'normalized (x/255-0.5)/0.5, output embedding (N,E) float32, batch {batch}'
          f"{', fp16 compute' if args.fp16 else ''}")
    if args.no_check:
        return 0
    sizes = (1, 2) if batch == 'dynamic' else (batch,)
    tol = 1e-2 if args.fp16 else 1e-4
    worst = 0.0
    for n, (diff, scale) in check_parity(backbone, path, sizes, fp16=args.fp16).items():
        rel = diff / max(1.0, scale)
        worst = max(worst, rel)
        print(f'parity batch {n}: max abs diff {diff:.3g} (max |embedding| {scale:.3g})')
    if worst > tol:
        return cli.fail(f'exported {path} differs from the framework model by {worst:.3g} > {tol}')
    return 0


if __name__ == '__main__':
    sys.exit(cli.run_tool(main))
