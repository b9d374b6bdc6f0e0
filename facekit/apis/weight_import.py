"""Weights users already have, loaded into a facekit backbone: one entry point for every format.

``detect_format(path)`` reads the file's first bytes (never its extension):

=================  ==========================================================================
``facekit``        a MindSpore checkpoint written by facekit (``backbone.*`` names or bare
                   backbone names that match the backbone)
``mindface``       a MindSpore checkpoint of the earlier MindSpore face toolkit (mindface)
``pytorch``        ``torch.save(state_dict)``: a zip archive holding ``*/data.pkl`` or the
                   legacy pickle stream (arcface_torch's ``backbone.pth``)
``onnx``           an ONNX ModelProto (insightface model zoo, arcface_torch ``torch2onnx.py``)
=================  ==========================================================================

``import_weights(path, backbone)`` converts any of them into ``{facekit parameter name: ndarray}``
for ``backbone`` and reports what was checked. No format is executed: pickles go through a
restricted unpickler, ONNX is read as data.
"""
import os
import zipfile

__all__ = ['FORMATS', 'UnknownWeightFormatError', 'detect_format', 'import_weights']

FORMATS = ('facekit', 'mindface', 'pytorch', 'onnx')


class UnknownWeightFormatError(ValueError):
    """A file none of the known weight formats describes."""


def _is_mindspore_checkpoint(head):
    # A MindSpore .ckpt is a protobuf ``Checkpoint`` whose first field is a repeated ``value``
    # message (field 1, wire type 2: tag byte 0x0a) holding a ``tag`` string (again 0x0a).
    return len(head) >= 4 and head[0] == 0x0A and 0x0A in head[2:8]


def _is_onnx(head):
    # ONNX ModelProto starts with ir_version (field 1, varint: tag 0x08) in every exporter we know.
    return len(head) >= 2 and head[0] == 0x08


def detect_format(path):
    """One of ``FORMATS`` for the file at ``path`` (by content). Raises UnknownWeightFormatError."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'weights file not found: {path}')
    with open(path, 'rb') as f:
        head = f.read(64)
    if not head:
        raise UnknownWeightFormatError(f'{path} is empty (0 bytes)')
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            if any(name.endswith('/data.pkl') or name == 'data.pkl' for name in z.namelist()):
                return 'pytorch'
        raise UnknownWeightFormatError(f'{path} is a zip archive without data.pkl: not a PyTorch checkpoint; '
                                       f'known formats: {", ".join(FORMATS)}')
    if head[0] == 0x80:          # pickle protocol 2+ (the legacy torch.save stream)
        return 'pytorch'
    if _is_onnx(head):
        return 'onnx'
    if _is_mindspore_checkpoint(head):
        from ..utils.checkpoint import load_checkpoint
        names = list(load_checkpoint(path))
        if any(n.startswith('backbone.') for n in names):
            return 'facekit'     # a FaceRecognizer checkpoint; mindface's train script saves bare names
        from .mindface_import import looks_like_mindface
        return 'mindface' if looks_like_mindface(names) else 'facekit'
    raise UnknownWeightFormatError(
        f'{path}: not a weights file facekit knows (first bytes {head[:8]!r}); known formats: a facekit or '
        f'mindface MindSpore .ckpt, a PyTorch state_dict (.pth, zip or legacy pickle), an ONNX model')


def import_weights(path, backbone, input_size=112):
    """Convert the weights at ``path`` for ``backbone``.

    Returns ``(params, info)``: ``params`` maps every backbone parameter name to an ndarray of its
    shape; ``info`` is a dict with ``format`` and ``checked`` (a sentence saying what was verified
    against the source, e.g. names and shapes, or a forward pass through onnxruntime).
    """
    fmt = detect_format(path)
    if fmt == 'pytorch':
        from .pth_import import convert_pth_to_backbone
        params, info = convert_pth_to_backbone(path, backbone)
    elif fmt == 'mindface':
        from .mindface_import import convert_mindface_to_backbone
        params, info = convert_mindface_to_backbone(path, backbone)
    elif fmt == 'onnx':
        from .onnx_import import convert_onnx_to_backbone
        params, affine = convert_onnx_to_backbone(path, backbone, input_size=input_size)
        info = dict(input_affine=affine)
    else:
        from ..utils.checkpoint import load_checkpoint
        params = {k: v.asnumpy() for k, v in load_checkpoint(path).items()}
        info = {}
    info.setdefault('format', fmt)
    return params, info
