"""The one home of image decoding and model-input normalization.

Every facekit model takes ``(B, 3, 112, 112) float32`` RGB normalized as ``(x / 255 - MEAN) / STD``
with MEAN = STD = 0.5, so pixel 0 -> -1 and 255 -> +1. Training transforms, verification sets,
evaluators, inference and the dataset converters all decode and normalize through these
functions, so the convention is written once.
"""
import cv2
import numpy as np

__all__ = ['IMAGE_SIZE', 'MEAN', 'STD', 'decode_image', 'normalize', 'to_model_input']

IMAGE_SIZE = 112
MEAN = 0.5
STD = 0.5


def _where(source, index):
    if index is not None and source:
        return f'image {index} of {source}'
    if index is not None:
        return f'image {index}'
    return str(source) if source else 'image'


def decode_image(buf, source='', index=None, image_size=None):
    """Encoded bytes (JPEG/PNG/...) -> (H, W, 3) uint8 RGB.

    Args:
        buf: ``bytes``/``bytearray``/``memoryview`` or a 1-D uint8 array of the encoded file.
        source: the file, record set or list the bytes came from; named in errors.
        index: the sample/record/key number inside ``source``; named in errors.
        image_size: if given, a square image of another side is resized to it (area
            interpolation); a non-square one is an error (faces must be aligned square crops).
    Raises:
        ValueError: empty or undecodable bytes, or a non-square image when ``image_size`` is set;
            the message names ``source`` and ``index``.
    """
    where = _where(source, index)
    if isinstance(buf, np.ndarray):
        if buf.dtype != np.uint8 or buf.ndim != 1:
            raise ValueError(f'{where}: expected encoded bytes (1-D uint8), got a {buf.dtype} array of '
                             f'shape {buf.shape}')
        data = buf
    elif isinstance(buf, (bytes, bytearray, memoryview)):
        data = np.frombuffer(buf, dtype=np.uint8)
    else:
        raise TypeError(f'{where}: expected encoded bytes, got {type(buf).__name__}')
    if data.size == 0:
        raise ValueError(f'{where} could not be decoded: it is empty (0 bytes)')
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f'{where}: OpenCV could not decode {data.size} bytes '
                         f'(starts with {bytes(data[:8])!r})')
    if image_size is not None:
        h, w = bgr.shape[:2]
        size = int(image_size)
        if (h, w) != (size, size):
            if h != w:
                raise ValueError(f'{where} is {h}x{w}; expected aligned square {size}x{size} crops')
            bgr = cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def normalize(pixels, mean=MEAN, std=STD):
    """Pixels 0..255 (uint8 or float, any layout) -> float32 ``(x / 255 - mean) / std``, same shape.

    ``mean``/``std`` are in [0, 1] image units, scalars or per-channel (broadcast on the last
    axis, so per-channel values need an HWC layout). The defaults map 0 -> -1, 255 -> +1.
    """
    x = np.asarray(pixels, dtype=np.float32)
    mean = np.asarray(mean, dtype=np.float32)
    std = np.asarray(std, dtype=np.float32)
    return ((x / np.float32(255.0) - mean) / std).astype(np.float32, copy=False)


def to_model_input(batch, flip=False):
    """(B, H, W, 3) uint8 RGB -> (B, 3, H, W) float32 contiguous model input (``normalize``d).

    ``flip`` mirrors each image left-right (the flip test).
    """
    x = np.asarray(batch)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f'expected (B, H, W, 3) images, got shape {x.shape}')
    if flip:
        x = x[:, :, ::-1, :]
    return np.ascontiguousarray(normalize(x).transpose(0, 3, 1, 2))
