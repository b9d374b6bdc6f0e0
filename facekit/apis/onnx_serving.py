"""Serve a backbone on CPU with onnxruntime: an exported ``.onnx`` file, or a checkpoint exported on first use.

``OnnxBackbone(path)`` is a callable ``(N, 3, H, W) float32 -> (N, E) float32`` raw embeddings, the
same contract as a MindSpore backbone cell, so ``FaceEmbedder`` and the evaluators
(``evaluate(model_or_embed_fn, ...)``) take either. ``onnx_file_for(config, checkpoint)`` gives the
file to serve: an ONNX checkpoint as it is, any other weights exported once by
``facekit.apis.export`` into a cache folder, keyed by the backbone config and the checkpoint
file's path, size and modification time, and checked against the MindSpore model before use.

Needs the optional ``onnxruntime`` package (``onnx`` too when a checkpoint must be exported).
"""
import hashlib
import json
import os
import os.path as osp
import tempfile

import numpy as np

BACKENDS = ('mindspore', 'onnxruntime')
# Same acceptance rule as tools/export.py: max abs diff / max(1, max |embedding|).
PARITY_TOLERANCE = 1e-4


def check_backend(backend):
    """``backend`` lower-cased, or ValueError naming the known ones."""
    name = str(backend).lower()
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return name


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise ImportError("backend 'onnxruntime' needs the onnxruntime package: pip install onnxruntime") from None
    return onnxruntime


class OnnxBackbone:
    """An ONNX face model run by onnxruntime on CPU: ``(N, 3, H, W) float32 -> (N, E) float32`` raw embeddings.

    Args:
        path: ONNX file with one input (N, 3, H, W) and one output (N, E): facekit's exports
            (``data`` -> ``embedding``) or another such file (input normalized ``(x - 127.5) / 127.5``).
        num_threads: onnxruntime intra-op threads; 0 lets onnxruntime choose (one per physical core).
    """

    def __init__(self, path, num_threads=0):
        ort = _import_onnxruntime()
        self.path = os.fspath(path)
        if not osp.isfile(self.path):
            raise FileNotFoundError(f'ONNX model not found: {self.path}')
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = int(num_threads)
        self.session = ort.InferenceSession(self.path, opts, providers=['CPUExecutionProvider'])
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f'{self.path}: a face model has one input and one output, this one has inputs '
                             f'{[i.name for i in inputs]} and outputs {[o.name for o in outputs]}')
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        shape = inputs[0].shape
        if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
            raise ValueError(f'{self.path}: input {self.input_name!r} has shape {shape}, expected (N, 3, H, W)')
        # A static export (tools/export.py --batch N) only runs at its own batch size.
        self.fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        self.input_size = shape[2] if isinstance(shape[2], int) else None
        out_shape = outputs[0].shape
        self.embedding_size = out_shape[-1] if out_shape and isinstance(out_shape[-1], int) else None

    def __repr__(self):
        return f'OnnxBackbone({self.path!r})'

    def __call__(self, batch):
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f'expected a (N, 3, H, W) float32 batch, got shape {batch.shape}')
        if self.fixed_batch is None:
            return self._run(batch)
        n, size = batch.shape[0], self.fixed_batch
        outs = []
        for start in range(0, n, size):
            chunk = batch[start:start + size]
            real = chunk.shape[0]
            if real < size:
                chunk = np.concatenate([chunk, np.zeros((size - real,) + chunk.shape[1:], np.float32)])
            outs.append(self._run(chunk)[:real])
        return np.concatenate(outs)

    def _run(self, batch):
        out = self.session.run([self.output_name], {self.input_name: batch})[0]
        return np.asarray(out, dtype=np.float32).reshape(batch.shape[0], -1)


def default_cache_dir():
    """Where exported serving models are kept: ``$FACEKIT_CACHE/onnx``, else ``<temp dir>/facekit-onnx``."""
    root = os.environ.get('FACEKIT_CACHE')
    return osp.join(root, 'onnx') if root else osp.join(tempfile.gettempdir(), 'facekit-onnx')


