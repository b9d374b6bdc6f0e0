"""Image transforms (TRANSFORMS registry), composable from config.

A transform is a callable ``t(img) -> img`` on one sample. ``Compose`` chains them and
carries the label through: ``Compose(cfgs)(img, label) -> (img, label)``. A transform with
an exact MindSpore C++ equivalent also has ``native()`` returning it; the MindRecord loader
runs those in C++ (see mindrecord.py).

Images enter as HWC uint8 RGB (or encoded bytes, for ``DecodeImage``) and usually leave as
CHW float32 in [-1, 1] for the model: ``[..., dict(type='Normalize'), dict(type='ToCHW')]``.

Random transforms (``RandomTransform``) draw every decision from ``sample_rng()``. The
training loader sets it per sample to ``np.random.default_rng([seed, epoch, index])``, so a
sample's augmentation is a pure function of (seed, epoch, dataset index): the same in every
run, in any worker, and in a resumed run. Outside the loader (a dataset indexed by hand) they
fall back to a per-process generator seeded from the OS, re-seeded after a fork so worker
processes do not repeat each other.
"""
import contextlib
import os
import threading

import cv2
import numpy as np

from ..registry import TRANSFORMS, build_from_cfg
from .preprocess import MEAN, STD, decode_image, normalize

__all__ = ['Compose', 'RandomTransform', 'sample_rng', 'DecodeImage', 'Resize', 'RandomHorizontalFlip',
           'Normalize', 'ToCHW', 'RandomDownUpResize', 'RandomGaussianBlur', 'ColorJitter', 'RandomGrayscale']

_RNG = {'pid': None, 'rng': None}
_SAMPLE = threading.local()     # loader threads each transform their own sample


@contextlib.contextmanager
def sample_rng(entropy):
    """Within the block, random transforms in this thread draw from ``np.random.default_rng(entropy)``.

    ``entropy``: e.g. ``[seed, epoch, index]``. The generator is made on the first draw (~60 us),
    so a pipeline without random transforms pays nothing.
    """
    previous = getattr(_SAMPLE, 'state', None)
    _SAMPLE.state = [entropy, None]
    try:
        yield
    finally:
        _SAMPLE.state = previous


def _rng():
    """The current sample's generator (``sample_rng``), else this process's (re-seeded after a fork)."""
    state = getattr(_SAMPLE, 'state', None)
    if state is not None:
        if state[1] is None:
            state[1] = np.random.default_rng(state[0])
        return state[1]
    pid = os.getpid()
    if _RNG['pid'] != pid:
        _RNG['pid'] = pid
        _RNG['rng'] = np.random.default_rng()
    return _RNG['rng']


class RandomTransform:
    """Base of transforms with random decisions: each draws them from ``_rng()`` only.

    The training loader keeps these in Python (``builder.split_native_tail`` never moves them to
    MindSpore's C++ ops, whose random state cannot be saved or tied to a sample), which makes
    augmentation reproducible and a resumed run exact.
    """


def _check_prob(prob, name):
    prob = float(prob)
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f'{name}: prob must be in [0, 1], got {prob}')
    return prob


class Compose:
    """Chain of transforms built from configs (dicts) or given as callables.

    Args:
        transforms: list of ``dict(type=..., ...)`` for TRANSFORMS, or callables.
    """

    def __init__(self, transforms):
        self.transforms = []
        for t in transforms or []:
            if isinstance(t, dict):
                t = build_from_cfg(t, TRANSFORMS)
            elif not callable(t):
                raise TypeError(f'pipeline entries must be dicts or callables, got {type(t).__name__}: {t!r}')
            self.transforms.append(t)

    def __call__(self, img, label):
        for t in self.transforms:
            img = t(img)
        return img, label

    def __repr__(self):
        return 'Compose([' + ', '.join(repr(t) for t in self.transforms) + '])'


