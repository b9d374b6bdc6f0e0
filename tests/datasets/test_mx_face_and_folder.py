import os
import warnings

import cv2
import numpy as np
import pytest

from facekit.datasets import ImageFolderDataset, MXFaceDataset
from facekit.datasets.mx_face import read_property, write_mx_face_dataset
from facekit.datasets.recordio import IndexedRecordIOWriter, pack, pack_img, unpack
from facekit.registry import DATASETS


def _png(value, size=8):
    img = np.zeros((size, size, 3), np.uint8)
    img[..., 0] = value          # red channel carries the sample's id
    img[..., 2] = 255 - value
    return cv2.imencode('.png', cv2.cvtColor(img, cv2.COLOR_RGB2BGR))[1].tobytes()


def test_insightface_layout(tmp_path):
    labels = [0, 0, 1, 2, 2, 2]
    n, c = write_mx_face_dataset(tmp_path, [(l, _png(10 * i)) for i, l in enumerate(labels)], image_size=(8, 8))
    assert (n, c) == (6, 3)
    assert sorted(os.listdir(tmp_path)) == ['property', 'train.idx', 'train.rec']
    assert read_property(tmp_path / 'property') == (3, 8, 8)
    ds = DATASETS.build(dict(type='MXFaceDataset', data_root=str(tmp_path)))
    assert ds.layout == 'insightface' and ds.header0 == (7, 10)
    assert len(ds) == 6 and ds.num_classes == 3
    assert ds.class_ranges.tolist() == [[0, 2], [2, 3], [3, 6]]
    for i, l in enumerate(labels):
        img, label = ds[i]
        assert label == l and img.dtype == np.uint8 and img.shape == (8, 8, 3)
        assert img[0, 0].tolist() == [10 * i, 0, 255 - 10 * i]   # RGB order kept
    assert {c: ix.tolist() for c, ix in ds.indices_by_class().items()} == {0: [0, 1], 1: [2], 2: [3, 4, 5]}
    assert ds.labels.tolist() == labels


def test_insightface_header_records_by_hand(tmp_path):
    # The layout as InsightFace writes it, header record first (key 0 = [id_start, id_end]).
    rec, idx = tmp_path / 'train.rec', tmp_path / 'train.idx'
    with IndexedRecordIOWriter(idx, rec) as w:
        w.write_idx(0, pack((0, [4, 6], 0, 0), b''))
        for k, l in ((1, 0), (2, 1), (3, 1)):
            w.write_idx(k, pack((0, float(l), k, 0), _png(k)))
        w.write_idx(4, pack((0, [1, 2], 0, 0), b''))
        w.write_idx(5, pack((0, [2, 4], 0, 0), b''))
    h, _ = unpack(open(rec, 'rb').read()[8:8 + 32])
    assert h.flag == 2 and h.label.tolist() == [4, 6]
    ds = MXFaceDataset(tmp_path)
    assert len(ds) == 3 and ds.num_classes == 2 and ds.class_ranges.tolist() == [[0, 1], [1, 3]]
    assert [ds[i][1] for i in range(3)] == [0, 1, 1]


def test_plain_im2rec(tmp_path):
    rec, idx = tmp_path / 'train.rec', tmp_path / 'train.idx'
    labels = [2, 0, 1, 0]
    with IndexedRecordIOWriter(idx, rec) as w:
        for k, l in enumerate(labels):
            w.write_idx(k, pack_img((0, float(l), k, 0), np.full((6, 6, 3), 40 * k, np.uint8), img_fmt='.png'))
    ds = MXFaceDataset(tmp_path)
    assert ds.layout == 'im2rec' and len(ds) == 4 and ds.num_classes == 3
    assert ds[3][1] == 0 and ds[3][0][0, 0].tolist() == [120, 120, 120]
    assert {c: ix.tolist() for c, ix in ds.indices_by_class().items()} == {0: [1, 3], 1: [2], 2: [0]}


def test_missing_files_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='train.rec'):
        MXFaceDataset(tmp_path)


def test_interrupted_write_leaves_nothing(tmp_path):
    def samples():
        yield 0, _png(1)
        raise RuntimeError('disk full')
    with pytest.raises(RuntimeError):
        write_mx_face_dataset(tmp_path, samples())
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match='grouped'):
        write_mx_face_dataset(tmp_path, [(0, _png(1)), (2, _png(2))])


def _make_folder(root):
    for name, values in (('bob', [1, 2]), ('alice', [3]), ('carol', [4, 5, 6])):
        os.makedirs(root / name)
        for j, v in enumerate(values):
            (root / name / f'{j:02d}.png').write_bytes(_png(v))
    (root / 'alice' / 'notes.txt').write_text('not an image')


def test_image_folder_sorted_ids(tmp_path):
    _make_folder(tmp_path)
    ds = ImageFolderDataset(tmp_path)
    assert ds.classes == ['alice', 'bob', 'carol'] and ds.num_classes == 3 and len(ds) == 6
    assert [ds.get_label(i) for i in range(6)] == [0, 1, 1, 2, 2, 2]
    assert ds[1][0][0, 0, 0] == 1 and ds[5][0][0, 0, 0] == 6
    assert ds.class_ranges.tolist() == [[0, 1], [1, 3], [3, 6]]


def test_image_folder_unreadable(tmp_path):
    _make_folder(tmp_path)
    bad = tmp_path / 'bob' / '01.png'
    bad.write_bytes(b'corrupt')
    with pytest.raises(ValueError, match='01.png'):
        ImageFolderDataset(tmp_path)[2]
    ds = ImageFolderDataset(tmp_path, on_error='warn')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        img, label = ds[2]
        ds[2]
    assert img[0, 0, 0] == 4 and label == 2   # the next readable sample
    msgs = [str(w.message) for w in caught]
    assert len(msgs) == 1 and str(bad) in msgs[0]
