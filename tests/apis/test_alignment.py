"""align_face / estimate_similarity against transforms built by hand."""
import warnings

import numpy as np
import pytest

from facekit.apis.alignment import (ARCFACE_TEMPLATE, align_face, arcface_template, estimate_similarity,
                                    transform_points)


def _similarity(angle_deg, scale, tx, ty):
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx],
                     [scale * np.sin(a), scale * np.cos(a), ty]])


def test_template_is_the_published_arcface_points():
    # insightface's arcface_dst for 112x112: the 96x112 template with x + 8.
    assert ARCFACE_TEMPLATE[0].tolist() == pytest.approx([38.2946, 51.6963])
    assert ARCFACE_TEMPLATE[4].tolist() == pytest.approx([70.7299, 92.2041])
    assert arcface_template(224)[2].tolist() == pytest.approx([56.0252 * 2, 71.7366 * 2])


def test_estimate_recovers_exact_similarity():
    truth = _similarity(23.0, 1.7, 40.0, -12.0)
    src = ARCFACE_TEMPLATE
    dst = transform_points(src, truth)
    est = estimate_similarity(src, dst)
    np.testing.assert_allclose(est, truth, atol=1e-9)


def test_estimate_is_least_squares_on_noisy_points():
    rng = np.random.default_rng(0)
    src = ARCFACE_TEMPLATE + rng.normal(0, 3, size=(5, 2))
    dst = ARCFACE_TEMPLATE
    est = estimate_similarity(src, dst)
    # Independent solution: a similarity [[a, -b, tx], [b, a, ty]] is linear in (a, b, tx, ty).
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst):
        rows.append([x, -y, 1, 0]); rhs.append(u)
        rows.append([y, x, 0, 1]); rhs.append(v)
    a, b, tx, ty = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
    np.testing.assert_allclose(est, [[a, -b, tx], [b, a, ty]], atol=1e-9)


def test_no_reflection_for_mirrored_points():
    src = ARCFACE_TEMPLATE.copy()
    dst = ARCFACE_TEMPLATE * np.array([-1.0, 1.0])  # mirror image: not reachable by a similarity
    est = estimate_similarity(src, dst)
    assert np.linalg.det(est[:, :2]) > 0


def _blob_image(points, shape, sigma=2.0):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    img = np.zeros(shape, dtype=np.float64)
    for x, y in points:
        img += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
    return np.clip(img * 255, 0, 255).astype(np.uint8)


def _blob_centres(img, around, radius=6):
    centres = []
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    w = img.astype(np.float64)
    for x, y in around:
        mask = (xx - x) ** 2 + (yy - y) ** 2 <= radius ** 2
        m = w * mask
        centres.append([(m * xx).sum() / m.sum(), (m * yy).sum() / m.sum()])
    return np.array(centres)


@pytest.mark.parametrize('angle,scale', [(0.0, 1.0), (-17.0, 2.3), (31.0, 1.4)])
def test_aligned_landmarks_land_on_template(angle, scale):
    # A face whose landmarks are the template moved by a known similarity, drawn as
    # Gaussian dots; after alignment the dots must sit on the template (< 0.5 px).
    truth = _similarity(angle, scale, 120.0, 60.0)
    landmarks = transform_points(ARCFACE_TEMPLATE, truth)
    image = _blob_image(landmarks, (400, 420), sigma=2.0 * scale)
    image = np.repeat(image[:, :, None], 3, axis=2)
    crop = align_face(image, landmarks, image_size=112)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    found = _blob_centres(crop[:, :, 0], ARCFACE_TEMPLATE)
    assert np.abs(found - ARCFACE_TEMPLATE).max() < 0.5


def test_non_112_without_landmarks_resizes_with_warning():
    img = np.full((150, 130, 3), 7, dtype=np.uint8)
    with pytest.warns(UserWarning, match='without alignment'):
        out = align_face(img)
    assert out.shape == (112, 112, 3) and (out == 7).all()


def test_112_without_landmarks_passes_through_silently():
    img = np.arange(112 * 112 * 3, dtype=np.uint32).reshape(112, 112, 3).astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        out = align_face(img)
    assert out is img


def test_bad_landmarks_shape_is_named():
    with pytest.raises(ValueError, match=r'\(5, 2\)'):
        align_face(np.zeros((112, 112, 3), np.uint8), np.zeros((4, 2)))
