"""Face sets stored as ``root/<identity>/<image>`` files."""
import os
import os.path as osp
import warnings

import cv2
import numpy as np

from ..registry import DATASETS

__all__ = ['ImageFolderDataset', 'IMAGE_EXTENSIONS']

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')


@DATASETS.register_module()
class ImageFolderDataset:
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
        from .transforms import Compose  # local: avoid a cycle through the package __init__
        self.pipeline = Compose(pipeline) if pipeline else None

    def __len__(self):
        return len(self.samples)

    def indices_by_class(self):
        return [np.arange(a, b, dtype=np.int64) for a, b in self.class_ranges]

    def get_label(self, idx):
        return self.samples[idx][1]

    @staticmethod
    def _read(path):
        # imdecode of the bytes (not imread) so non-ASCII paths work everywhere.
        try:
            data = np.fromfile(path, dtype=np.uint8)
        except OSError:
            return None
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def _load(self, idx):
        """(img, label) of ``idx``, or of the next readable sample under on_error='warn'."""
        n = len(self.samples)
        for step in range(n):
            path, label = self.samples[(idx + step) % n]
            img = self._read(path)
            if img is not None:
                return img, label
            if self.on_error == 'raise':
                raise ValueError(f'ImageFolderDataset: cannot read image {path} (sample {idx}); '
                                 f"pass on_error='warn' to skip unreadable files")
            if path not in self._bad:
                self._bad.add(path)
                warnings.warn(f'ImageFolderDataset: skipping unreadable image {path}', RuntimeWarning)
        raise ValueError(f'ImageFolderDataset: no readable image under {self.root}')

    def get_image(self, idx):
        return self._load(idx)[0]

    def __getitem__(self, idx):
        idx = int(idx)
        if not -len(self) <= idx < len(self):
            raise IndexError(f'ImageFolderDataset index {idx} out of range [0, {len(self)})')
        img, label = self._load(idx % len(self))
        if self.pipeline is not None:
            return self.pipeline(img, label)
        return img, label

    def __repr__(self):
        return (f'ImageFolderDataset(root={self.root!r}, num_images={len(self)}, '
                f'num_classes={self.num_classes}, on_error={self.on_error!r})')