def _cache_key(backbone_cfg, checkpoint):
    st = os.stat(checkpoint)
    ident = dict(backbone=backbone_cfg, checkpoint=osp.abspath(checkpoint), size=st.st_size, mtime_ns=st.st_mtime_ns)
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=repr).encode()).hexdigest()[:16]


def export_checked(backbone, path, input_size):
    """Export ``backbone`` to ONNX at ``path`` (dynamic batch) and refuse it unless it matches MindSpore.

    Returns the written path; raises RuntimeError when the onnxruntime output differs by more than
    ``PARITY_TOLERANCE`` relative to the embedding scale (the rule of tools/export.py).
    """
    from .export import check_parity, export_backbone
    path = export_backbone(backbone, path, fmt='onnx', batch='dynamic', input_size=input_size)
    for n, (diff, scale) in check_parity(backbone, path, (1, 2), input_size=input_size).items():
        if diff / max(1.0, scale) > PARITY_TOLERANCE:
            os.remove(path)
            raise RuntimeError(f'the ONNX export of {type(backbone).__name__} differs from MindSpore at batch {n}: '
                               f'max abs diff {diff:.3g} (max |embedding| {scale:.3g}); not serving it')
    return path


def onnx_file_for(backbone_cfg, checkpoint, cache_dir=None, log=None):
    """The ONNX file serving ``checkpoint``: itself if it is ONNX, else an export cached in ``cache_dir``.

    Args:
        backbone_cfg: the backbone dict (``model_loading.backbone_cfg_from_config``).
        checkpoint: weights file of any format ``build_backbone`` takes (not None: random weights
            have no file to key a cache on; see ``FaceEmbedder``).
        cache_dir: folder for exported files (default ``default_cache_dir()``).
        log: callable for one line when a file is exported (default: print nothing).
    Returns:
        path of the ``.onnx`` file.
    """
    from .model_loading import build_backbone, input_size_of
    from .weight_import import detect_format
    checkpoint = os.fspath(checkpoint)
    if detect_format(checkpoint) == 'onnx':
        return checkpoint
    cache_dir = cache_dir or default_cache_dir()
    stem = f"{backbone_cfg['type']}-{osp.splitext(osp.basename(checkpoint))[0]}-{_cache_key(backbone_cfg, checkpoint)}"
    path = osp.join(cache_dir, stem + '.onnx')
    if osp.isfile(path):
        return path
    os.makedirs(cache_dir, exist_ok=True)
    # Export under a private name, then rename: a reader never sees a half-written file.
    tmp = export_checked(build_backbone(backbone_cfg, checkpoint), osp.join(cache_dir, f'.{stem}.{os.getpid()}'),
                         input_size_of(backbone_cfg))
    os.replace(tmp, path)
    if log is not None:
        log(f'exported {checkpoint} to {path} for onnxruntime')
    return path


def build_embed_model(config, checkpoint, backend='mindspore', num_threads=0, cache_dir=None, log=None):
    """What the evaluators embed with: a MindSpore backbone cell, or an ``OnnxBackbone`` for onnxruntime.

    Args:
        config: see ``model_loading.backbone_cfg_from_config``.
        checkpoint: weights file of any format (an ONNX file is converted into the MindSpore
            backbone for 'mindspore' and served as it is for 'onnxruntime').
        backend: 'mindspore' or 'onnxruntime'.
        num_threads, cache_dir, log: onnxruntime only (see ``OnnxBackbone``, ``onnx_file_for``).
    """
    from .model_loading import backbone_cfg_from_config, build_backbone
    if check_backend(backend) == 'mindspore':
        return build_backbone(config, checkpoint)
    if checkpoint is None:
        raise ValueError("backend 'onnxruntime' needs a weights file (an .onnx, or a checkpoint to export)")
    cfg = backbone_cfg_from_config(config)
    return OnnxBackbone(onnx_file_for(cfg, checkpoint, cache_dir, log), num_threads=num_threads)
