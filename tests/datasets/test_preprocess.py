"""facekit.datasets.preprocess: the one home of decoding and normalization, against hand values."""
import cv2
import numpy as np
import pytest

from facekit.datasets.preprocess import IMAGE_SIZE, MEAN, STD, decode_image, normalize, to_model_input


def test_constants():
    assert (IMAGE_SIZE, MEAN, STD) == (112, 0.5, 0.5)


def test_normalize_hand_values():
    # (x/255 - 0.5)/0.5: 0 -> -1, 255 -> 1, 51 -> 0.2*2 - 1 = -0.6, 153 -> 0.6*2 - 1 = 0.2
    out = normalize(np.array([[[0, 255, 51]], [[153, 0, 0]]], dtype=np.uint8))
    assert out.dtype == np.float32 and out.shape == (2, 1, 3)
    np.testing.assert_allclose(out[0, 0], [-1.0, 1.0, -0.6], atol=1e-6)
    assert out[1, 0, 0] == pytest.approx(0.2, abs=1e-6)
    # float pixels and per-channel mean/std (Normalize's kwargs): (51/255 - 0.4)/0.2 = -1
    np.testing.assert_allclose(normalize(np.full((1, 1, 3), 51.0), mean=[0.4, 0.2, 0.2], std=[0.2, 0.2, 0.1]),
                               [[[-1.0, 0.0, 0.0]]], atol=1e-6)


def test_to_model_input_layout_and_flip():
    batch = np.zeros((2, 4, 5, 3), np.uint8)
    batch[1, 2, 0] = (255, 51, 0)        # image 1, row 2, leftmost column
    x = to_model_input(batch)
    assert x.shape == (2, 3, 4, 5) and x.dtype == np.float32 and x.flags['C_CONTIGUOUS']
    np.testing.assert_allclose(x[1, :, 2, 0], [1.0, -0.6, -1.0], atol=1e-6)
    assert x[0].max() == -1.0
    xf = to_model_input(batch, flip=True)
    np.testing.assert_allclose(xf[1, :, 2, 4], [1.0, -0.6, -1.0], atol=1e-6)   # now rightmost
    assert xf[1, 0, 2, 0] == -1.0
    with pytest.raises(ValueError, match=r'\(B, H, W, 3\)'):
        to_model_input(batch[0])


def test_decode_png_round_trip_rgb():
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[..., 0], rgb[2, 3] = 200, (1, 2, 3)
    png = cv2.imencode('.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1]
    out = decode_image(png.tobytes())
    assert out.dtype == np.uint8 and np.array_equal(out, rgb)          # red stays in channel 0
    assert np.array_equal(decode_image(png.reshape(-1)), rgb)          # a 1-D uint8 array too


def test_decode_resizes_square_and_rejects_non_square():
    sq = cv2.imencode('.png', np.full((8, 8, 3), 77, np.uint8))[1].tobytes()
    out = decode_image(sq, image_size=4)
    assert out.shape == (4, 4, 3) and (out == 77).all()
    rect = cv2.imencode('.png', np.zeros((6, 8, 3), np.uint8))[1].tobytes()
    with pytest.raises(ValueError, match=r'image 7 of pairs.bin is 6x8'):
        decode_image(rect, source='pairs.bin', index=7, image_size=4)


def test_undecodable_bytes_name_source_and_index():
    with pytest.raises(ValueError, match=r"image 3 of lfw\.bin: OpenCV could not decode 7 bytes \(starts with b'garbage'\)"):
        decode_image(b'garbage', source='lfw.bin', index=3)
    with pytest.raises(ValueError, match=r'image 0 of a\.rec could not be decoded: it is empty'):
        decode_image(b'', source='a.rec', index=0)
