"""Convert weights a user already has into a facekit checkpoint.

    python tools/convert_weights.py SRC CONFIG_OR_BACKBONE OUT.ckpt

SRC is any weights file facekit knows, recognized by its content (not its extension): an
arcface_torch ``backbone.pth`` (zip or legacy pickle, read without torch and without running
code), a checkpoint of the earlier MindSpore face toolkit (mindface), an ONNX model (insightface
model zoo, arcface_torch ``torch2onnx.py``) or a facekit checkpoint (its backbone is kept).
CONFIG_OR_BACKBONE is an experiment config (its model.backbone is used) or a registered backbone
name (iresnet50, mobilefacenet, vit_t, ...). OUT stores ``backbone.*`` names (load it with
FaceEmbedder, tools/test.py, tools/infer.py, or as a training start).

Afterwards the tool checks what it can: an ONNX source is run with onnxruntime and both models
embed the same random faces (rejected beyond 1e-3 x max(1, max |embedding|)); for a .pth or a
mindface .ckpt it prints what the importer verified (names and shapes mapped one to one) and what
it could not (a forward pass of the source: torch and mindface are not facekit dependencies).
"""
import os.path as osp
import sys

from facekit.utils import cli

# What a conversion without a runnable source leaves unverified, per format.
_NOT_CHECKED = {
    'pytorch': 'a forward pass of the source model (torch is not a facekit dependency); '
               'tests/apis/test_pth_import.py pins the mapping against arcface_torch\'s own backbones',
    'mindface': 'a forward pass of the source model (mindface\'s code is not part of facekit); '
                'tests/apis/test_mindface_import.py pins the mapping against mindface\'s architectures',
}


def parse_args(argv=None):
    parser = cli.ArgumentParser(description='Convert a .pth / mindface .ckpt / ONNX model into a facekit checkpoint.')
    parser.add_argument('src', help='weights file: backbone.pth, a mindface .ckpt, w600k_r50.onnx, a facekit .ckpt')
    parser.add_argument('config', help='config file, or a backbone name such as iresnet50')
    parser.add_argument('out', help='checkpoint to write (.ckpt)')
    parser.add_argument('--embedding-size', type=int, default=512, help='with a backbone name: its embedding size')
    parser.add_argument('--check-batch', type=int, default=2, help='random faces for the ONNX parity check (0: skip)')
    parser.add_argument('--device-target', default='auto')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import numpy as np
    import mindspore as ms
    import facekit.models  # noqa: F401
    from facekit.apis.model_loading import backbone_cfg_from_config, input_size_of, load_backbone_weights
    from facekit.apis.weight_import import detect_format
    from facekit.utils.runtime import setup_runtime
    from facekit.registry import BACKBONES
    from facekit.utils.checkpoint import save_checkpoint

    fmt = detect_format(args.src)   # before any model is built: an unknown file fails at once
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
    info = load_backbone_weights(backbone, args.src, input_size=size)
    params = dict(backbone.parameters_and_names())
    save_checkpoint({f'backbone.{k}': v for k, v in params.items()}, args.out)
    affine = tuple(info.get('input_affine', (1.0, 0.0)))
    note = '' if affine == (1.0, 0.0) else f' (graph normalizes its input: {affine[0]:.6g} * x + {affine[1]:.6g})'
    print(f"converted {args.src} ({fmt}) -> {args.out}: {len(params)} tensors for {cfg['type']}{note}")
    print(f"checked: {info['checked']}")
    if fmt != 'onnx':
        if fmt in _NOT_CHECKED:
            print(f'not checked: {_NOT_CHECKED[fmt]}')
        return 0
    if args.check_batch <= 0:
        print('not checked: the ONNX forward pass (--check-batch 0)')
        return 0
    from facekit.apis.onnx_import import onnx_reference_output
    x = np.random.default_rng(0).uniform(-1, 1, (args.check_batch, 3, size, size)).astype(np.float32)
    ref = onnx_reference_output(args.src, x, affine)
    ours = backbone(ms.Tensor(x)).asnumpy()
    diff, scale = float(np.abs(ours - ref).max()), float(np.abs(ref).max())
    cos = float(np.min(np.sum(ours * ref, 1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))))
    print(f'parity on {args.check_batch} random faces (onnxruntime): max abs diff {diff:.3g} '
          f'(max |embedding| {scale:.3g}), min cosine {cos:.7f}')
    if diff > 1e-3 * max(1.0, scale):
        return cli.fail(f'converted model differs from {args.src}')
    return 0


if __name__ == '__main__':
    sys.exit(cli.run_tool(main))
