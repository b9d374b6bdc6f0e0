"""From encoded images to raw embeddings: decode, normalize, batch, embed (optionally sharded).

Memory: images are decoded per batch and embeddings kept as float32, so a 12,000-image set
needs ~25 MB of embeddings, not the ~3.6 GB a float64 image tensor of the whole set takes.

Batches have a constant shape (a compiled graph is built once per shape): as in the reference,
the last batch is the final ``batch_size`` images, overlapping the previous batch, and only its
new rows are kept. Sharding over ranks assigns whole batches round-robin, so every image is
embedded inside exactly the same batch as in a single process and the gathered result is
bit-identical to it.
"""
import contextlib
import weakref

import numpy as np

from ..datasets.preprocess import IMAGE_SIZE, to_model_input  # noqa: F401  (re-exported: one home)
from ..datasets.preprocess import decode_image as _decode_image

__all__ = ['IMAGE_SIZE', 'decode_image', 'to_model_input', 'batch_plan', 'as_embed_fn', 'inference_mode',
           'DistInfo', 'embed_images', 'flip_sum', 'NonFiniteEmbeddingError', 'check_finite_embeddings']

NONFINITE_CAUSE = ('the model computes NaN/inf: most likely its checkpoint holds non-finite weights or '
                   'BatchNorm statistics (a diverged run); evaluate an earlier checkpoint')


class NonFiniteEmbeddingError(ValueError):
    """Embeddings hold NaN or inf: similarities and accuracies computed from them would be meaningless."""


def check_finite_embeddings(raw, what, names=None):
    """Raise ``NonFiniteEmbeddingError`` unless every row of ``raw`` (N, E) is finite.

    Args:
        raw: embeddings, one row per image.
        what: the target or model the embeddings belong to, for the message.
        names: optional per-row names (file paths) to cite the first bad rows by; else row indices.
    Returns: ``raw``.
    """
    raw = np.asarray(raw)
    bad = np.flatnonzero(~np.isfinite(raw.reshape(len(raw), -1)).all(axis=1)) if raw.size else []
    if len(bad):
        first = [str(names[i]) if names is not None else str(int(i)) for i in bad[:5]]
        label = 'e.g.' if names is not None else 'e.g. rows'
        raise NonFiniteEmbeddingError(
            f"{what}: {len(bad)} of {len(raw)} embeddings are not finite (NaN/inf), {label} {', '.join(first)}"
            f"{' ...' if len(bad) > 5 else ''}; {NONFINITE_CAUSE}")
    return raw


def decode_image(buf, index=None, source='', image_size=IMAGE_SIZE):
    """Encoded bytes -> (image_size, image_size, 3) uint8 RGB: ``facekit.datasets.preprocess.decode_image``
    with this module's historical argument order ``(buf, index, source)`` kept for callers."""
    return _decode_image(buf, source=source, index=index, image_size=image_size)


def batch_plan(n, batch_size):
    """Constant-shape batches over n items: list of ``(start, stop, keep_from)``.

    Batch k covers ``[start, stop)`` with ``stop - start == min(batch_size, n)``; rows from
    ``keep_from`` on are new. Every index in ``[0, n)`` is new in exactly one batch.
    """
    n, batch_size = int(n), int(batch_size)
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    size = min(batch_size, n)
    plan, new_from = [], 0
    while new_from < n:
        stop = min(new_from + size, n)
        start = stop - size
        plan.append((start, stop, new_from))
        new_from = stop
    return plan


# one wrapper per model, so every evaluator (lfw, cfp_fp, ...) reuses its compiled graph
_EXTRACT_CELLS = weakref.WeakKeyDictionary()


def _extract_cell(model):
    """A Cell whose construct calls ``model.extract``, so graph mode compiles the embedding path."""
    cell = _EXTRACT_CELLS.get(model)
    if cell is None:
        from mindspore import nn

        class ExtractCell(nn.Cell):
            def __init__(self, inner):
                super().__init__(auto_prefix=False)
                self.inner = inner

            def construct(self, x):
                return self.inner.extract(x)

        cell = ExtractCell(model)
        _EXTRACT_CELLS[model] = cell
    return cell


def _is_cell(obj):
    try:
        from mindspore import nn
    except ImportError:  # a pure-NumPy embed_fn needs no MindSpore
        return False
    return isinstance(obj, nn.Cell)


@contextlib.contextmanager
def inference_mode(model_or_fn):
    """Put a Cell in inference mode (BatchNorm running statistics, no dropout) for the block and
    restore its previous mode afterwards, so evaluating during training leaves training on."""
    if not _is_cell(model_or_fn):
        yield
        return
    was_training = model_or_fn.training
    model_or_fn.set_train(False)
    try:
        yield
    finally:
        model_or_fn.set_train(was_training)


def as_embed_fn(model_or_fn):
    """A callable ``(B, 3, 112, 112) float32 ndarray -> (B, E) float32 ndarray`` of raw embeddings.

    Accepts such a callable as is, or a MindSpore ``nn.Cell``: a model with ``extract`` (a
    FaceRecognizer) is wrapped so only its embedding path runs, any other cell (a bare backbone)
    is called directly. Use inside ``inference_mode(model)`` for a cell.
    """
    if _is_cell(model_or_fn):
        from mindspore import Tensor
        cell = _extract_cell(model_or_fn) if hasattr(model_or_fn, 'extract') else model_or_fn

        def embed(batch):
            cell.set_train(False)
            out = cell(Tensor(np.ascontiguousarray(batch, dtype=np.float32)))
            return np.asarray(out.asnumpy(), dtype=np.float32)
        return embed
    if not callable(model_or_fn):
        raise TypeError(f'expected an nn.Cell or a callable (B,3,112,112)->(B,E), got {type(model_or_fn).__name__}')

    def embed_np(batch):
        return np.asarray(model_or_fn(batch), dtype=np.float32)
    return embed_np


