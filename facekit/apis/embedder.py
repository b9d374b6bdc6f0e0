"""Face embeddings from images: ``FaceEmbedder`` (build once, call many times) and ``infer()``.

    >>> emb = FaceEmbedder('configs/arcface/r50_casia.py', 'work_dirs/r50_casia/epoch_20.ckpt')
    >>> feats = emb.embed(['a.jpg', 'b.jpg'])          # (2, 512) float32, L2-normalized
    >>> emb.compare('a.jpg', 'b.jpg')                   # cosine similarity in [-1, 1]
"""
import os
import os.path as osp

import numpy as np

from ..datasets.preprocess import normalize
from ..evaluation.embedding import check_finite_embeddings
from ..evaluation.verification import l2_normalize  # noqa: F401  (one home; re-exported by facekit.apis)
from .alignment import align_face
from .images import collect_images, normalize_batch
from ..utils.runtime import setup_runtime
from .model_loading import backbone_cfg_from_config, build_backbone, input_size_of


def _chunk_sizes(n, batch_size):
    """Split n images into chunks of ``batch_size``; the tail is padded up to a power of two so a
    compiled graph (one per input shape) is reused: at most log2(batch_size) + 1 shapes ever."""
    out = []
    start = 0
    while start < n:
        real = min(batch_size, n - start)
        padded = batch_size if real == batch_size else min(batch_size, 1 << (real - 1).bit_length())
        out.append((start, real, padded))
        start += real
    return out


def _is_onnx_file(path):
    if path is None or not osp.isfile(os.fspath(path)):
        return False
    from .weight_import import detect_format
    return detect_format(path) == 'onnx'


def _check_onnx_matches_cfg(model, backbone_cfg):
    """Refuse an ONNX file whose input or embedding size contradicts the config it is served under."""
    from .model_loading import input_size_of
    size, dim = input_size_of(backbone_cfg), backbone_cfg.get('embedding_size')
    if model.input_size is not None and model.input_size != size:
        raise ValueError(f'{model.path} takes {model.input_size}x{model.input_size} input, the config '
                         f"{backbone_cfg['type']} {size}x{size}")
    if dim is not None and model.embedding_size is not None and model.embedding_size != int(dim):
        raise ValueError(f'{model.path} gives {model.embedding_size}-d embeddings, the config '
                         f"{backbone_cfg['type']} embedding_size={dim}")


