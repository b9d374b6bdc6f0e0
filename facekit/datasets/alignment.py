"""Face alignment: a similarity transform that maps five landmarks onto the ArcFace template.

The template is the one every ArcFace-family model was trained on: five points (left eye,
right eye, nose tip, left mouth corner, right mouth corner, in image coordinates of the
*person's* left/right as seen in the picture) for a 96x112 crop, shifted +8 px in x to centre
it in 112x112. Other output sizes scale the 112x112 template uniformly.

Its home is ``facekit.datasets`` because readers of unaligned releases (IJB-B/C loose crops with
five landmarks, ``facekit.datasets.ijb``) align with it and datasets never import ``facekit.apis``;
``facekit.apis`` re-exports it for inference.
"""
import warnings

import cv2
import numpy as np

# (5, 2) pixel coordinates (x, y) in the 96x112 crop of the original SphereFace/ArcFace
# preprocessing; ARCFACE_TEMPLATE adds the +8 px x shift for the square 112x112 crop.
TEMPLATE_96x112 = np.array([[30.2946, 51.6963],
                            [65.5318, 51.5014],
                            [48.0252, 71.7366],
                            [33.5493, 92.3655],
                            [62.7299, 92.2041]], dtype=np.float64)
ARCFACE_TEMPLATE = TEMPLATE_96x112 + np.array([8.0, 0.0])


def arcface_template(image_size=112):
    """The 5-point template for a square ``image_size`` crop: (5, 2) float64 pixels (x, y)."""
    if int(image_size) <= 0:
        raise ValueError(f'image_size must be a positive int, got {image_size!r}')
    return ARCFACE_TEMPLATE * (float(image_size) / 112.0)


def estimate_similarity(src, dst):
    """Least-squares similarity transform (rotation, uniform scale, translation) src -> dst.

    Umeyama (1991): with centred point sets and the SVD of their cross-covariance, the
    rotation is U diag(1, det) V^T (the det term forbids a reflection), the scale is
    trace(D S) / var(src) and the translation maps the centroids.

    Args:
        src: (K, 2) points, K >= 2.
        dst: (K, 2) target points.
    Returns:
        (2, 3) float64 affine matrix M with dst ~= M @ [x, y, 1].
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or src.shape[0] < 2:
        raise ValueError(f'expected two (K, 2) point arrays with K >= 2, got {src.shape} and {dst.shape}')
    n = src.shape[0]
    src_mean = src.mean(axis=0)
    dst_mean = dst.mean(axis=0)
    src_c = src - src_mean
    dst_c = dst - dst_mean
    src_var = (src_c ** 2).sum() / n
    if src_var < 1e-12:
        raise ValueError('source points coincide; a similarity transform is undefined')
    cov = dst_c.T @ src_c / n
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = (s * d).sum() / src_var
    matrix = np.zeros((2, 3), dtype=np.float64)
    matrix[:, :2] = scale * rot
    matrix[:, 2] = dst_mean - scale * rot @ src_mean
    return matrix


def transform_points(points, matrix):
    """Apply a (2, 3) affine matrix to (K, 2) points; returns (K, 2) float64."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def align_face(image, landmarks5=None, image_size=112):
    """Crop a face to the ArcFace layout.

    Args:
        image: HWC uint8 image (any channel order; channels are not touched) or HW grayscale.
        landmarks5: (5, 2) pixel coordinates (x, y) of left eye, right eye, nose, left and right
            mouth corner, or None. Without landmarks an ``image_size`` square is passed through and
            any other size is resized (with a warning: resizing is no alignment).
        image_size: side of the square output crop in pixels (112 for every facekit model).
    Returns:
        (image_size, image_size[, C]) uint8 crop.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f'expected an HWC or HW image, got shape {image.shape}')
    size = int(image_size)
    if landmarks5 is None:
        if image.shape[:2] == (size, size):
            return image
        warnings.warn(f'image of size {image.shape[1]}x{image.shape[0]} has no landmarks: resizing to '
                      f'{size}x{size} without alignment; pass landmarks5 for an aligned crop',
                      stacklevel=2)
        return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    landmarks5 = np.asarray(landmarks5, dtype=np.float64)
    if landmarks5.shape != (5, 2):
        raise ValueError(f'landmarks5 must have shape (5, 2) (x, y per point), got {landmarks5.shape}')
    matrix = estimate_similarity(landmarks5, arcface_template(size))
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=0.0)