class DistInfo:
    """Who this process is among the ranks that share embedding work, and how to combine results.

    Args:
        rank: this process's index in [0, world_size).
        world_size: number of processes.
        all_reduce_sum: callable float32 ndarray -> element-wise sum over ranks (same shape);
            required when ``world_size > 1``.
    """

    def __init__(self, rank=0, world_size=1, all_reduce_sum=None):
        self.rank, self.world_size = int(rank), int(world_size)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f'rank {rank} is outside [0, {world_size})')
        if self.world_size > 1 and all_reduce_sum is None:
            raise ValueError('world_size > 1 needs an all_reduce_sum callable')
        self.all_reduce_sum = all_reduce_sum

    @classmethod
    def from_mindspore(cls):
        """The rank and size of MindSpore's initialized world group; AllReduce over it.

        Call after ``engine.dist.init_dist()`` in every rank (msrun workers); the rank comes from ``utils.dist``.
        """
        import mindspore as ms
        from mindspore import nn, ops
        from ..utils.dist import get_rank, get_world_size

        class _AllReduce(nn.Cell):
            def __init__(self):
                super().__init__()
                self.op = ops.AllReduce()

            def construct(self, x):
                return self.op(x)

        reducer = _AllReduce()

        def all_reduce_sum(x):
            return reducer(ms.Tensor(np.ascontiguousarray(x, dtype=np.float32))).asnumpy()
        return cls(get_rank(), get_world_size(), all_reduce_sum)

    def __repr__(self):
        return f'DistInfo(rank={self.rank}, world_size={self.world_size})'


def embed_images(num_images, get_image, embed_fn, batch_size=64, flip=True, dist=None, source='embeddings'):
    """Raw embeddings of every image, and of its horizontal flip.

    Args:
        num_images: N.
        get_image: ``i -> (112, 112, 3) uint8 RGB``.
        embed_fn: from ``as_embed_fn``.
        batch_size: images per forward pass.
        flip: also embed the mirrored images.
        dist: a ``DistInfo`` to shard batches over ranks; None = this process does all.
        source: the target's name or file, named when an embedding is not finite.
    Returns: ``(raw, raw_flip)``: (N, E) float32 each (``raw_flip`` None without flip), complete
    on every rank after sharding (rows from other ranks arrive through ``all_reduce_sum``).
    Raises: ``NonFiniteEmbeddingError`` when any embedding holds NaN/inf (checked after the
    gather, so every rank raises alike instead of one rank leaving the others in a collective).
    """
    if int(num_images) < 1:
        raise ValueError(f'nothing to embed: num_images={num_images}')
    from ..utils.progress import progress_bar
    dist = dist or DistInfo()
    plan = batch_plan(num_images, batch_size)
    mine = [b for k, b in enumerate(plan) if k % dist.world_size == dist.rank]
    # a bar on rank 0 only (its share of the batches), where utils.progress allows one
    bar = progress_bar(total=sum(stop - keep_from for _, stop, keep_from in mine), desc=f'embedding {source}',
                       unit='img', enabled=dist.rank == 0, leave=False)
    raw = raw_flip = None
    for start, stop, keep_from in mine:
        images = np.stack([get_image(i) for i in range(start, stop)])
        keep = slice(keep_from - start, stop - start)
        out = embed_fn(to_model_input(images))
        if raw is None:
            raw = np.zeros((num_images, out.shape[1]), dtype=np.float32)
            raw_flip = np.zeros_like(raw) if flip else None
        raw[keep_from:stop] = out[keep]
        if flip:
            raw_flip[keep_from:stop] = embed_fn(to_model_input(images, flip=True))[keep]
        bar.update(stop - keep_from)
    bar.close()
    if dist.world_size > 1:
        raw, raw_flip = _gather(raw, raw_flip, flip, dist, num_images)
    check_finite_embeddings(raw, source)
    if raw_flip is not None:
        check_finite_embeddings(raw_flip, f'{source} (mirrored images)')
    return raw, raw_flip


def _gather(raw, raw_flip, flip, dist, num_images):
    """Every rank filled disjoint rows and zeros elsewhere, so the sum over ranks is exact."""
    # a rank without a batch (more ranks than batches) learns E as sum(E) / count over the others
    has_work = raw is not None
    info = np.array([raw.shape[1] if has_work else 0, 1 if has_work else 0], dtype=np.float32)
    info = dist.all_reduce_sum(info)
    dim = int(round(float(info[0]) / float(info[1])))
    if not has_work:
        raw = np.zeros((num_images, dim), dtype=np.float32)
        raw_flip = np.zeros_like(raw) if flip else None
    both = np.concatenate([raw, raw_flip], axis=1) if flip else raw
    both = np.asarray(dist.all_reduce_sum(both), dtype=np.float32)
    if flip:
        return np.ascontiguousarray(both[:, :dim]), np.ascontiguousarray(both[:, dim:])
    return both, None


def flip_sum(raw, raw_flip):
    """The flip-test embedding: raw + raw_flip (or raw alone), not normalized."""
    return raw if raw_flip is None else raw + raw_flip