class FaceEmbedder:
    """A backbone loaded once, turning face images into embeddings.

    Args:
        config: config file path, ``Config`` or dict (full experiment or bare backbone dict); may be
            None when serving an ``.onnx`` file with onnxruntime (see ``from_onnx``).
        checkpoint: a weights file: a facekit ``.ckpt`` (FaceRecognizer or bare backbone), an
            arcface_torch ``.pth``, a mindface ``.ckpt`` or an ONNX model (converted in memory, see
            ``build_backbone``), or None for random weights (a warning; for tests and benchmarks only).
        device_target: 'CPU' | 'GPU' | 'Ascend' | 'auto'.
        batch_size: images per forward pass.
        flip: default for ``embed(flip=...)``: add the horizontally flipped image's embedding
            before normalizing (the verification protocol's "flip test").
        mode: MindSpore execution mode, 'graph' (compiled, fast) or 'pynative'.
        backend: 'mindspore', or 'onnxruntime' (CPU): an ONNX checkpoint is served as it is, any
            other is exported once to an ``.onnx`` in ``cache_dir`` and checked against MindSpore
            (see ``facekit.apis.onnx_serving``).
        num_threads: onnxruntime intra-op threads (0: onnxruntime's default, one per physical core).
        cache_dir: where onnxruntime exports are kept (default ``onnx_serving.default_cache_dir()``).
    Note: the MindSpore backend configures MindSpore's global context (device, mode) through
    ``setup_runtime``; so does exporting a checkpoint for onnxruntime.
    """

    def __init__(self, config, checkpoint=None, device_target='auto', batch_size=64, flip=False, mode='graph',
                 backend='mindspore', num_threads=0, cache_dir=None):
        from .onnx_serving import OnnxBackbone, check_backend, export_checked, onnx_file_for
        if int(batch_size) < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        self.backend = check_backend(backend)
        self.checkpoint = checkpoint
        self.batch_size = int(batch_size)
        self.flip = bool(flip)
        self.backbone_cfg = None if config is None else backbone_cfg_from_config(config)
        self._tmp = None
        if self.backend == 'mindspore' or self.backbone_cfg is not None and not _is_onnx_file(checkpoint):
            self.device_target = setup_runtime(device_target, mode=mode)
        else:
            self.device_target = 'CPU'
        if self.backend == 'mindspore':
            if self.backbone_cfg is None:
                raise ValueError("backend 'mindspore' needs a config naming the backbone")
            self.backbone = build_backbone(self.backbone_cfg, checkpoint)
            self.image_size = input_size_of(self.backbone_cfg)
            return
        if checkpoint is None:
            if self.backbone_cfg is None:
                raise ValueError("backend 'onnxruntime' needs an .onnx file or a config (and checkpoint) to export")
            import tempfile
            self._tmp = tempfile.TemporaryDirectory(prefix='facekit-onnx-')  # removed with the embedder
            path = export_checked(build_backbone(self.backbone_cfg, None), osp.join(self._tmp.name, 'random'),
                                  input_size_of(self.backbone_cfg))
        elif self.backbone_cfg is None:
            if not _is_onnx_file(checkpoint):
                raise ValueError(f'{checkpoint} is not an ONNX model: pass the config too to export it for onnxruntime')
            path = os.fspath(checkpoint)
        else:
            path = onnx_file_for(self.backbone_cfg, checkpoint, cache_dir)
        self.backbone = OnnxBackbone(path, num_threads=num_threads)
        self.onnx_path = path
        if self.backbone_cfg is not None:
            _check_onnx_matches_cfg(self.backbone, self.backbone_cfg)
        self.image_size = (input_size_of(self.backbone_cfg) if self.backbone_cfg is not None
                           else self.backbone.input_size or 112)

    @classmethod
    def from_onnx(cls, path, batch_size=64, flip=False, num_threads=0):
        """Serve an exported ``.onnx`` face model with onnxruntime on CPU; no config or MindSpore needed.

        Same ``embed`` / ``compare`` / ``verify`` API; the input size is read from the file (112 if free).
        """
        return cls(None, path, batch_size=batch_size, flip=flip, backend='onnxruntime', num_threads=num_threads)

    def __repr__(self):
        return (f'FaceEmbedder(backbone={self._name()!r}, checkpoint={self.checkpoint!r}, '
                f'backend={self.backend}, device={self.device_target}, batch_size={self.batch_size}, '
                f'flip={self.flip})')

    def _name(self):
        return self.backbone_cfg['type'] if self.backbone_cfg is not None else osp.basename(self.onnx_path)

    def _what(self):
        return f"FaceEmbedder({self._name()}, checkpoint {self.checkpoint or 'none: random weights'})"

    def forward(self, batch):
        """Raw embeddings of a normalized batch.

        Args:
            batch: (N, 3, 112, 112) float32, ``(x / 255 - 0.5) / 0.5`` RGB.
        Returns:
            (N, E) float32, not normalized.
        Raises:
            NonFiniteEmbeddingError: an embedding holds NaN/inf (a broken model), naming the rows.
        """
        return check_finite_embeddings(self._forward(batch), self._what())

    def _forward(self, batch):
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f'expected a (N, 3, H, W) float32 batch, got shape {batch.shape}')
        if self.backend == 'onnxruntime':
            # onnxruntime takes any batch size: no padding to a reused shape.
            return np.concatenate([self.backbone(batch[s:s + self.batch_size])
                                   for s in range(0, batch.shape[0], self.batch_size)])
        import mindspore as ms
        outs = []
        for start, real, padded in _chunk_sizes(batch.shape[0], self.batch_size):
            chunk = batch[start:start + real]
            if padded > real:
                chunk = np.concatenate([chunk, np.zeros((padded - real,) + chunk.shape[1:], np.float32)])
            outs.append(self.backbone(ms.Tensor(chunk)).asnumpy()[:real])
        return np.concatenate(outs).astype(np.float32)

    def prepare(self, images, color='rgb', landmarks=None):
        """Turn inputs into the model batch: see ``embed``. Returns (N, 3, 112, 112) float32."""
        return self._prepare(images, color, landmarks)[1]

    def _prepare(self, images, color='rgb', landmarks=None):
        names, arrays = collect_images(images, color=color)
        if landmarks is not None:
            landmarks = np.asarray(landmarks, dtype=np.float64).reshape(-1, 5, 2)
            if len(landmarks) != len(arrays):
                raise ValueError(f'got {len(landmarks)} landmark sets for {len(arrays)} images')
            arrays = [align_face(img, lm, self.image_size) for img, lm in zip(arrays, landmarks)]
        return names, normalize_batch(arrays, self.image_size)

    def embed(self, images, color='rgb', flip=None, return_norms=False, landmarks=None):
        """Embed faces.

        Args:
            images: an image path, a directory (its images sorted by name), an HWC uint8 array
                (or NHWC batch), or a list mixing these. Files are decoded to RGB; arrays are in
                the order given by ``color``. Inputs should be aligned 112x112 crops; others are
                aligned with ``landmarks`` or else resized with a warning.
            color: 'rgb' or 'bgr' channel order of array inputs (``cv2.imread`` gives 'bgr').
            flip: add the horizontally flipped image's raw embedding before normalizing;
                None uses the embedder's default.
            return_norms: also return the raw embeddings' L2 norms (of the un-flipped image;
                a quality signal, e.g. the protocol's XNorm).
            landmarks: optional (N, 5, 2) pixel landmarks (x, y) per image for ``align_face``.
        Returns:
            (N, E) float32 L2-normalized embeddings, and (N,) float32 norms if ``return_norms``.
        """
        names, batch = self._prepare(images, color=color, landmarks=landmarks)
        return self._embed_batch(batch, flip, return_norms, names)

    def embed_batch(self, batch, flip=None, return_norms=False):
        """``embed`` for an already normalized (N, 3, 112, 112) float32 batch."""
        return self._embed_batch(batch, flip, return_norms, None)

    def _embed_batch(self, batch, flip, return_norms, names):
        flip = self.flip if flip is None else bool(flip)
        raw = check_finite_embeddings(self._forward(batch), self._what(), names)
        norms = np.sqrt(np.sum(raw * raw, axis=1)).astype(np.float32)
        if flip:
            mirrored = self._forward(np.ascontiguousarray(batch[:, :, :, ::-1]))
            raw = raw + check_finite_embeddings(mirrored, f'{self._what()} (mirrored images)', names)
        emb = l2_normalize(raw)
        return (emb, norms) if return_norms else emb

    def compare(self, a, b, color='rgb', flip=None):
        """Cosine similarity of faces ``a`` and ``b``.

        Args:
            a, b: single faces (path or HWC array) -> a float; or equally long lists / NHWC
                batches -> (N,) float32 similarities of the pairs (a[i], b[i]).
        Returns:
            cosine similarity in [-1, 1] (for unit vectors squared distance = 2 - 2 * cos).
        """
        ea = self.embed(a, color=color, flip=flip)
        eb = self.embed(b, color=color, flip=flip)
        if ea.shape != eb.shape:
            raise ValueError(f'compare needs the same number of faces on both sides: {len(ea)} vs {len(eb)}')
        sims = np.sum(ea * eb, axis=1).astype(np.float32)
        single = len(sims) == 1 and not isinstance(a, (list, tuple))
        return float(sims[0]) if single else sims

    def verify(self, a, b, threshold, color='rgb', flip=None):
        """Same person? ``compare(a, b) >= threshold``.

        Args:
            threshold: cosine-similarity threshold, chosen on a verification set (the 10-fold
                protocol's distance threshold t corresponds to similarity 1 - t / 2).
        Returns:
            (is_same, similarity): bool and float for single faces, (N,) arrays for lists.
        """
        sims = self.compare(a, b, color=color, flip=flip)
        return (sims >= threshold), sims