@TRANSFORMS.register_module()
class DecodeImage:
    """Encoded image bytes (JPEG/PNG...) -> HWC uint8 RGB (``preprocess.decode_image``).

    Decoded (HWC) arrays pass through unchanged. Raises ValueError on undecodable bytes.
    """

    def __call__(self, img):
        if isinstance(img, np.ndarray) and img.ndim == 3:
            return img
        return decode_image(img, source='DecodeImage')

    def native(self):
        import mindspore.dataset.vision as msv
        return msv.Decode()

    def __repr__(self):
        return 'DecodeImage()'


@TRANSFORMS.register_module()
class Resize:
    """Resize HWC uint8 to ``size`` = (height, width) (an int means square); no-op if equal.

    Args:
        size: target (H, W) in pixels.
        interpolation: 'linear', 'area', 'cubic' or 'nearest'.
    """
    _INTERP = {'linear': cv2.INTER_LINEAR, 'area': cv2.INTER_AREA,
               'cubic': cv2.INTER_CUBIC, 'nearest': cv2.INTER_NEAREST}

    def __init__(self, size=112, interpolation='linear'):
        self.size = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
        if interpolation not in self._INTERP:
            raise ValueError(f'Resize: interpolation must be one of {sorted(self._INTERP)}, got {interpolation!r}')
        self.interpolation = interpolation

    def __call__(self, img):
        if img.shape[:2] == self.size:
            return img
        return cv2.resize(img, (self.size[1], self.size[0]), interpolation=self._INTERP[self.interpolation])

    def native(self):
        import mindspore.dataset.vision as msv
        inter = {'linear': msv.Inter.LINEAR, 'area': msv.Inter.AREA, 'cubic': msv.Inter.CUBIC,
                 'nearest': msv.Inter.NEAREST}[self.interpolation]
        return msv.Resize(list(self.size), interpolation=inter)

    def __repr__(self):
        return f'Resize(size={self.size}, interpolation={self.interpolation!r})'


@TRANSFORMS.register_module()
class RandomHorizontalFlip(RandomTransform):
    """Mirror HWC images left-right with probability ``prob``."""

    def __init__(self, prob=0.5):
        self.prob = _check_prob(prob, 'RandomHorizontalFlip')

    def __call__(self, img):
        if _rng().random() < self.prob:
            return cv2.flip(img, 1)     # == img[:, ::-1], 30x faster than NumPy's reversed copy
        return img

    def native(self):
        # MindRecordFaceDataset's C++ map only: its draws follow MindSpore's dataset seed, not the sample
        import mindspore.dataset.vision as msv
        return msv.RandomHorizontalFlip(self.prob)

    def __repr__(self):
        return f'RandomHorizontalFlip(prob={self.prob})'


@TRANSFORMS.register_module()
class Normalize:
    """HWC uint8 -> float32 ``(x / 255 - mean) / std`` (``preprocess.normalize``).

    Args:
        mean: scalar or per-channel mean in [0, 1] image units; default ``preprocess.MEAN``.
        std: scalar or per-channel std, non-zero; default ``preprocess.STD`` (so [-1, 1]).
    """

    def __init__(self, mean=MEAN, std=STD):
        self.mean = np.float32(mean)
        self.std = np.float32(std)
        if np.any(self.std == 0):
            raise ValueError('Normalize: std must be non-zero')

    def __call__(self, img):
        return normalize(img, self.mean, self.std)

    def native(self):
        # (x/255 - m)/s == (x - 255 m)/(255 s), per channel
        import mindspore.dataset.vision as msv
        mean = np.broadcast_to(self.mean, (3,)).astype(float) * 255.0
        std = np.broadcast_to(self.std, (3,)).astype(float) * 255.0
        return msv.Normalize(mean.tolist(), std.tolist())

    def __repr__(self):
        return f'Normalize(mean={self.mean}, std={self.std})'


