"""Image inputs for inference: paths, folders, arrays -> the model's normalized NCHW batch.

Every facekit model takes ``(B, 3, 112, 112) float32`` RGB normalized as ``(x / 255 - 0.5) / 0.5``
(so pixel 0 -> -1, 255 -> +1). This module turns whatever a user holds into that.
"""
import os
import os.path as osp

import numpy as np

from ..datasets.preprocess import decode_image, to_model_input
from .alignment import align_face

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff', '.ppm', '.pgm')
# Smaller inputs hold no face: a 1x1 or 8x8 image resized to 112x112 embeds a flat colour.
MIN_IMAGE_SIDE = 16
_COLOR_ORDERS = ('rgb', 'bgr')


def _check_color(color):
    color = str(color).lower()
    if color not in _COLOR_ORDERS:
        raise ValueError(f"color must be 'rgb' or 'bgr' (channel order of array inputs), got {color!r}")
    return color


def list_image_files(folder):
    """Image files directly inside ``folder`` (by extension), sorted by name."""
    if not osp.isdir(folder):
        raise NotADirectoryError(f'not a directory: {folder}')
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise FileNotFoundError(f'no image files ({", ".join(IMAGE_EXTENSIONS)}) in directory {folder}')
    return [osp.join(folder, n) for n in names]


def read_image(path):
    """Read an image file as HWC uint8 RGB (OpenCV reads BGR; this converts)."""
    path = os.fspath(path)
    if not osp.isfile(path):
        raise FileNotFoundError(f'image not found: {path}')
    # imdecode of the raw bytes handles non-ASCII paths that cv2.imread rejects.
    return decode_image(np.fromfile(path, dtype=np.uint8), source=path)


def _as_rgb_array(image, color, name):
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f'{name}: expected a uint8 image (0..255), got dtype {image.dtype}; '
                        'convert with np.clip(x, 0, 255).astype(np.uint8)')
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f'{name}: expected an HWC image with 1, 3 or 4 channels or an HW grayscale image, '
                         f'got shape {image.shape}')
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    image = image[:, :, :3]  # drop alpha
    if color == 'bgr':
        image = image[:, :, ::-1]
    return np.ascontiguousarray(image)


def collect_images(inputs, color='rgb'):
    """Flatten an inference input into named HWC uint8 RGB images.

    Args:
        inputs: one of, or a list/tuple mixing
            - a path to an image file (decoded to RGB regardless of ``color``),
            - a path to a directory (its image files, sorted by name, not recursive),
            - an HWC uint8 array (or HW grayscale), channel order given by ``color``,
            - an NHWC uint8 array (a batch of such images).
        color: 'rgb' or 'bgr': the channel order of *array* inputs (OpenCV's ``imread`` gives 'bgr').
    Returns:
        (names, images): names are file paths or ``'array[i]'``; images HWC uint8 RGB.
    Raises:
        ValueError: an image with a side under ``MIN_IMAGE_SIDE`` pixels, naming it and its size.
    """
    color = _check_color(color)
    names, images = [], []

    def add(item, label):
        start = len(images)
        add_any(item, label)
        for name, img in zip(names[start:], images[start:]):
            if min(img.shape[:2]) < MIN_IMAGE_SIDE:
                raise ValueError(f'{name}: image is {img.shape[1]}x{img.shape[0]} pixels, too small to hold a '
                                 f'face (at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}; facekit models take '
                                 'aligned 112x112 crops)')

    def add_any(item, label):
        if isinstance(item, (str, os.PathLike)):
            path = os.fspath(item)
            if osp.isdir(path):
                for p in list_image_files(path):
                    names.append(p)
                    images.append(read_image(p))
            else:
                names.append(path)
                images.append(read_image(path))
        elif isinstance(item, np.ndarray):
            if item.ndim == 4:
                for i, img in enumerate(item):
                    names.append(f'{label}[{i}]')
                    images.append(_as_rgb_array(img, color, f'{label}[{i}]'))
            else:
                names.append(label)
                images.append(_as_rgb_array(item, color, label))
        else:
            raise TypeError(f'{label}: unsupported input type {type(item).__name__}; expected a path, '
                            'a directory, a uint8 HWC/NHWC numpy array, or a list of them')

    if isinstance(inputs, (list, tuple)):
        if not inputs:
            raise ValueError('empty input list: nothing to embed')
        for i, item in enumerate(inputs):
            add(item, f'array[{i}]')
    else:
        add(inputs, 'array')
    return names, images


def normalize_batch(images, image_size=112):
    """Stack HWC uint8 RGB images into the model input.

    Args:
        images: list of HWC uint8 RGB arrays; ones not ``image_size`` square are resized with a
            warning (see ``align_face``: resizing is not alignment).
        image_size: model input side in pixels.
    Returns:
        (N, 3, image_size, image_size) float32 in [-1, 1]: ``(x / 255 - 0.5) / 0.5``.
    """
    return to_model_input(np.stack([align_face(img, None, image_size) for img in images]))
