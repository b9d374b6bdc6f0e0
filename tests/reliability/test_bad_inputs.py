"""Each bad input is refused with a message naming the file (or sample) and what is wrong with it."""
import os
import os.path as osp
import pickle
import subprocess
import sys
import warnings

import cv2
import numpy as np
import pytest

from facekit.apis import collect_images
from facekit.datasets import ImageFolderDataset, SyntheticIdentities, build_dataloader
from facekit.datasets.mx_face import write_mx_face_dataset
from facekit.datasets.verification_bin import load_bin
from facekit.utils.checkpoint import load_checkpoint

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONVERTERS = osp.join(ROOT, 'tools', 'dataset_converters')


def _tool(script, args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, osp.join(CONVERTERS, script)] + args, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def _jpeg(img):
    return cv2.imencode('.jpg', cv2.cvtColor(img, cv2.COLOR_RGB2BGR))[1].tobytes()


@pytest.mark.parametrize('cut', [0, 1, 40, -1])
def test_truncated_or_empty_bin_names_the_file(tmp_path, cut):
    full = pickle.dumps(([_jpeg(np.zeros((112, 112, 3), np.uint8))] * 4, [True, False]), protocol=4)
    path = tmp_path / 'lfw.bin'
    path.write_bytes(full[:cut] if cut >= 0 else full[:len(full) + cut])
    size = path.stat().st_size
    what = 'is empty (0 bytes)' if size == 0 else f'({size} bytes) is truncated or not a pickle'
    with pytest.raises(ValueError, match=rf'lfw\.bin {what.replace("(", r"[(]").replace(")", r"[)]")}.*'
                                         r'expected a pickled \(images, issame\) pair'):
        load_bin(str(path))


def _folder(root, shapes):
    """ImageFolderDataset layout, one identity per image, PNGs of the given (H, W) shapes."""
    for i, (h, w) in enumerate(shapes):
        os.makedirs(root / f'id{i:02d}')
        img = np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)
        cv2.imwrite(str(root / f'id{i:02d}' / 'a.png'), img)
    return ImageFolderDataset(str(root), pipeline=[dict(type='Normalize'), dict(type='ToCHW')])


def test_a_differently_sized_square_training_set_is_resized_with_one_warning(tmp_path):
    ds = _folder(tmp_path / 'faces', [(128, 128)] * 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        batches = list(build_dataloader(dict(batch_size=4, dataset=ds, shuffle=False, num_workers=1)))
    assert [b[0].shape for b in batches] == [(4, 3, 112, 112)] * 2
    assert sum('resizing them to 112x112' in str(w.message) for w in caught) == 1


def test_a_non_square_training_image_is_refused_naming_sample_and_file(tmp_path):
    ds = _folder(tmp_path / 'faces', [(112, 112)] * 5 + [(112, 90)] + [(112, 112)] * 2)
    with pytest.raises(Exception, match=r'ImageFolderDataset\[5\] \(.*id05.a\.png\): image is 90x112, not square'):
        list(build_dataloader(dict(batch_size=4, dataset=ds, shuffle=False, num_workers=1)))


def test_rec2jpg_names_the_record_with_a_nan_label(tmp_path):
    ds = SyntheticIdentities(2, 2, image_size=16, seed=0)
    samples = [(ds.get_label(i), _jpeg(ds.get_image(i))) for i in range(len(ds))]
    rec = tmp_path / 'rec'
    write_mx_face_dataset(str(rec), samples, image_size=(16, 16))
    # rewrite image record 3 (sample 2) with a NaN label, keeping every offset
    from facekit.datasets.recordio import IndexedRecordIOReader, IRHeader, encode_record, pack, unpack
    reader = IndexedRecordIOReader(str(rec / 'train.idx'), str(rec / 'train.rec'))
    header, buf = unpack(reader.read_idx(3))
    offset = reader.offset(3)
    reader.close()
    blob = bytearray((rec / 'train.rec').read_bytes())
    new = encode_record(pack(IRHeader(0, float('nan'), header.id, 0), buf))
    blob[offset:offset + len(new)] = new
    (rec / 'train.rec').write_bytes(bytes(blob))
    proc = _tool('rec2jpg.py', ['--rec', str(rec), '--output', str(tmp_path / 'out'), '--no-progress'])
    assert proc.returncode != 0
    assert f'train.rec: record 3 (sample 2, byte offset {offset}) has an unusable label' in proc.stderr
    assert not osp.exists(tmp_path / 'out')


@pytest.mark.parametrize('content', [b'', b'not a checkpoint at all' * 10])
def test_empty_or_garbage_checkpoint_names_file_and_size(tmp_path, content):
    path = tmp_path / 'iter_8.ckpt'
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf'checkpoint .*iter_8\.ckpt .*{len(content)} bytes'):
        load_checkpoint(str(path))


def test_a_1x1_image_is_refused_for_inference(tmp_path):
    path = str(tmp_path / 'dot.png')
    cv2.imwrite(path, np.zeros((1, 1, 3), np.uint8))
    with pytest.raises(ValueError, match=r'dot\.png: image is 1x1 pixels, too small.*at least 16x16'):
        collect_images([path])
    with pytest.raises(ValueError, match=r'array\[1\]: image is 20x8'):
        collect_images([np.zeros((112, 112, 3), np.uint8), np.zeros((8, 20, 3), np.uint8)])


def test_folder2rec_refuses_a_folder_name_with_a_newline(tmp_path):
    root = tmp_path / 'faces'
    img = _jpeg(np.zeros((16, 16, 3), np.uint8))
    for name in ('alice', 'bob\nsmith', 'carol'):
        os.makedirs(root / name)
        (root / name / '0.jpg').write_bytes(img)
    proc = _tool('folder2rec.py', ['--root', str(root), '--output', str(tmp_path / 'rec'), '--image-size', '16',
                                   '--no-progress'])
    assert proc.returncode != 0
    assert "identity folder 'bob\\nsmith' has a line break" in proc.stderr
    assert not osp.exists(tmp_path / 'rec' / 'classes.txt')