@TRANSFORMS.register_module()
class ToCHW:
    """HWC -> CHW (contiguous), dtype unchanged."""

    def __call__(self, img):
        if img.ndim != 3:
            raise ValueError(f'ToCHW expects an HWC image, got shape {img.shape}')
        return np.ascontiguousarray(img.transpose(2, 0, 1))

    def native(self):
        import mindspore.dataset.vision as msv
        return msv.HWC2CHW()

    def __repr__(self):
        return 'ToCHW()'


@TRANSFORMS.register_module()
class RandomDownUpResize(RandomTransform):
    """With probability ``prob`` shrink to a random side in ``min_size..H-1`` and scale back.

    Simulates low-resolution captures (the field's "random down-resize" augmentation).
    """

    def __init__(self, prob=0.2, min_size=28):
        self.prob = _check_prob(prob, 'RandomDownUpResize')
        self.min_size = int(min_size)

    def __call__(self, img):
        rng = _rng()
        if rng.random() >= self.prob:
            return img
        h, w = img.shape[:2]
        if h <= 1:
            return img
        side = int(rng.integers(min(self.min_size, h - 1), h))  # strictly smaller than h
        small = cv2.resize(img, (max(1, side * w // h), side), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)

    def __repr__(self):
        return f'RandomDownUpResize(prob={self.prob}, min_size={self.min_size})'


@TRANSFORMS.register_module()
class RandomGaussianBlur(RandomTransform):
    """With probability ``prob`` blur with a Gaussian of std uniform in ``sigma`` (pixels)."""

    def __init__(self, prob=0.2, sigma=(0.5, 2.0)):
        self.prob = _check_prob(prob, 'RandomGaussianBlur')
        self.sigma = (float(sigma[0]), float(sigma[1]))

    def __call__(self, img):
        rng = _rng()
        if rng.random() >= self.prob:
            return img
        return cv2.GaussianBlur(img, (0, 0), sigmaX=rng.uniform(*self.sigma))

    def __repr__(self):
        return f'RandomGaussianBlur(prob={self.prob}, sigma={self.sigma})'


@TRANSFORMS.register_module()
class ColorJitter(RandomTransform):
    """With probability ``prob`` scale brightness, contrast and saturation of HWC uint8 RGB.

    Each factor is uniform in [1 - x, 1 + x]; x = 0 disables that component.
    """

    def __init__(self, prob=0.5, brightness=0.2, contrast=0.2, saturation=0.2):
        self.prob = _check_prob(prob, 'ColorJitter')
        self.brightness, self.contrast, self.saturation = float(brightness), float(contrast), float(saturation)

    def __call__(self, img):
        rng = _rng()
        if rng.random() >= self.prob:
            return img
        x = img.astype(np.float32)
        if self.brightness:
            x *= rng.uniform(1 - self.brightness, 1 + self.brightness)
        if self.contrast:
            mean = x.mean()
            x = (x - mean) * rng.uniform(1 - self.contrast, 1 + self.contrast) + mean
        if self.saturation:
            grey = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            x = (x - grey[..., None]) * rng.uniform(1 - self.saturation, 1 + self.saturation) + grey[..., None]
        return np.clip(x + 0.5, 0, 255).astype(np.uint8)

    def __repr__(self):
        return (f'ColorJitter(prob={self.prob}, brightness={self.brightness}, '
                f'contrast={self.contrast}, saturation={self.saturation})')


@TRANSFORMS.register_module()
class RandomGrayscale(RandomTransform):
    """With probability ``prob`` replace RGB by its luma (ITU-R 601) in all three channels."""

    def __init__(self, prob=0.1):
        self.prob = _check_prob(prob, 'RandomGrayscale')

    def __call__(self, img):
        if _rng().random() >= self.prob:
            return img
        grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        return np.repeat(grey[:, :, None], 3, axis=2)

    def __repr__(self):
        return f'RandomGrayscale(prob={self.prob})'
