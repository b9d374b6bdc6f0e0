"""Verification ``.bin`` files: load without running pickle code, save, build from a dataset.

Format (InsightFace): a pickle of ``(images, issame)`` where ``images`` is a list of 2N
encoded images (JPEG/PNG bytes) and ``issame`` a list (or numpy array) of N booleans;
images 2i and 2i+1 form pair i. Files made by Python 2 hold ``str`` images and are read
with ``encoding='bytes'``.

A pickle can name any importable callable and have the loader call it. ``load_bin`` uses
an unpickler that resolves only a short list of globals, each to a checking stand-in, so
a malicious ``__reduce__`` payload raises :class:`UnsafeFileError` before anything runs.

The raw-pixel floor (a metric over such pairs) lives in ``facekit.evaluation.floor``.
"""
import io
import os
import pickle
import struct

import cv2
import numpy as np

from .base import check_raw_image
from .builder import as_face_dataset
from ..utils.progress import progress_bar
from .preprocess import decode_image

__all__ = ['UnsafeFileError', 'load_bin', 'save_bin', 'make_verification_bin', 'decode_pairs']


class UnsafeFileError(pickle.UnpicklingError):
    """A pickle asked for something outside the safe list (a global, a persistent id...)."""


class _DtypeStub:
    """Stands in for ``numpy.dtype(name, align, copy)``; only the bool dtype is admitted."""

    def __init__(self, name, *args):
        if isinstance(name, bytes):
            name = name.decode('latin1')
        if name not in ('b1', '?', 'bool'):
            raise UnsafeFileError(f'numpy dtype {name!r} is not allowed (only bool arrays are)')
        self.name = 'b1'

    def __setstate__(self, state):
        # Byte order / flags of a one-byte bool type carry no information; ignore them.
        self.state = state


class _ArrayStub:
    """Stands in for ``numpy.core.multiarray._reconstruct``; turned into a real array later."""

    def __init__(self):
        self.state = None

    def __setstate__(self, state):
        self.state = state

    def to_array(self):
        if not isinstance(self.state, tuple) or len(self.state) != 5:
            raise UnsafeFileError(f'malformed numpy array state {type(self.state).__name__}')
        _, shape, dtype, _, raw = self.state
        if not isinstance(dtype, _DtypeStub):
            raise UnsafeFileError(f'numpy array without an admitted dtype: {dtype!r}')
        if not (isinstance(shape, tuple) and all(isinstance(s, int) and s >= 0 for s in shape)):
            raise UnsafeFileError(f'malformed numpy array shape {shape!r}')
        if isinstance(raw, str):
            raw = raw.encode('latin1')
        if isinstance(raw, (bytes, bytearray)):
            arr = np.frombuffer(bytes(raw), dtype=np.uint8)
        elif isinstance(raw, list):
            arr = np.asarray([bool(v) for v in raw], dtype=np.uint8)
        else:
            raise UnsafeFileError(f'numpy array data of type {type(raw).__name__} is not allowed')
        count = int(np.prod(shape)) if shape else 1
        if arr.size != count:
            raise UnsafeFileError(f'numpy bool array of shape {shape} holds {arr.size} bytes, expected {count}')
        return (arr != 0).reshape(shape)


def _reconstruct(subtype, shape, dtype):
    if subtype is not _NDARRAY_MARK:
        raise UnsafeFileError(f'numpy _reconstruct of {subtype!r} is not allowed (only ndarray)')
    return _ArrayStub()


def _frombuffer(buf, dtype, shape, order='C'):
    # numpy >= 1.16 pickles arrays at protocol 5 as _frombuffer(buffer, dtype, shape, order).
    stub = _ArrayStub()
    stub.state = (1, tuple(shape), dtype, order == 'F', bytes(buf) if isinstance(buf, (bytes, bytearray)) else buf)
    return stub.to_array()


def _numpy_scalar(dtype, raw=b''):
    if not isinstance(dtype, _DtypeStub):
        raise UnsafeFileError(f'numpy scalar of dtype {dtype!r} is not allowed')
    if isinstance(raw, str):
        raw = raw.encode('latin1')
    if not isinstance(raw, bytes) or len(raw) != 1:
        raise UnsafeFileError(f'numpy bool scalar must hold 1 byte, got {raw!r}')
    return raw != b'\x00'


def _codecs_encode(text, encoding='utf-8'):
    # Python 3 pickles bytes at protocol < 3 as _codecs.encode(str, 'latin1').
    if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
        raise UnsafeFileError(f'_codecs.encode is admitted only as (str, "latin1"), '
                              f'got ({type(text).__name__}, {encoding!r})')
    return text.encode('latin1')