_INFER_CACHE = {}


def _to_nchw_uint8_range(img):
    """infer()'s input to (N, 3, 112, 112) float32 in 0..255, accepting CHW/NCHW (MindFace) or HWC/NHWC."""
    if hasattr(img, 'asnumpy'):
        img = img.asnumpy()
    img = np.asarray(img)
    if img.ndim == 3:
        img = img[None]
    if img.ndim != 4:
        raise ValueError(f'infer: expected a CHW/NCHW or HWC/NHWC image array, got shape {img.shape}')
    if img.shape[1] == 3 and img.shape[-1] != 3:
        return img.astype(np.float32)
    if img.shape[-1] == 3:
        return img.transpose(0, 3, 1, 2).astype(np.float32)
    raise ValueError(f'infer: cannot find the 3-channel axis in shape {img.shape} (want NCHW or NHWC)')


def infer(img, backbone='iresnet50', num_features=512, pretrained=False, device_target='auto'):
    """MindFace-compatible one-call inference: ``infer(img, backbone="vit_t", pretrained="x.ckpt")``.

    Same contract as MindFace's ``mindface.recognition.infer``: ``img`` holds RGB pixel values
    0..255 of aligned 112x112 faces, CHW or NCHW (HWC/NHWC and paths also accepted here), and the
    result is the backbone's raw (un-normalized) ``(N, num_features)`` float32 embedding as a NumPy
    array. The model is built once per (backbone, num_features, pretrained) and cached, so repeated
    calls do not rebuild it; use ``FaceEmbedder`` for normalized embeddings, flip test and batching.

    Args:
        img: NumPy array or ``mindspore.Tensor`` (values 0..255), or an image path / list of paths.
        backbone: registered backbone name (``iresnet50``, ``mobilefacenet``, ``vit_t`` ...).
        num_features: embedding size.
        pretrained: weights file of any format ``FaceEmbedder`` takes, or False for random weights.
        device_target: 'CPU' | 'GPU' | 'Ascend' | 'auto'.
    """
    key = (backbone, int(num_features), pretrained or None, device_target)
    embedder = _INFER_CACHE.get(key)
    if embedder is None:
        embedder = FaceEmbedder(dict(type=backbone, embedding_size=int(num_features)), pretrained or None,
                                device_target=device_target)
        _INFER_CACHE[key] = embedder
    if isinstance(img, (str, list, tuple)):
        batch = embedder.prepare(img)
    else:
        pixels = _to_nchw_uint8_range(img)
        if pixels.shape[-2:] != (112, 112):
            raise ValueError(f'infer: expected 112x112 aligned faces, got {pixels.shape[-2]}x{pixels.shape[-1]}; '
                             'crop with facekit.apis.align_face first')
        batch = normalize(pixels)  # elementwise, so the NCHW layout is fine
    return embedder.forward(batch)
