"""Convert an InsightFace arcface_torch ONNX model into a facekit checkpoint.

    python tools/convert_weights.py MODEL.onnx CONFIG_OR_BACKBONE OUT.ckpt

CONFIG_OR_BACKBONE is an experiment config (its model.backbone is used) or a registered backbone
name (iresnet18/34/50/100/200, mobilefacenet). Layers are matched by graph structure (Conv /
BatchNormalization / PRelu / Gemm or MatMul+Add, in node order) with shapes checked at each
step; BatchNorms folded into convolutions by PyTorch's exporter are restored as identity BNs.
The checkpoint stores ``backbone.*`` names (load it with FaceEmbedder, tools/infer.py, or as a
training start). Afterwards both models embed the same random faces and the conversion is
rejected if they differ by more than 1e-3 x max(1, max |embedding|).
"""
import os.path as osp
import sys

from facekit.utils import cli


def parse_args(argv=None):
    parser = cli.ArgumentParser(description='Import an arcface_torch ONNX model as a facekit checkpoint.')
    parser.add_argument('onnx', help='ONNX file, e.g. w600k_r50.onnx or the output of arcface_torch torch2onnx.py')
    parser.add_argument('config', help='config file, or a backbone name such as iresnet50')
    parser.add_argument('out', help='checkpoint to write (.ckpt)')
    parser.add_argument('--embedding-size', type=int, default=512, help='with a backbone name: its embedding size')
    parser.add_argument('--check-batch', type=int, default=2, help='random faces for the parity check (0: skip)')
    parser.add_argument('--device-target', default='auto')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import numpy as np
    import mindspore as ms
    import facekit.models  # noqa: F401
    from facekit.apis.model_loading import backbone_cfg_from_config, input_size_of
    from facekit.utils.runtime import setup_runtime
    from facekit.apis.onnx_import import convert_onnx_to_backbone, onnx_reference_output
    from facekit.registry import BACKBONES
    from facekit.utils.checkpoint import save_checkpoint

    setup_runtime(args.device_target, mode='graph')
    if osp.isfile(args.config):
        cfg = backbone_cfg_from_config(args.config)
    elif args.config in BACKBONES:
        cfg = dict(type=args.config, embedding_size=args.embedding_size)
    else:
        return cli.fail(f'{args.config!r} is neither a config file nor a registered backbone '
                        f'({", ".join(BACKBONES.keys())})', 2)
    backbone = BACKBONES.build(cfg)
    backbone.set_train(False)
    size = input_size_of(cfg)
    params, affine = convert_onnx_to_backbone(args.onnx, backbone, input_size=size)
    save_checkpoint({f'backbone.{k}': v for k, v in params.items()}, args.out)
    note = '' if tuple(affine) == (1.0, 0.0) else f' (graph normalizes its input: {affine[0]:.6g} * x + {affine[1]:.6g})'
    print(f"converted {args.onnx} -> {args.out}: {len(params)} tensors for {cfg['type']}{note}")
    if args.check_batch <= 0:
        return 0
    x = np.random.default_rng(0).uniform(-1, 1, (args.check_batch, 3, size, size)).astype(np.float32)
    ref = onnx_reference_output(args.onnx, x, affine)
    ours = backbone(ms.Tensor(x)).asnumpy()
    diff, scale = float(np.abs(ours - ref).max()), float(np.abs(ref).max())
    cos = float(np.min(np.sum(ours * ref, 1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))))
    print(f'parity on {args.check_batch} random faces: max abs diff {diff:.3g} (max |embedding| {scale:.3g}), '
          f'min cosine {cos:.7f}')
    if diff > 1e-3 * max(1.0, scale):
        return cli.fail(f'converted model differs from {args.onnx}')
    return 0


if __name__ == '__main__':
    sys.exit(cli.run_tool(main))