def _bytes_like(factory):
    def make(*args):
        if len(args) == 0:
            return factory()
        if len(args) == 2 and isinstance(args[0], str) and args[1] in ('latin1', 'latin-1'):
            return factory(args[0].encode('latin1'))
        if len(args) == 1 and isinstance(args[0], (bytes, bytearray, list)):
            return factory(args[0])
        raise UnsafeFileError(f'{factory.__name__}{tuple(type(a).__name__ for a in args)} is not allowed')
    return make


def _container(factory):
    def make(*args):
        if len(args) > 1 or (args and not isinstance(args[0], (list, tuple, set, frozenset))):
            raise UnsafeFileError(f'{factory.__name__} from {tuple(type(a).__name__ for a in args)} is not allowed')
        return factory(*args)
    return make


_NDARRAY_MARK = object()
_SAFE_GLOBALS = {}
for _mod in ('builtins', '__builtin__'):
    _SAFE_GLOBALS[(_mod, 'bytes')] = _bytes_like(bytes)
    _SAFE_GLOBALS[(_mod, 'bytearray')] = _bytes_like(bytearray)
    _SAFE_GLOBALS[(_mod, 'set')] = _container(set)
    _SAFE_GLOBALS[(_mod, 'frozenset')] = _container(frozenset)
_SAFE_GLOBALS[('_codecs', 'encode')] = _codecs_encode
for _mod in ('numpy.core.multiarray', 'numpy._core.multiarray'):
    _SAFE_GLOBALS[(_mod, '_reconstruct')] = _reconstruct
    _SAFE_GLOBALS[(_mod, 'scalar')] = _numpy_scalar
for _mod in ('numpy.core.numeric', 'numpy._core.numeric'):
    _SAFE_GLOBALS[(_mod, '_frombuffer')] = _frombuffer
_SAFE_GLOBALS[('numpy', 'ndarray')] = _NDARRAY_MARK
_SAFE_GLOBALS[('numpy', 'dtype')] = _DtypeStub


class _SafeUnpickler(pickle.Unpickler):
    def __init__(self, file, source):
        super().__init__(file, encoding='bytes')
        self._source = source

    def find_class(self, module, name):
        module = module.decode('latin1') if isinstance(module, bytes) else module
        name = name.decode('latin1') if isinstance(name, bytes) else name
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeFileError(
                f'{self._source}: refusing to load global {module}.{name}; a verification .bin may hold '
                f'only lists/tuples of bytes and booleans (and numpy bool arrays)') from None

    def persistent_load(self, pid):
        raise UnsafeFileError(f'{self._source}: refusing persistent id {pid!r}')


def _resolve_stubs(obj):
    if isinstance(obj, _ArrayStub):
        return obj.to_array()
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve_stubs(v) for v in obj)
    return obj


def safe_loads(data, source='<bytes>'):
    """Unpickle ``data`` admitting only plain containers, bytes, numbers and bool arrays."""
    return _resolve_stubs(_SafeUnpickler(io.BytesIO(data), source).load())


def load_bin(path):
    """Read a verification .bin safely.

    Returns:
        (images, issame): list of 2N ``bytes`` (encoded images) and (N,) bool ndarray.
    Raises:
        UnsafeFileError: the pickle names a global outside the safe list.
        ValueError: the content is not (2N images, N booleans).
    """
    with open(path, 'rb') as f:
        data = f.read()
    expected = 'expected a pickled (images, issame) pair: 2N encoded images and N booleans'
    if not data:
        raise ValueError(f'{path} is empty (0 bytes); {expected}')
    try:
        obj = safe_loads(data, source=str(path))
    except (EOFError, pickle.UnpicklingError, ValueError, IndexError, struct.error) as e:
        if isinstance(e, UnsafeFileError):
            raise
        raise ValueError(f'{path} ({len(data)} bytes) is truncated or not a pickle: {type(e).__name__}: {e}; '
                         f'{expected}') from e
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise ValueError(f'{path}: expected a pickled (images, issame) pair, got {type(obj).__name__}'
                         f'{" of length %d" % len(obj) if isinstance(obj, (tuple, list)) else ""}')
    images, issame = obj
    if not isinstance(images, (list, tuple)):
        raise ValueError(f'{path}: images must be a list of encoded bytes, got {type(images).__name__}')
    out = []
    for i, im in enumerate(images):
        if isinstance(im, str):  # Python 2 str read without encoding='bytes' elsewhere
            im = im.encode('latin1')
        if not isinstance(im, (bytes, bytearray)):
            raise ValueError(f'{path}: image {i} is {type(im).__name__}, expected encoded bytes')
        out.append(bytes(im))
    if isinstance(issame, np.ndarray):
        flags = issame.astype(bool).reshape(-1)
    elif isinstance(issame, (list, tuple)):
        if not all(isinstance(v, (bool, int)) for v in issame):
            bad = next(v for v in issame if not isinstance(v, (bool, int)))
            raise ValueError(f'{path}: issame holds {type(bad).__name__} {bad!r}, expected booleans')
        flags = np.asarray(issame, dtype=bool)
    else:
        raise ValueError(f'{path}: issame must be a list or bool array, got {type(issame).__name__}')
    if len(out) != 2 * len(flags):
        raise ValueError(f'{path}: {len(out)} images for {len(flags)} pairs; expected {2 * len(flags)}')
    return out, flags


