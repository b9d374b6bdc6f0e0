import importlib.util
import os
import os.path as osp

import cv2
import numpy as np
import pytest

from facekit.datasets import MXFaceDataset, SyntheticIdentities, build_dataloader

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _tool(name):
    path = osp.join(ROOT, 'tools', 'dataset_converters', name + '.py')
    spec = importlib.util.spec_from_file_location(f'facekit_tool_{name}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _jpeg(img):
    return cv2.imencode('.jpg', cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


@pytest.fixture
def face_folder(tmp_path):
    """11 identity folders (so '10' sorts before '2' as text), 16x16 JPEGs, one corrupt file,
    one identity with only a corrupt file."""
    ds = SyntheticIdentities(11, 2, image_size=16, seed=4)
    root = tmp_path / 'faces'
    originals = {}
    for i in range(len(ds)):
        name = f'person_{ds.get_label(i):02d}'
        os.makedirs(root / name, exist_ok=True)
        data = _jpeg(ds.get_image(i))
        (root / name / f'{i % 2}.jpg').write_bytes(data)
        originals.setdefault(name, []).append(data)
    (root / 'person_03' / 'z_broken.jpg').write_bytes(b'\xff\xd8\xff broken')
    os.makedirs(root / 'person_99')
    (root / 'person_99' / 'only.jpg').write_bytes(b'nope')
    return root, originals


def test_folder2rec_then_rec2jpg_round_trip(tmp_path, face_folder):
    root, originals = face_folder
    rec_dir = tmp_path / 'rec'
    with pytest.warns(RuntimeWarning) as caught:
        summary = _tool('folder2rec').convert(str(root), str(rec_dir), image_size=16, progress=False)
    msgs = sorted(str(w.message) for w in caught)
    assert len(msgs) == 2 and 'z_broken.jpg' in msgs[0] and 'only.jpg' in msgs[1]
    assert summary['images'] == 22 and summary['classes'] == 11 and summary['empty_identities'] == 1
    assert len(summary['skipped']) == 2 and summary['kept_bytes'] == 22
    names = (rec_dir / 'classes.txt').read_text().split()
    assert names == [f'person_{c:02d}' for c in range(11)]
    assert sorted(os.listdir(rec_dir)) == ['classes.txt', 'property', 'train.idx', 'train.rec']
    ds = MXFaceDataset(rec_dir)
    assert ds.num_classes == 11 and len(ds) == 22 and ds.property == (11, 16, 16)
    for i in range(22):
        buf, label = ds.get_encoded(i)
        assert buf == originals[names[label]][i % 2]   # stored byte for byte

    out = tmp_path / 'jpg'
    s = _tool('rec2jpg').convert(str(rec_dir), str(out), progress=False)
    assert s['images'] == 22 and s['kept_bytes'] == 22 and not osp.exists(str(out) + '.partial')
    folders = sorted(os.listdir(out))
    assert folders[:2] == ['00000', '00001'] and len(folders) == 11
    assert (out / '00010' / '0001.jpg').read_bytes() == originals['person_10'][1]
    with pytest.raises(FileExistsError):
        _tool('rec2jpg').convert(str(rec_dir), str(out), progress=False)
    # and back again: same labels, same bytes
    again = tmp_path / 'rec2'
    _tool('folder2rec').convert(str(out), str(again), image_size=16, progress=False)
    ds2 = MXFaceDataset(again)
    assert [ds2.get_encoded(i) for i in range(22)] == [ds.get_encoded(i) for i in range(22)]


def test_rec2jpg_reencode_png_records(tmp_path):
    from facekit.datasets.mx_face import write_mx_face_dataset
    img = np.zeros((8, 8, 3), np.uint8)
    img[..., 1] = 180
    png = cv2.imencode('.png', img)[1].tobytes()
    write_mx_face_dataset(tmp_path / 'rec', [(0, png), (1, png)], image_size=(8, 8))
    s = _tool('rec2jpg').convert(str(tmp_path / 'rec'), str(tmp_path / 'out'), progress=False)
    assert s['reencoded'] == 2
    data = (tmp_path / 'out' / '00001' / '0000.jpg').read_bytes()
    assert data.startswith(b'\xff\xd8\xff')
    dec = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert abs(int(dec[4, 4, 1]) - 180) <= 3 and dec[4, 4, 0] <= 3


def test_rec2mindrecord_native_loader_matches_python_loader(tmp_path):
    from facekit.datasets.mx_face import write_mx_face_dataset
    ds = SyntheticIdentities(6, 4, image_size=32, seed=1)
    write_mx_face_dataset(tmp_path / 'rec', ((ds.get_label(i), _jpeg(ds.get_image(i))) for i in range(len(ds))),
                          image_size=(32, 32))
    _tool('rec2mindrecord').main(['--rec', str(tmp_path / 'rec'), '--output', str(tmp_path / 'mr' / 'train.mindrecord'),
                                  '--no-progress'])
    assert sorted(os.listdir(tmp_path / 'mr')) == ['train.mindrecord', 'train.mindrecord.db', 'train.mindrecord.json']
    pipeline = [dict(type='Normalize'), dict(type='ToCHW')]
    mr = build_dataloader(dict(batch_size=8, num_workers=1, seed=0, dataset=dict(
        type='MindRecordFaceDataset', path=str(tmp_path / 'mr' / 'train.mindrecord'), pipeline=pipeline)))
    assert len(mr) == 3 and mr.dataset.num_classes == 6
    rec = MXFaceDataset(tmp_path / 'rec', pipeline=pipeline)
    # each MindRecord image equals the Python pipeline's output for the record with that label
    # and content (JPEG decoded by the same libjpeg: allow 1 grey level)
    expect = {}
    for i in range(len(rec)):
        img, label = rec[i]
        expect.setdefault(label, []).append(img)
    seen = 0
    for img, label in mr:
        assert img.shape == (8, 3, 32, 32) and img.dtype == np.float32 and label.dtype == np.int32
        for im, lab in zip(img, label):
            err = min(np.abs(im - e).max() for e in expect[int(lab)])
            assert err <= 2 / 127.5 + 1e-6
            seen += 1
    assert seen == 24
    mr.close()


def test_native_tail_equals_python_pipeline():
    pipeline = [dict(type='Resize', size=24), dict(type='Normalize', mean=0.4, std=0.3), dict(type='ToCHW')]
    cfg = dict(batch_size=4, num_workers=1, shuffle=False,
               dataset=dict(type='SyntheticIdentities', num_classes=2, images_per_class=2, image_size=16,
                            pipeline=pipeline))
    native = list(build_dataloader(dict(cfg, native_transforms=True)))
    python = list(build_dataloader(dict(cfg, native_transforms=False)))
    assert native[0][0].shape == python[0][0].shape == (4, 3, 24, 24)
    np.testing.assert_allclose(native[0][0], python[0][0], atol=2 / 255 / 0.3)
    assert native[0][1].tolist() == python[0][1].tolist() == [0, 0, 1, 1]


def test_make_bin_synthetic_and_floor(tmp_path, capsys):
    out = tmp_path / 'held.bin'
    tool = _tool('make_bin')
    assert tool.main(['--synthetic', '--num-classes', '6', '--images-per-class', '3', '--num-pairs', '20',
                      '--format', '.png', '--knob', 'rotation=0', '--knob', 'num_distractors=(0, 1)',
                      '--output', str(out)]) == 0
    from facekit.datasets import load_bin
    images, issame = load_bin(out)
    assert len(images) == 40 and issame.sum() == 10
    assert tool.main(['--floor', str(out)]) == 0
    text = capsys.readouterr().out
    assert "knobs={'rotation': 0, 'num_distractors': (0, 1)}" in text and 'raw-pixel floor' in text
    assert tool.main(['--synthetic', '--knob', 'rotation=abc', '--output', str(out)]) == 2
