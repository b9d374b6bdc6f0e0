"""Face sets stored as ``root/<identity>/<image>`` files."""
import os
import os.path as osp
import warnings

import numpy as np

from ..registry import DATASETS
from .base import BaseFaceDataset
from .preprocess import decode_image

__all__ = ['ImageFolderDataset', 'IMAGE_EXTENSIONS']

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')


@DATASETS.register_module()
class ImageFolderDataset(BaseFaceDataset):
    """One folder per identity; class ids are the sorted folder names' positions.

    Args:
        root: folder whose sub-folders are identities.
        pipeline: list of TRANSFORMS configs applied to ``(HWC uint8 RGB, label)``.
        on_error: what an unreadable image does: ``'raise'`` (ValueError naming the path)
            or ``'warn'`` (warn once naming the path and return the next readable sample,
            so an epoch never dies on one bad file).
        extensions: file suffixes (lower case) taken as images.
    Attributes:
        classes: sorted identity folder names; ``classes[label]`` is the name.
        samples: list of (path, label), sorted by class then file name.
        class_ranges: (num_classes, 2) int64 ``[start, end)`` sample indices per class.
    """

    def __init__(self, root, pipeline=None, on_error='raise', extensions=IMAGE_EXTENSIONS):
        if on_error not in ('raise', 'warn'):
            raise ValueError(f"ImageFolderDataset: on_error must be 'raise' or 'warn', got {on_error!r}")
        self.root = os.fspath(root)
        if not osp.isdir(self.root):
            raise FileNotFoundError(f'ImageFolderDataset: {self.root} is not a directory')
        self.on_error = on_error
        exts = tuple(e.lower() for e in extensions)
        self.classes = sorted(d for d in os.listdir(self.root) if osp.isdir(osp.join(self.root, d)))
        self.samples = []
        ranges = []
        for label, name in enumerate(self.classes):
            folder = osp.join(self.root, name)
            files = sorted(f for f in os.listdir(folder)
                           if f.lower().endswith(exts) and osp.isfile(osp.join(folder, f)))
            start = len(self.samples)
            self.samples.extend((osp.join(folder, f), label) for f in files)
            ranges.append((start, len(self.samples)))
        if not self.samples:
            raise ValueError(f'ImageFolderDataset: no images with suffix {exts} under {self.root}/<identity>/')
        self.class_ranges = np.asarray(ranges, dtype=np.int64).reshape(-1, 2)
        self.num_classes = len(self.classes)
        self._bad = set()
        super().__init__(pipeline)

    def __len__(self):
        return len(self.samples)

    def indices_by_class(self):
        """{label: int64 sample indices} for every identity folder with an image."""
        return {c: np.arange(a, b, dtype=np.int64) for c, (a, b) in enumerate(self.class_ranges) if b > a}

    def _read(self, path, idx):
        """HWC uint8 RGB of ``path``; ValueError naming the file and sample when unreadable."""
        try:
            # imdecode of the bytes (not imread) so non-ASCII paths work everywhere.
            data = np.fromfile(path, dtype=np.uint8)
        except OSError as e:
            raise ValueError(f'image {idx} of ImageFolderDataset: cannot read {path} ({e})') from e
        return decode_image(data, source=path, index=idx)

    def _load(self, idx):
        """(img, label) of ``idx``, or of the next readable sample under on_error='warn'."""
        idx = self._index(idx)
        n = len(self.samples)
        for step in range(n):
            path, label = self.samples[(idx + step) % n]
            try:
                return self._read(path, (idx + step) % n), label
            except ValueError as e:
                if self.on_error == 'raise':
                    raise ValueError(f'ImageFolderDataset: cannot read image {path} (sample {idx}): {e}; '
                                     f"pass on_error='warn' to skip unreadable files") from e
            if path not in self._bad:
                self._bad.add(path)
                warnings.warn(f'ImageFolderDataset: skipping unreadable image {path}', RuntimeWarning)
        raise ValueError(f'ImageFolderDataset: no readable image under {self.root}')

    def get_label(self, idx):
        return self.samples[self._index(idx)][1]

    def get_image(self, idx):
        """(H, W, 3) uint8 RGB of sample ``idx`` (under on_error='warn', of the next readable one)."""
        return self._load(idx)[0]

    def __getitem__(self, idx):
        # one read gives the image and the label of the sample actually returned: under
        # on_error='warn' an unreadable file is replaced by the next readable one, label included
        img, label = self._load(idx)
        return self.pipeline(img, label)

    def __repr__(self):
        return (f'ImageFolderDataset(root={self.root!r}, num_images={len(self)}, '
                f'num_classes={self.num_classes}, on_error={self.on_error!r})')
