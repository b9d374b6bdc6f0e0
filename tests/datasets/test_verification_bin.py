import os
import pickle

import cv2
import numpy as np
import pytest

from facekit.datasets import SyntheticIdentities, UnsafeFileError, load_bin, make_verification_bin, save_bin
from facekit.datasets.verification_bin import safe_loads
from facekit.evaluation.floor import raw_pixel_floor


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


def test_malicious_reduce_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.bin'
    with open(path, 'wb') as f:
        pickle.dump(([b'a', _Evil(marker)], [True]), f, protocol=2)
    with pytest.raises(UnsafeFileError) as info:
        load_bin(path)
    msg = str(info.value)
    assert 'system' in msg and ('posix' in msg or 'nt' in msg) and str(path) in msg
    assert not marker.exists()


@pytest.mark.parametrize('payload', [
    b'cbuiltins\neval\n(V1+1\ntR.',                 # GLOBAL + REDUCE
    b'(cos\nsystem\nVtrue\no.',                       # OBJ opcode
    b'(ios\nsystem\nVtrue\n.',                        # INST opcode
    b'\x80\x02c__builtin__\ngetattr\n.',              # Python 2 module name
])
def test_other_code_paths_are_refused(payload):
    with pytest.raises(UnsafeFileError, match=r'(eval|system|getattr)'):
        safe_loads(payload)


def test_persistent_id_refused():
    with pytest.raises(UnsafeFileError, match='persistent'):
        safe_loads(b'\x80\x02X\x01\x00\x00\x00xQ.')


def test_python2_protocol2_pickle_with_str_images(tmp_path):
    # Hand-assembled like Python 2's cPickle.dump((['abc', 'de'], [True]), f, 2):
    # images are SHORT_BINSTRING ("U") which only encoding='bytes' turns into bytes.
    data = (b'\x80\x02'                      # PROTO 2
            b']q\x00(U\x03abcq\x01U\x02deq\x02e'   # ['abc', 'de']
            b']q\x03\x88a'                   # [True]
            b'\x86q\x04.')                   # TUPLE2, STOP
    path = tmp_path / 'py2.bin'
    path.write_bytes(data)
    images, issame = load_bin(path)
    assert images == [b'abc', b'de']
    assert issame.dtype == bool and issame.tolist() == [True]


def test_python2_numpy_bool_array(tmp_path):
    # Python 2 numpy pickle of np.array([True, False]) at protocol 2, hand-assembled.
    arr = (b'cnumpy.core.multiarray\n_reconstruct\nq\x01'
           b'cnumpy\nndarray\nq\x02K\x00\x85U\x01b\x87R'       # _reconstruct(ndarray, (0,), 'b')
           b'(K\x01K\x02\x85cnumpy\ndtype\nU\x02b1K\x00K\x01\x87R'  # dtype('b1', 0, 1)
           b'(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb'  # dtype state
           b'\x89U\x02\x01\x00tb')                              # (1, (2,), dtype, False, '\x01\x00')
    data = b'\x80\x02(U\x01aU\x01bU\x01cU\x01dl' + arr + b'\x86.'
    path = tmp_path / 'py2np.bin'
    path.write_bytes(data)
    images, issame = load_bin(path)
    assert images == [b'a', b'b', b'c', b'd']
    assert issame.tolist() == [True, False]


@pytest.mark.parametrize('protocol', [2, 3, 4, 5])
def test_python3_numpy_array_pickles_load(tmp_path, protocol):
    path = tmp_path / 'np.bin'
    with open(path, 'wb') as f:
        pickle.dump(([b'\x00\xffjpeg', b'', b'x', b'yz'], np.array([False, True])), f, protocol=protocol)
    images, issame = load_bin(path)
    assert images == [b'\x00\xffjpeg', b'', b'x', b'yz']
    assert issame.tolist() == [False, True]


def test_non_bool_numpy_array_refused(tmp_path):
    path = tmp_path / 'f.bin'
    with open(path, 'wb') as f:
        pickle.dump(([b'a', b'b'], np.array([1.5])), f, protocol=2)
    with pytest.raises(UnsafeFileError, match='dtype'):
        load_bin(path)


@pytest.mark.parametrize('protocol', [2, 4])
def test_save_load_round_trip_and_mismatch(tmp_path, protocol):
    path = tmp_path / 'rt.bin'
    imgs = [bytes([i]) * (i + 1) for i in range(6)]
    save_bin(path, imgs, [True, False, True], protocol=protocol)
    images, issame = load_bin(path)
    assert images == imgs and issame.tolist() == [True, False, True]
    assert not [p for p in os.listdir(tmp_path) if '.tmp' in p]
    with pytest.raises(ValueError, match='5 images for 3 pairs'):
        save_bin(path, imgs[:5], [True, False, True])
    with open(path, 'wb') as f:
        pickle.dump((imgs[:5], [True, False, True]), f)
    with pytest.raises(ValueError, match='5 images for 3 pairs'):
        load_bin(path)


def test_make_verification_bin_balanced_and_labels_right(tmp_path):
    ds = SyntheticIdentities(5, 3, seed=2, identity_offset=500)
    # a lossless format lets us find each image back in the dataset
    images, issame = make_verification_bin(ds, 20, seed=0, path=tmp_path / 'v.bin', img_format='.png')
    assert len(images) == 40 and issame.sum() == 10
    lookup = {ds.get_image(i).tobytes(): ds.get_label(i) for i in range(len(ds))}
    for k, same in enumerate(issame):
        a, b = (cv2.cvtColor(cv2.imdecode(np.frombuffer(images[2 * k + j], np.uint8), cv2.IMREAD_COLOR),
                             cv2.COLOR_BGR2RGB).tobytes() for j in (0, 1))
        assert a != b
        assert (lookup[a] == lookup[b]) == bool(same)
    on_disk = load_bin(tmp_path / 'v.bin')
    assert on_disk[0] == images and on_disk[1].tolist() == issame.tolist()
    again = make_verification_bin(ds, 20, seed=0, img_format='.png')
    assert again[0] == images


def test_raw_pixel_floor_on_identical_pairs():
    # every pair is an image with itself, negatives are different constant images
    a = cv2.imencode('.png', np.full((8, 8, 3), 200, np.uint8))[1].tobytes()
    b = cv2.imencode('.png', np.full((8, 8, 3), 10, np.uint8))[1].tobytes()
    images = [a, a, a, b] * 10
    issame = np.array([True, False] * 10)
    assert raw_pixel_floor((images, issame))['accuracy'] == 1.0


def test_raw_pixel_floor_standardize_undoes_colour_casts():
    # "Different" pairs: a texture and a noisy variant of it (close in raw pixels).
    # "Same" pairs: a texture and itself under a strong per-channel gain and offset (far in
    # raw pixels). Raw pixels get this backwards; per-image standardization is exact.
    rng = np.random.default_rng(0)

    def enc(x):
        return cv2.imencode('.png', np.clip(np.round(x), 0, 255).astype(np.uint8))[1].tobytes()
    images, issame = [], []
    for k in range(20):
        tex = rng.integers(80, 170, (8, 8, 3)).astype(float)
        if k % 2 == 0:
            images += [enc(tex), enc(tex * np.array([0.5, 1.4, 0.7]) + np.array([-30, -40, 60]))]
        else:
            images += [enc(tex), enc(tex + rng.normal(0, 25, tex.shape))]
        issame.append(k % 2 == 0)
    pairs = (images, np.array(issame))
    assert raw_pixel_floor(pairs, standardize=True)['accuracy'] == 1.0
    assert raw_pixel_floor(pairs)['accuracy'] <= 0.6
