"""Face training sets stored as MXNet RecordIO (InsightFace ``train.rec``/``train.idx``).

InsightFace layout: record 0's header has flag 2 and labels ``[id_start, id_end]``; image
records are keys ``1 .. id_start-1``; identity records ``id_start .. id_end-1`` are labelled
``[img_start, img_end)`` (the image keys of that identity, in order). A ``property`` file
holds ``"num_classes,112,112"``.

Plain ``im2rec`` files (no header record) are read too: every key of the .idx is an image
and its label is the header label (the first one when there are several).
"""
import os
import os.path as osp
import tempfile

import numpy as np

from ..registry import DATASETS
from .base import BaseFaceDataset, group_by_label
from .recordio import IndexedRecordIOReader, IndexedRecordIOWriter, IRHeader, RecordIOError, pack, unpack, unpack_img

__all__ = ['MXFaceDataset', 'read_property', 'write_mx_face_dataset']


def read_property(path):
    """Parse an InsightFace ``property`` file -> (num_classes, height, width)."""
    with open(path, 'r') as f:
        text = f.read().strip()
    try:
        fields = [int(v) for v in text.split(',')]
        if len(fields) != 3:
            raise ValueError
    except ValueError:
        raise ValueError(f'{path}: expected "num_classes,height,width", got {text!r}') from None
    return tuple(fields)


def _first_label(label):
    if isinstance(label, np.ndarray):
        return int(label[0])
    return int(label)


@DATASETS.register_module()
class MXFaceDataset(BaseFaceDataset):
    """Images and identity labels from a RecordIO face set.

    Args:
        data_root: folder holding ``<name>.rec``, ``<name>.idx`` (and ``property``).
        rec_name: file stem of the record pair; default ``'train'``.
        pipeline: list of TRANSFORMS configs applied to ``(HWC uint8 RGB, label)``.
    Attributes:
        num_classes: number of identities.
        class_ranges: (num_classes, 2) int64 ``[start, end)`` of dataset indices per class
            (InsightFace layout; for plain im2rec files, built from the labels on first use
            and only when each class is contiguous, else None).
    """

    def __init__(self, data_root, rec_name='train', pipeline=None):
        self.data_root = os.fspath(data_root)
        rec = osp.join(self.data_root, rec_name + '.rec')
        idx = osp.join(self.data_root, rec_name + '.idx')
        for p in (rec, idx):
            if not osp.isfile(p):
                raise FileNotFoundError(f'MXFaceDataset: {p} does not exist (expected {rec_name}.rec and '
                                        f'{rec_name}.idx in {self.data_root})')
        self.reader = IndexedRecordIOReader(idx, rec)
        prop = osp.join(self.data_root, 'property')
        self.property = read_property(prop) if osp.isfile(prop) else None
        self._labels = None
        self.class_ranges = None
        self.header0 = None
        if not len(self.reader):
            raise RecordIOError(f'{idx}: the index is empty')
        # The header record may sit anywhere in the file (writers often add it last); the
        # key 0 with a multi-label header is what marks the InsightFace layout.
        header = unpack(self.reader.read_idx(0))[0] if 0 in self.reader else None
        if header is not None and header.flag >= 2:
            self._init_insightface(header)
        else:
            self.layout = 'im2rec'
            self.keys = np.asarray(self.reader.keys, dtype=np.int64)
            self._num_classes = self.property[0] if self.property else None
        super().__init__(pipeline)

    def _init_insightface(self, header):
        self.layout = 'insightface'
        id_start, id_end = int(header.label[0]), int(header.label[1])
        self.header0 = (id_start, id_end)
        self.keys = np.arange(1, id_start, dtype=np.int64)
        ranges = np.zeros((id_end - id_start, 2), dtype=np.int64)
        for c, key in enumerate(range(id_start, id_end)):
            h, _ = unpack(self.reader.read_idx(key))
            if h.flag < 2:
                raise RecordIOError(f'{self.reader.path} (key {key}): identity record without '
                                    f'[img_start, img_end) labels (flag {h.flag})')
            ranges[c] = (int(h.label[0]) - 1, int(h.label[1]) - 1)  # image key k is index k-1
        self.class_ranges = ranges
        self._num_classes = id_end - id_start
        if self.property and self.property[0] != self._num_classes:
            raise ValueError(f'{self.data_root}/property says {self.property[0]} classes but the header '
                             f'record says {self._num_classes} ([{id_start}, {id_end}))')

    def __len__(self):
        return len(self.keys)

    @property
    def num_classes(self):
        if self._num_classes is None:
            self._num_classes = int(self.labels.max()) + 1
        return self._num_classes

    @property
    def labels(self):
        """(N,) int64 label of every sample (reads every header once for im2rec files)."""
        if self._labels is None:
            if self.class_ranges is not None:
                labels = np.empty(len(self), dtype=np.int64)
                for c, (a, b) in enumerate(self.class_ranges):
                    labels[a:b] = c
            else:
                labels = np.asarray([self.get_label(i) for i in range(len(self))], dtype=np.int64)
            self._labels = labels
        return self._labels

    def indices_by_class(self):
        """{label: int64 dataset indices}: from the identity records, or from the labels (im2rec)."""
        if self.class_ranges is not None:
            return {c: np.arange(a, b, dtype=np.int64) for c, (a, b) in enumerate(self.class_ranges) if b > a}
        if self._indices_by_class is None:
            self._indices_by_class = group_by_label(self.labels)
        return self._indices_by_class

    def _record(self, idx):
        key = int(self.keys[self._index(idx)])
        return key, self.reader.read_idx(key)

    def get_label(self, idx):
        """int label of sample ``idx``: from the class ranges (InsightFace, no I/O) or its header."""
        if self.class_ranges is not None:
            idx = self._index(idx)
            c = int(np.searchsorted(self.class_ranges[:, 1], idx, side='right'))
            if c < len(self.class_ranges) and self.class_ranges[c, 0] <= idx:
                return c
        key, payload = self._record(idx)
        return _first_label(unpack(payload)[0].label)

    def get_encoded(self, idx):
        """(encoded image bytes exactly as stored, int label) of sample ``idx``; no decoding."""
        key, payload = self._record(idx)
        header, buf = unpack(payload)
        return buf, _first_label(header.label)

    def get_image(self, idx):
        """(H, W, 3) uint8 RGB of sample ``idx``."""
        key, payload = self._record(idx)
        return unpack_img(payload, key=f'{key} of {self.reader.path}')[1]

    def __repr__(self):
        return (f'MXFaceDataset(data_root={self.data_root!r}, layout={self.layout!r}, '
                f'num_images={len(self)}, num_classes={self._num_classes})')