def save_bin(path, images, issame, protocol=4):
    """Write ``(list of bytes, list of bool)`` as a .bin pickle, atomically (temp then rename).

    Args:
        images: 2N encoded images (bytes).
        issame: N booleans.
        protocol: pickle protocol; 2 makes a file Python 2 can also read.
    """
    images = [bytes(im) for im in images]
    flags = [bool(v) for v in np.asarray(issame).reshape(-1)]
    if len(images) != 2 * len(flags):
        raise ValueError(f'save_bin({path}): {len(images)} images for {len(flags)} pairs; expected {2 * len(flags)}')
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = f'{path}.tmp-{os.getpid()}'
    try:
        with open(tmp, 'wb') as f:
            pickle.dump((images, flags), f, protocol=protocol)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def make_verification_bin(dataset, num_pairs, seed, path=None, img_format='.jpg', quality=95):
    """Build balanced verification pairs from a labelled dataset.

    ``num_pairs // 2`` positive pairs (two distinct images of one identity) and the rest
    negative (images of two different identities), in a seeded random order so the
    10 contiguous folds of the protocol each mix both kinds.

    Args:
        dataset: a BaseFaceDataset (its raw ``get_image``, before any pipeline, and its
            ``indices_by_class``), or a minimal-protocol dataset (``ds[i] -> (HWC uint8 RGB,
            label)``, see ``as_face_dataset``); use held-out identities for a fair test.
        num_pairs: N pairs (2N images).
        seed: seed of the pair sampling.
        path: if given, also write the .bin there (atomically).
        img_format: '.jpg' (like the public sets) or '.png' (lossless).
        quality: JPEG quality.
    Returns:
        (images, issame): list of 2N encoded bytes, (N,) bool ndarray.
    """
    num_pairs = int(num_pairs)
    dataset = as_face_dataset(dataset)
    groups = [np.asarray(ix, dtype=np.int64) for ix in dataset.indices_by_class().values()]
    multi = [g for g in groups if len(g) >= 2]
    nonempty = [g for g in groups if len(g) >= 1]
    if num_pairs < 2 or not multi or len(nonempty) < 2:
        raise ValueError(f'make_verification_bin needs num_pairs >= 2, an identity with >= 2 images and '
                         f'>= 2 identities; got num_pairs={num_pairs}, {len(multi)} multi-image and '
                         f'{len(nonempty)} non-empty identities')
    rng = np.random.default_rng(seed)
    n_pos = num_pairs // 2
    pairs = []
    for _ in range(n_pos):
        g = multi[rng.integers(len(multi))]
        a, b = rng.choice(len(g), size=2, replace=False)
        pairs.append((int(g[a]), int(g[b]), True))
    for _ in range(num_pairs - n_pos):
        ca, cb = rng.choice(len(nonempty), size=2, replace=False)
        ga, gb = nonempty[ca], nonempty[cb]
        pairs.append((int(ga[rng.integers(len(ga))]), int(gb[rng.integers(len(gb))]), False))
    order = rng.permutation(len(pairs))
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if img_format in ('.jpg', '.jpeg') else []
    images, issame = [], []
    for k in progress_bar(order, desc='encoding pairs', unit='pair', leave=False):
        a, b, same = pairs[k]
        for idx in (a, b):
            img = check_raw_image(dataset.get_image(idx), f'{type(dataset).__name__}.get_image({idx})')
            ok, buf = cv2.imencode(img_format, cv2.cvtColor(img, cv2.COLOR_RGB2BGR), params)
            if not ok:
                raise ValueError(f'OpenCV could not encode image {idx} as {img_format}')
            images.append(buf.tobytes())
        issame.append(same)
    issame = np.asarray(issame, dtype=bool)
    if path is not None:
        save_bin(path, images, issame)
    return images, issame


def decode_pairs(images, image_size=None, source='pairs'):
    """Encoded images -> (2N, H, W, 3) uint8 RGB (``preprocess.decode_image``).

    ``image_size`` resizes square images of another side (non-square ones are an error);
    ``source`` names the file in errors.
    """
    return np.stack([decode_image(b, source=source, index=i, image_size=image_size)
                     for i, b in progress_bar(enumerate(images), total=len(images), desc=f'decoding {source}',
                                              unit='img', leave=False)])
