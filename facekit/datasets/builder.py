"""Build datasets and the MindSpore training data loader from config dicts.

``build_dataloader(cfg, rank, world_size)`` turns a ``train_dataloader`` config::

    train_dataloader = dict(batch_size=128, num_workers=2, shuffle=True, drop_remainder=True,
                            seed=0, dataset=dict(type='MXFaceDataset', data_root='data/ms1mv2',
                                                 pipeline=[...]))

into a :class:`FaceDataLoader`: an iterable over epochs of
``(img (B, 3, 112, 112) float32, label (B,) int32)`` NumPy batches, backed by a batched
``mindspore.dataset.GeneratorDataset``.

The dataset config's ``pipeline`` belongs to the loader: it is taken out of the config before
the dataset is built and applied through :func:`as_face_dataset`, so a dataset class need not
accept a ``pipeline`` argument at all (docs/customize.md, "A dataset").
"""
import copy
import warnings

import numpy as np

from ..registry import DATASETS, build_from_cfg
from .base import BaseFaceDataset, check_raw_image
from .preprocess import IMAGE_SIZE
from .transforms import Compose, RandomTransform, sample_rng

__all__ = ['build_dataset', 'build_dataloader', 'as_face_dataset', 'FaceDataLoader', 'ShardedShuffleSampler',
           'split_native_tail', 'DEFAULT_TRAIN_PIPELINE']

# What a training set needs when its config names no pipeline: HWC uint8 -> CHW [-1, 1].
DEFAULT_TRAIN_PIPELINE = [dict(type='RandomHorizontalFlip', prob=0.5), dict(type='Normalize'),
                          dict(type='ToCHW')]


def build_dataset(cfg, default_args=None):
    """Build a DATASETS entry from ``dict(type=..., ...)``."""
    return build_from_cfg(cfg, DATASETS, default_args)


class _ProtocolDataset(BaseFaceDataset):
    """A dataset with only the documented minimal protocol, seen as a BaseFaceDataset.

    The wrapped object gives ``len()``, ``num_classes`` and ``ds[i] -> (HWC uint8 RGB, int
    label)``; this class adds the pipeline, ``get_image``/``get_label`` and ``indices_by_class``.
    """

    def __init__(self, dataset, pipeline=None):
        missing = [name for name in ('__len__', '__getitem__', 'num_classes') if not hasattr(dataset, name)]
        if missing:
            raise TypeError(f'{type(dataset).__name__} is not a dataset: it lacks {missing}; subclass '
                            f'facekit.datasets.BaseFaceDataset or give __len__, __getitem__(i) -> '
                            f'(HWC uint8 RGB, int label) and num_classes')
        super().__init__(pipeline)
        self.dataset = dataset
        self.num_classes = int(dataset.num_classes)

    def __len__(self):
        return len(self.dataset)

    def _sample(self, idx):
        img, label = self.dataset[self._index(idx)]
        where = (f'{type(self.dataset).__name__}[{idx}] (a dataset without BaseFaceDataset returns the raw '
                 f'image; the loader applies the pipeline)')
        return check_raw_image(img, where), int(label)

    def get_image(self, idx):
        return self._sample(idx)[0]

    def get_label(self, idx):
        return self._sample(idx)[1]

    def __getitem__(self, idx):
        img, label = self._sample(idx)  # one read for both
        return self.pipeline(img, label)

    def __repr__(self):
        return f'as_face_dataset({self.dataset!r})'


def as_face_dataset(dataset, pipeline=None):
    """The one adapter from "a dataset" to :class:`BaseFaceDataset`.

    Args:
        dataset: a BaseFaceDataset, or any object with ``__len__``, ``__getitem__(i) ->
            (HWC uint8 RGB, int label)`` and ``num_classes`` (docs/customize.md).
        pipeline: TRANSFORMS configs/callables or a Compose to apply; None keeps a
            BaseFaceDataset's own pipeline (identity for a wrapped minimal dataset). Given
            for a BaseFaceDataset, it replaces that dataset's pipeline in place.
    Returns:
        a BaseFaceDataset (``dataset`` itself when it is one).
    """
    if isinstance(dataset, BaseFaceDataset):
        if pipeline is not None:
            dataset.pipeline = pipeline
        return dataset
    return _ProtocolDataset(dataset, pipeline)