def write_mx_face_dataset(out_dir, samples, image_size=(112, 112), rec_name='train'):
    """Write an InsightFace-layout record set: ``<rec_name>.rec/.idx`` and ``property``.

    Images get keys 1..N in the given order, identity records keys N+1..N+C labelled
    ``[img_start, img_end)``, and record 0 (written last, so the input can stream) the
    labels ``[N+1, N+1+C]``. Files are written under temporary names in ``out_dir`` and
    renamed only when complete, so an interrupted run never leaves a set that looks whole.

    Args:
        out_dir: output folder (created).
        samples: iterable of ``(label, encoded_image_bytes)`` with labels grouped and
            non-decreasing, starting at 0 with no gaps (0, 0, 1, 1, 1, 2, ...).
        image_size: (height, width) written to ``property``.
    Returns:
        (num_images, num_classes).
    """
    os.makedirs(out_dir, exist_ok=True)
    final = {ext: osp.join(out_dir, rec_name + ext) for ext in ('.rec', '.idx')}
    final['property'] = osp.join(out_dir, 'property')
    tmpdir = tempfile.mkdtemp(prefix='.partial-', dir=out_dir)
    tmp = {k: osp.join(tmpdir, osp.basename(v)) for k, v in final.items()}
    try:
        with IndexedRecordIOWriter(tmp['.idx'], tmp['.rec']) as writer:
            starts = []  # first image key of each class
            key = 0
            for label, encoded in samples:
                label = int(label)
                key += 1
                if label == len(starts):
                    starts.append(key)
                elif label != len(starts) - 1:
                    raise ValueError(f'write_mx_face_dataset: labels must be grouped and consecutive from 0; '
                                     f'got label {label} after {len(starts) - 1} (image {key})')
                writer.write_idx(key, pack(IRHeader(0, float(label), key, 0), encoded))
            num_images, num_classes = key, len(starts)
            if num_images == 0:
                raise ValueError('write_mx_face_dataset: no samples')
            bounds = starts + [num_images + 1]
            id_start = num_images + 1
            for c in range(num_classes):
                writer.write_idx(id_start + c, pack(IRHeader(0, [bounds[c], bounds[c + 1]], 0, 0), b''))
            writer.write_idx(0, pack(IRHeader(0, [id_start, id_start + num_classes], 0, 0), b''))
        with open(tmp['property'], 'w') as f:
            f.write(f'{num_classes},{int(image_size[0])},{int(image_size[1])}')
        # property last: its presence marks a complete set
        for k in ('.idx', '.rec', 'property'):
            os.replace(tmp[k], final[k])
    finally:
        for p in tmp.values():
            if osp.exists(p):
                os.remove(p)
        os.rmdir(tmpdir)
    return num_images, num_classes
