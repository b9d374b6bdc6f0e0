"""Input handling: paths, folders, RGB/BGR arrays, batches -> normalized NCHW."""
import cv2
import numpy as np
import pytest

from facekit.apis.images import collect_images, normalize_batch, read_image


def _face(seed, size=112):
    return np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)


def test_path_is_decoded_as_rgb(tmp_path):
    rgb = _face(0)
    path = tmp_path / 'a.png'
    cv2.imwrite(str(path), rgb[:, :, ::-1])  # OpenCV writes BGR
    np.testing.assert_array_equal(read_image(path), rgb)


def test_bgr_flag_reverses_channels():
    rgb = _face(1)
    _, from_rgb = collect_images(rgb, color='rgb')
    _, from_bgr = collect_images(rgb[:, :, ::-1].copy(), color='bgr')
    np.testing.assert_array_equal(from_rgb[0], from_bgr[0])
    with pytest.raises(ValueError, match="'rgb' or 'bgr'"):
        collect_images(rgb, color='hsv')


def test_directory_list_and_batch(tmp_path):
    for i, name in enumerate(['b.png', 'a.png']):
        cv2.imwrite(str(tmp_path / name), _face(i)[:, :, ::-1])
    (tmp_path / 'notes.txt').write_text('not an image')
    names, images = collect_images([str(tmp_path), np.stack([_face(5), _face(6)])])
    assert [n.rsplit('/', 1)[-1] for n in names[:2]] == ['a.png', 'b.png']
    assert names[2:] == ['array[1][0]', 'array[1][1]']
    np.testing.assert_array_equal(images[0], _face(1))
    np.testing.assert_array_equal(images[3], _face(6))


def test_normalize_formula_and_layout():
    img = np.zeros((112, 112, 3), dtype=np.uint8)
    img[0, 0] = [0, 255, 51]
    batch = normalize_batch([img])
    assert batch.shape == (1, 3, 112, 112) and batch.dtype == np.float32
    # (x/255 - 0.5)/0.5 by hand: 0 -> -1, 255 -> 1, 51 -> -0.6
    np.testing.assert_allclose(batch[0, :, 0, 0], [-1.0, 1.0, -0.6], atol=1e-6)


def test_grayscale_and_errors(tmp_path):
    gray = np.full((112, 112), 200, dtype=np.uint8)
    _, images = collect_images(gray)
    assert images[0].shape == (112, 112, 3)
    with pytest.raises(TypeError, match='uint8'):
        collect_images(np.zeros((112, 112, 3), np.float32))
    with pytest.raises(FileNotFoundError, match='missing.png'):
        collect_images(str(tmp_path / 'missing.png'))
    with pytest.raises(FileNotFoundError, match='no image files'):
        collect_images(str(tmp_path))
