"""BaseFaceDataset: the one dataset contract (mmpretrain's ``BaseDataset`` is the shape).

A face dataset is a random-access list of ``(image, identity label)`` samples. A subclass
says how to read one raw sample (``get_image``, ``get_label``) and how many there are
(``__len__``, ``num_classes``); the base class owns the pipeline, ``__getitem__`` and the
per-class index. Everything that consumes datasets (the training loader, verification-pair
builders, converters) talks to this class only.

A class that does not subclass it but has ``__len__``, ``__getitem__(i) -> (HWC uint8 RGB,
int label)`` and ``num_classes`` works too: ``facekit.datasets.builder.as_face_dataset``
wraps it into one.
"""
import numpy as np

__all__ = ['BaseFaceDataset', 'check_raw_image', 'group_by_label']


def check_raw_image(img, where):
    """Raise TypeError unless ``img`` is an (H, W, 3) uint8 array; ``where`` names the sample."""
    if not (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3):
        raise TypeError(f'{where} gave {type(img).__name__} {getattr(img, "dtype", "")} '
                        f'{getattr(img, "shape", "")}; a raw face image is (H, W, 3) uint8 RGB')
    return img


class BaseFaceDataset:
    """Images and identity labels; ``ds[i] -> pipeline(get_image(i), get_label(i))``.

    Subclasses implement ``__len__``, ``get_image``, ``get_label`` and set ``num_classes``,
    and may override ``indices_by_class`` (when the layout knows it without reading every
    label) and ``build_native`` (a MindSpore C++ source for the training loader).

    Args:
        pipeline: list of TRANSFORMS configs or callables, or a ``Compose``; None = identity.
            ``build_dataloader`` replaces it with the config's ``pipeline`` (or the default
            training pipeline) when it builds the dataset from a config dict.
    Attributes:
        pipeline: a ``Compose`` (empty = identity), applied to ``(image, label)``.
        num_classes: number of identities (labels ``0 .. num_classes - 1``).
    """

    num_classes = None
    _pipeline = None          # class defaults: a subclass __init__ that skips super() still works
    _indices_by_class = None

    def __init__(self, pipeline=None):
        self.pipeline = pipeline

    @property
    def pipeline(self):
        if self._pipeline is None:
            self.pipeline = None
        return self._pipeline

    @pipeline.setter
    def pipeline(self, pipeline):
        from .transforms import Compose  # local: transforms imports the registry only
        self._pipeline = pipeline if isinstance(pipeline, Compose) else Compose(pipeline)

    def __len__(self):
        raise NotImplementedError(f'{type(self).__name__} must implement __len__')

    def get_image(self, idx):
        """(H, W, 3) uint8 RGB of sample ``idx``, before the pipeline."""
        raise NotImplementedError(f'{type(self).__name__} must implement get_image(idx)')

    def get_label(self, idx):
        """int identity label of sample ``idx`` (cheap: no image decoding where the layout allows)."""
        raise NotImplementedError(f'{type(self).__name__} must implement get_label(idx)')

    def _index(self, idx):
        """``idx`` as a non-negative int; IndexError naming the dataset when out of range."""
        idx, n = int(idx), len(self)
        if not -n <= idx < n:
            raise IndexError(f'{type(self).__name__} index {idx} out of range [0, {n})')
        return idx + n if idx < 0 else idx

    def __getitem__(self, idx):
        idx = self._index(idx)
        return self.pipeline(self.get_image(idx), int(self.get_label(idx)))

    def indices_by_class(self):
        """{label: (n_label,) int64 sample indices, ascending}, for every label with a sample.

        Labels in ascending order. The default reads every label once (``get_label``) and
        caches the result; subclasses whose layout stores class ranges override it.
        """
        cached = self._indices_by_class
        if cached is None:
            labels = np.fromiter((int(self.get_label(i)) for i in range(len(self))), dtype=np.int64,
                                 count=len(self))
            cached = group_by_label(labels)
            self._indices_by_class = cached
        return cached

    def build_native(self, shuffle, seed, rank, world_size, num_workers):
        """An unbatched ``mindspore.dataset`` source of (CHW float32 img, int32 label) rows, or None.

        None (the default) means the loader reads samples through ``__getitem__``.
        """
        return None


def group_by_label(labels):
    """(N,) int labels -> {label: ascending int64 indices} for every label present, labels ascending."""
    labels = np.asarray(labels, dtype=np.int64)
    order = np.argsort(labels, kind='stable')
    present, starts = np.unique(labels[order], return_index=True)
    bounds = list(starts[1:]) + [len(order)]
    return {int(c): order[a:b] for c, a, b in zip(present, starts, bounds)}