class ShardedShuffleSampler:
    """Per-epoch seeded permutation, padded to a multiple of ``world_size`` and strided by rank.

    Epoch ``e`` uses ``np.random.default_rng([seed, e]).permutation(n)`` (identity order if
    ``shuffle`` is False); the first ``pad`` indices repeat at the end so every rank gets
    ``ceil(n / world_size)`` samples, and rank ``r`` takes positions ``r, r + W, ...``.
    The epoch advances each time the loader starts a pass (``__iter__``).
    """

    def __init__(self, num_samples, shuffle=True, seed=0, rank=0, world_size=1):
        if not 0 <= rank < world_size:
            raise ValueError(f'rank must be in [0, world_size={world_size}), got {rank}')
        if num_samples < 1:
            raise ValueError(f'cannot sample from an empty dataset (num_samples={num_samples})')
        self.num_samples, self.shuffle, self.seed = int(num_samples), bool(shuffle), int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.per_rank = -(-self.num_samples // self.world_size)
        self.epoch = 0

    def indices(self, epoch):
        """(per_rank,) int64 sample indices of this rank for ``epoch``."""
        n = self.num_samples
        order = (np.random.default_rng([self.seed, int(epoch)]).permutation(n) if self.shuffle
                 else np.arange(n))
        total = self.per_rank * self.world_size
        order = np.concatenate([order, order[:total - n]]) if total > n else order
        return order[self.rank::self.world_size]

    def set_epoch(self, epoch):
        """Make the next pass use ``epoch``'s order (e.g. when resuming at that epoch)."""
        self.epoch = int(epoch)

    def __iter__(self):
        idx = self.indices(self.epoch)
        self.epoch += 1
        return iter(idx.tolist())

    def __len__(self):
        return self.per_rank


def split_native_tail(dataset):
    """Move the trailing deterministic transforms that have a C++ twin out of the dataset's pipeline.

    ``dataset`` is a BaseFaceDataset. Returns ``(dataset, native_ops)``: a shallow copy of ``dataset`` whose Python pipeline
    stops before the tail (the original is untouched), and the tail's MindSpore ops. Normalize,
    resize and HWC->CHW then run in MindSpore's C++ threads, and Python workers hand over
    uint8 HWC rows (4x smaller than float32) instead of holding the GIL for them. A random
    transform (flip) stays in Python, where its decision is drawn per sample from (seed, epoch,
    index); MindSpore's C++ random ops keep a state that no checkpoint can hold.
    """
    transforms = list(dataset.pipeline.transforms)
    k = len(transforms)
    # a plain callable in the pipeline has no ``native``; DecodeImage's twin cannot run after Python steps
    while (k > 0 and hasattr(transforms[k - 1], 'native') and not isinstance(transforms[k - 1], RandomTransform)
           and type(transforms[k - 1]).__name__ != 'DecodeImage'):
        k -= 1
    if k == len(transforms):
        return dataset, []
    head = copy.copy(dataset)
    head.pipeline = Compose(transforms[:k])
    return head, [t.native() for t in transforms[k:]]


class ImageShapeError(ValueError):
    """A training image the loader cannot batch with the others (not square, not 3 channels)."""


class _ImageShapeGuard:
    """First step of a training pipeline: every raw image leaves it (size, size, 3).

    A square image of another side is resized (a training set of aligned faces at 128 or 96 px),
    with one warning; a non-square or non-3-channel image is refused: it is not an aligned face,
    and batching it would fail later with MindSpore's "Cannot batch tensors with different
    shapes", naming no sample. With ``size=None`` (the pipeline has its own Resize) only the
    channels are checked. ``_Source`` adds the sample index and file to the error.
    """

    def __init__(self, size):
        self.size = size
        self._warned = False

    def __call__(self, img):
        if not isinstance(img, np.ndarray):
            return img  # still encoded: a DecodeImage later in the pipeline decides
        if img.ndim != 3 or img.shape[2] != 3:
            raise ImageShapeError(f'image of shape {img.shape} is not (H, W, 3) RGB')
        h, w = img.shape[:2]
        if self.size is None or (h, w) == (self.size, self.size):
            return img
        if h != w:
            raise ImageShapeError(f'image is {w}x{h}, not square: training images must be aligned square face '
                                  f'crops ({self.size}x{self.size}); align it or add a Resize to the pipeline')
        if not self._warned:
            self._warned = True
            warnings.warn(f'training images are {w}x{h}: resizing them to {self.size}x{self.size} (warned once)',
                          RuntimeWarning)
        import cv2
        interp = cv2.INTER_AREA if h > self.size else cv2.INTER_LINEAR
        return cv2.resize(img, (self.size, self.size), interpolation=interp)

    def __repr__(self):
        return f'ImageShapeGuard(size={self.size})'


def _guard_image_shapes(dataset, image_size):
    """Put an ``_ImageShapeGuard`` at the head of ``dataset``'s pipeline (after a DecodeImage), once."""
    transforms = list(dataset.pipeline.transforms)
    if any(isinstance(t, _ImageShapeGuard) for t in transforms):
        return
    names = [type(t).__name__ for t in transforms]
    at = max((i + 1 for i, n in enumerate(names) if n == 'DecodeImage'), default=0)
    size = None if 'Resize' in names else int(image_size)
    dataset.pipeline = Compose(transforms[:at] + [_ImageShapeGuard(size)] + transforms[at:])


def _describe_sample(dataset, idx):
    """``'ImageFolderDataset[7] (/data/a/0001.jpg)'``: the index, and the file when the dataset has one."""
    where = f'{type(dataset).__name__}[{idx}]'
    samples = getattr(dataset, 'samples', None)
    try:
        return f'{where} ({samples[int(idx)][0]})' if samples is not None else where
    except (IndexError, KeyError, TypeError):
        return where


class _EpochKeyedSampler:
    """Yields ``epoch * num_samples + index`` for each index of ``sampler``'s next pass, so the
    source knows which epoch a sample belongs to even when MindSpore prefetches across epochs or
    reads it in another process."""

    def __init__(self, sampler):
        self.sampler = sampler

    def __iter__(self):
        epoch, n = self.sampler.epoch, self.sampler.num_samples
        return iter([epoch * n + i for i in self.sampler])

    def __len__(self):
        return len(self.sampler)


class _Source:
    """Random-access source for GeneratorDataset: (image, int32 label) per sample.

    Keys are ``epoch * len(dataset) + index`` (``_EpochKeyedSampler``); the random transforms
    of that sample draw from ``np.random.default_rng([seed, epoch, index])``.
    ``final``: the image must already be CHW float32 (no native ops follow); otherwise it
    must be HWC uint8 for the native tail.
    """

    def __init__(self, dataset, final=True, seed=0):
        self.dataset = dataset
        self.final = final
        self.seed = int(seed)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, idx = divmod(int(key), len(self.dataset))
        try:
            with sample_rng([self.seed, epoch, idx]):
                img, label = self.dataset[idx]
        except ImageShapeError as e:
            raise ImageShapeError(f'training sample {_describe_sample(self.dataset, idx)}: {e}') from None
        if not self.final:
            check_raw_image(img, f'{type(self.dataset).__name__}[{idx}] before the native transforms')
            return img, np.int32(label)
        if not (isinstance(img, np.ndarray) and img.dtype == np.float32 and img.ndim == 3 and img.shape[0] == 3):
            raise TypeError(
                f'{type(self.dataset).__name__}[{idx}] gave {type(img).__name__} '
                f'{getattr(img, "dtype", "")} {getattr(img, "shape", "")}; the loader needs CHW float32 '
                f"(end the dataset pipeline with dict(type='Normalize'), dict(type='ToCHW'))")
        return img, np.int32(label)


class FaceDataLoader:
    """Epoch iterator over a batched MindSpore pipeline.

    ``iter(loader)`` runs one epoch and yields ``(img, label)`` NumPy batches. One MindSpore
    iterator (and its worker processes) lives across epochs; it is rebuilt only when an
    epoch was left unfinished or ``set_epoch`` asks for an epoch other than the next one
    (e.g. resuming), so the order of epoch ``e`` is always the sampler's order for ``e``.

    Attributes:
        ms_dataset: the batched ``mindspore.dataset`` pipeline (for ``Model.train`` users).
        dataset: the facekit dataset behind it.
        sampler: the :class:`ShardedShuffleSampler` (None for a native source such as
            MindRecordFaceDataset, whose order comes from MindSpore's seeded shuffle; there
            a resumed epoch does not repeat the original epoch's order).
        batch_size: per-rank batch size.
    """

    def __init__(self, ms_dataset, dataset, sampler, batch_size):
        self.ms_dataset = ms_dataset
        self.dataset = dataset
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self._iter = None
        self._next_epoch = 0
        self._requested = None
        self._len = ms_dataset.get_dataset_size()

    def __len__(self):
        """Batches per epoch."""
        return self._len

    def get_dataset_size(self):
        return self._len

    def set_epoch(self, epoch):
        """Make the next ``iter(loader)`` produce epoch ``epoch``."""
        self._requested = int(epoch)

    def _restart(self, epoch):
        if self._iter is not None:
            self._iter.stop()
        if self.sampler is not None:  # native sources shuffle inside MindSpore
            self.sampler.set_epoch(epoch)
        self._iter = self.ms_dataset.create_tuple_iterator(num_epochs=-1, output_numpy=True)

    def __iter__(self):
        epoch = self._next_epoch if self._requested is None else self._requested
        self._requested = None
        if self._iter is None or epoch != self._next_epoch:
            self._restart(epoch)
        self._next_epoch = None  # unknown until this epoch is consumed to its end
        for batch in self._iter:
            yield batch[0], batch[1]
        self._next_epoch = epoch + 1

    def create_tuple_iterator(self, **kwargs):
        """MindSpore's own iterator over ``ms_dataset`` (epochs follow the sampler's count)."""
        return self.ms_dataset.create_tuple_iterator(**kwargs)

    def close(self):
        if self._iter is not None:
            self._iter.stop()
            self._iter = None


def build_dataloader(cfg, rank=0, world_size=1, seed=None, image_size=None):
    """Batched MindSpore pipeline for training.

    Args:
        cfg: dict with ``dataset`` (a DATASETS config, or a built dataset), ``batch_size``,
            ``num_workers`` (parallel workers, default 1), ``shuffle`` (default True),
            ``drop_remainder`` (default True: PartialFC needs a constant batch), ``seed``
            (shuffle seed, default 0), ``python_multiprocessing`` (worker processes instead
            of threads; default True when num_workers > 1). A dataset whose ``build_native``
            returns a source (MindRecordFaceDataset) supplies its own MindSpore source and shuffle instead of
            the Python sampler and GeneratorDataset. ``native_transforms`` (default True):
            run the pipeline's trailing normalize/resize/CHW steps as MindSpore C++ ops
            (``split_native_tail``; random transforms stay in Python). The dataset config's
            ``pipeline`` (default ``DEFAULT_TRAIN_PIPELINE``) is removed before the dataset is
            built and applied by ``as_face_dataset``; a built BaseFaceDataset keeps its own
            pipeline, a built minimal-protocol dataset gets ``DEFAULT_TRAIN_PIPELINE``. Every
            raw image first passes an image-shape check: a square image of another size is
            resized to the configured side (one warning; unless the pipeline has its own Resize), a
            non-square or non-RGB one raises ``ImageShapeError`` naming the sample and file.
        rank, world_size: this process's shard.
        seed: shuffle and augmentation seed used when ``cfg`` has no ``seed`` (the runner
            passes ``runtime.seed``); both absent means 0. Epoch ``e`` visits the sampler's
            order for ``e`` and sample ``i``'s random transforms draw from
            ``np.random.default_rng([seed, e, i])``: a resumed run sees the same batches.
        image_size: side the image-shape check resizes square images to (the model's input);
            None: the dataset's ``image_size`` attribute if it has one, else 112.
    Returns:
        :class:`FaceDataLoader`; ``len()`` is the number of batches per epoch, each batch
        ``img`` (B, 3, H, W) float32 and ``label`` (B,) int32 NumPy arrays.
    """
    import mindspore.dataset as msds

    cfg = dict(cfg)
    known = {'dataset', 'batch_size', 'num_workers', 'shuffle', 'drop_remainder', 'seed',
             'python_multiprocessing', 'native_transforms'}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise KeyError(f'build_dataloader: unknown key(s) {unknown}; known: {sorted(known)}')
    if 'dataset' not in cfg or 'batch_size' not in cfg:
        raise KeyError(f"build_dataloader: cfg needs 'dataset' and 'batch_size', got keys {sorted(cfg)}")
    dataset = cfg['dataset']
    if isinstance(dataset, dict):
        dataset = dict(dataset)
        pipeline = dataset.pop('pipeline', DEFAULT_TRAIN_PIPELINE)
        dataset = as_face_dataset(build_dataset(dataset), pipeline)
    else:
        dataset = as_face_dataset(dataset, None if isinstance(dataset, BaseFaceDataset) else DEFAULT_TRAIN_PIPELINE)
    batch_size = int(cfg['batch_size'])
    workers = max(1, int(cfg.get('num_workers', 1)))
    multiproc = bool(cfg.get('python_multiprocessing', workers > 1))
    drop = bool(cfg.get('drop_remainder', True))
    shuffle_seed = cfg.get('seed', 0 if seed is None else seed)
    native = dataset.build_native(shuffle=cfg.get('shuffle', True), seed=shuffle_seed, rank=rank,
                                  world_size=world_size, num_workers=workers)
    if native is not None:
        native = native.batch(batch_size, drop_remainder=drop)
        if native.get_dataset_size() == 0:
            raise ValueError(f'build_dataloader: rank {rank} has fewer samples than one batch of {batch_size}')
        return FaceDataLoader(native, dataset, None, batch_size)
    if image_size is None:
        image_size = getattr(dataset, 'image_size', None) or IMAGE_SIZE
    _guard_image_shapes(dataset, image_size)
    sampler = ShardedShuffleSampler(len(dataset), shuffle=cfg.get('shuffle', True),
                                    seed=shuffle_seed, rank=rank, world_size=world_size)
    if drop and len(sampler) < batch_size:
        raise ValueError(f'build_dataloader: rank {rank} has {len(sampler)} samples, fewer than one '
                         f'batch of {batch_size} with drop_remainder=True')
    kwargs = dict(column_names=['img', 'label'], sampler=_EpochKeyedSampler(sampler), num_parallel_workers=workers,
                  python_multiprocessing=multiproc and workers > 1)
    source_ds, native_ops = split_native_tail(dataset) if cfg.get('native_transforms', True) else (dataset, [])
    loader = msds.GeneratorDataset(_Source(source_ds, final=not native_ops, seed=shuffle_seed), **kwargs)
    # GeneratorDataset's validators iterate the sampler while checking it; restart the
    # epoch count so the first real pass is epoch 0 (MindSpore then calls __iter__ once
    # per pass).
    sampler.set_epoch(0)
    if native_ops:
        loader = loader.map(operations=native_ops, input_columns=['img'], num_parallel_workers=workers)
    loader = loader.batch(batch_size, drop_remainder=drop)
    return FaceDataLoader(loader, dataset, sampler, batch_size)
