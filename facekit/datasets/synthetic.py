"""Procedural face-like identities, generated on the fly: the bundled data set.

No files, no downloads. Each identity is a fixed random structure (a set of coloured
elliptic Gaussian blobs laid out on a canvas, drawn from a random generator seeded by
``(seed, identity)``); each image shows that structure under a random similarity
transform, per-channel colour gain and offset, distractor blobs that belong to no
identity, an occluding rectangle, blur and noise, all drawn from a generator seeded by
``(seed, identity, image index)``. The same arguments therefore always give the same
pixels, in any process and in any order of access.

Why the nuisances (docs/dataset.md, docs/training.md): raw pixels must not be
able to verify held-out identities on their own, or a trained model's accuracy proves
nothing. Measure that floor with ``facekit.evaluation.floor.raw_pixel_floor``
and report it beside any trained accuracy.
"""
import numpy as np
import cv2

from ..registry import DATASETS
from .base import BaseFaceDataset

__all__ = ['SyntheticIdentities', 'render_identity_image']

# Reserved seed-space tags, so the identity structure stream and the per-image jitter
# stream can never coincide for any (identity, index).
_TAG_IDENTITY = 0x1D
_TAG_IMAGE = 0x1A


def _pair(value, name):
    """Accept a scalar ``v`` (meaning [0, v] or [-v, v] by the caller) or a (lo, hi) pair."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2 or value[0] > value[1]:
            raise ValueError(f'{name} must be a number or a (low, high) pair with low <= high, got {value!r}')
        return float(value[0]), float(value[1])
    return None


def _range(value, name, symmetric):
    pair = _pair(value, name)
    if pair is not None:
        return pair
    v = float(value)
    if v < 0:
        raise ValueError(f'{name} must be >= 0, got {value!r}')
    return (-v, v) if symmetric else (0.0, v)


def _blob_params(rng, count, centre_lo, centre_hi, sigma, amplitude, size):
    """(count, 8) float64 blob table: cx, cy, sx, sy, theta, r, g, b (pixels of a ``size`` canvas)."""
    unit = size / 112.0
    p = np.empty((count, 8))
    for i in range(count):  # one blob after another, so a blob's draw never depends on ``count``
        p[i, 0:2] = rng.uniform(centre_lo * size, centre_hi * size, size=2)
        p[i, 2:4] = rng.uniform(sigma[0], sigma[1], size=2) * unit
        p[i, 4] = rng.uniform(0, np.pi)
        p[i, 5:8] = rng.uniform(-1.0, 1.0, size=3) * amplitude
    return p


def _draw_blobs(canvas, params):
    """Add signed coloured elliptic Gaussian blobs (rows of ``_blob_params``) to ``canvas`` in place.

    Each blob is evaluated only inside its 3-sigma box (the tail beyond adds < 1.2% of the
    peak), which keeps a 112 px image with a dozen blobs near a millisecond.
    """
    h, w = canvas.shape[:2]
    for cx, cy, sx, sy, theta, cr, cg, cb in params:
        r = 3.0 * max(sx, sy)
        x0, x1 = max(0, int(cx - r)), min(w, int(cx + r) + 2)
        y0, y1 = max(0, int(cy - r)), min(h, int(cy + r) + 2)
        if x0 >= x1 or y0 >= y1:
            continue
        ys = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
        xs = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
        c, s = np.float32(np.cos(theta) / sx), np.float32(np.sin(theta) / sx)
        c2, s2 = np.float32(np.cos(theta) / sy), np.float32(np.sin(theta) / sy)
        u = xs * c + ys * s
        v = ys * c2 - xs * s2
        layer = np.exp(np.float32(-0.5) * (u * u + v * v))
        canvas[y0:y1, x0:x1] += layer[:, :, None] * np.array([cr, cg, cb], dtype=np.float32)


_NOISE_BANK = {}


def _noise_bank(size):
    """A fixed (2*size, 2*size, 3) float32 N(0, 1) field; images take random crops of it.

    Drawing 37k normals per image was a third of the render time; a crop at a random
    offset with a random flip is as good as fresh noise for a nuisance, and deterministic.
    """
    bank = _NOISE_BANK.get(size)
    if bank is None:
        bank = np.random.default_rng(0x5EED).standard_normal((2 * size, 2 * size, 3), dtype=np.float32)
        _NOISE_BANK[size] = bank
    return bank


def render_identity_image(identity, index, seed=0, image_size=112, *, num_blobs=8,
                          blob_sigma=(4.0, 12.0), blob_amplitude=0.55, part_jitter=0.0,
                          part_scale_jitter=0.0, rotation=25.0,
                          shift=8.0, scale_jitter=0.1, colour_jitter=0.3, brightness=0.25,
                          num_distractors=(2, 5), distractor_sigma=(3.0, 10.0),
                          distractor_amplitude=0.5, occluder_prob=0.3,
                          occluder_size=(0.2, 0.45), blur_sigma=(0.0, 1.2), noise_std=0.04):
    """Render image ``index`` of ``identity``: (image_size, image_size, 3) uint8 RGB.

    Arguments are those of :class:`SyntheticIdentities` (see there); ``identity`` is the
    global identity number (offset included).
    """
    s = int(image_size)
    id_rng = np.random.default_rng([int(seed), _TAG_IDENTITY, int(identity)])
    img_rng = np.random.default_rng([int(seed), _TAG_IMAGE, int(identity), int(index)])

    # The blobs are smooth, so they are drawn on a half-resolution canvas (4x fewer pixels
    # to evaluate) and the pose warp upsamples to full size in the same interpolation.
    half = max(8, s // 2)
    up = s / float(half)

    # Identity structure: a neutral grey canvas plus the identity's blobs, kept inside
    # the central region so pose jitter does not push them off the image.
    canvas = np.full((half, half, 3), 0.5, dtype=np.float32)
    parts = _blob_params(id_rng, int(num_blobs), 0.22, 0.78, blob_sigma, blob_amplitude, half)
    # Parts move a little on their own from image to image (expression, not pose): the
    # identity is the configuration, not an exact pixel pattern.
    pj_lo, pj_hi = _range(part_jitter, 'part_jitter', symmetric=True)
    ps_lo, ps_hi = _range(part_scale_jitter, 'part_scale_jitter', symmetric=True)
    n = len(parts)
    if pj_lo != pj_hi:  # no draws when off, so the other nuisances keep their random streams
        parts[:, 0:2] += img_rng.uniform(pj_lo, pj_hi, size=(n, 2)) * (half / 112.0)
    if ps_lo != ps_hi:
        parts[:, 2:4] *= 1.0 + img_rng.uniform(ps_lo, ps_hi, size=(n, 2))
    _draw_blobs(canvas, parts)

    # Distractors: blobs that belong to no identity, anywhere on the image. Drawn before
    # the warp, they land at a uniformly random place all the same.
    d_lo, d_hi = (num_distractors, num_distractors) if np.isscalar(num_distractors) \
        else (int(num_distractors[0]), int(num_distractors[1]))
    n_distract = int(img_rng.integers(d_lo, d_hi + 1))
    _draw_blobs(canvas, _blob_params(img_rng, n_distract, 0.0, 1.0, distractor_sigma,
                                     distractor_amplitude, half))

    # Pose: similarity transform about the centre (degrees, relative scale, pixels).
    rot_lo, rot_hi = _range(rotation, 'rotation', symmetric=True)
    sc_lo, sc_hi = _range(scale_jitter, 'scale_jitter', symmetric=True)
    sh_lo, sh_hi = _range(shift, 'shift', symmetric=True)
    angle = img_rng.uniform(rot_lo, rot_hi)
    scale = 1.0 + img_rng.uniform(sc_lo, sc_hi)
    tx, ty = img_rng.uniform(sh_lo, sh_hi, size=2) * (s / 112.0)
    m = cv2.getRotationMatrix2D((half / 2.0, half / 2.0), angle, scale * up)
    m[:, 2] += (s / 2.0 - half / 2.0 + tx, s / 2.0 - half / 2.0 + ty)
    img = cv2.warpAffine(canvas, m, (s, s), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=(0.5, 0.5, 0.5))

    # Illumination: per-channel gain and offset (colour casts, not only brightness).
    cj_lo, cj_hi = _range(colour_jitter, 'colour_jitter', symmetric=True)
    br_lo, br_hi = _range(brightness, 'brightness', symmetric=True)
    gain = 1.0 + img_rng.uniform(cj_lo, cj_hi, size=3)
    offset = img_rng.uniform(br_lo, br_hi, size=3)
    img = (img - 0.5) * gain.astype(np.float32) + (0.5 + offset).astype(np.float32)

    # Occluder: a flat rectangle of random colour (hands, glasses, hair).
    if img_rng.random() < float(occluder_prob):
        oc_lo, oc_hi = _range(occluder_size, 'occluder_size', symmetric=False)
        ow, oh = (img_rng.uniform(oc_lo, oc_hi, size=2) * s).astype(int)
        ox = int(img_rng.integers(0, max(1, s - ow + 1)))
        oy = int(img_rng.integers(0, max(1, s - oh + 1)))
        img[oy:oy + oh, ox:ox + ow] = img_rng.uniform(0.0, 1.0, size=3).astype(np.float32)

    b_lo, b_hi = _range(blur_sigma, 'blur_sigma', symmetric=False)
    sigma = img_rng.uniform(b_lo, b_hi)
    if sigma > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), sigmaX=sigma)

    if noise_std > 0:
        bank = _noise_bank(s)
        oy, ox = img_rng.integers(0, s + 1, size=2)
        noise = bank[oy:oy + s, ox:ox + s]
        if img_rng.random() < 0.5:
            noise = noise[::-1]
        img += noise * np.float32(noise_std)
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


@DATASETS.register_module()
class SyntheticIdentities(BaseFaceDataset):
    """Procedural identities: ``num_classes * images_per_class`` images made on demand.

    Sample ``i`` is image ``i % images_per_class`` of local class ``i // images_per_class``;
    its pixels depend only on ``(seed, identity_offset + class, image index)`` and the knobs.
    With the defaults, raw pixels verify 1000 held-out pairs at 0.585 (10-fold; 0.865 once
    each image's channels are standardized, which undoes the colour casts); docs/dataset.md
    lists the floors of other knob settings. Rendering costs about 1.5 ms CPU per 112 px image.

    Args:
        num_classes: number of identities (labels 0..num_classes-1).
        images_per_class: images per identity.
        image_size: side of the square image in pixels (112 for the model input).
        seed: seed of the whole identity universe; same seed + identity = same structure.
        identity_offset: first global identity number. Held-out sets for verification use
            an offset past the training identities (e.g. 1_000_000) so they are disjoint.
        pipeline: list of transform configs (TRANSFORMS) applied to (img, label) results.
        cache: keep every rendered image (before the pipeline) in memory, so epochs after
            the first cost no rendering: ``len * image_size**2 * 3`` bytes per process
            (8000 images at 112 px: 301 MB). Pixels are the same either way.
        num_blobs: identity blobs per identity (more = richer, harder-to-memorise identity).
        blob_sigma: (min, max) blob axis std in pixels at 112 px.
        blob_amplitude: max per-channel blob amplitude, in [0, 1] image units.
        part_jitter: per-image shift of each identity blob on its own, pixels at 112 px,
            uniform in [-p, p] per axis (expression-like change of the configuration).
        part_scale_jitter: per-image relative change of each identity blob's size, [-q, q].
        rotation: in-plane rotation in degrees, uniform in [-r, r] (or a (lo, hi) pair).
        shift: translation in pixels at 112 px, uniform in [-s, s] per axis.
        scale_jitter: relative scale change, uniform in [-j, j].
        colour_jitter: per-channel gain change, uniform in [-c, c] (1 +- c multiplies contrast).
        brightness: per-channel offset, uniform in [-b, b] image units.
        num_distractors: (min, max) count of per-image blobs that belong to no identity.
        distractor_sigma: (min, max) distractor blob std in pixels at 112 px.
        distractor_amplitude: max per-channel distractor amplitude, image units.
        occluder_prob: probability of a flat random-colour rectangle.
        occluder_size: (min, max) side of the rectangle as a fraction of the image side.
        blur_sigma: (min, max) Gaussian blur std in pixels (below 0.3 means no blur).
        noise_std: std of additive Gaussian pixel noise, image units (255 = 1).
    """

    KNOBS = ('num_blobs', 'blob_sigma', 'blob_amplitude', 'part_jitter', 'part_scale_jitter', 'rotation',
             'shift', 'scale_jitter',
             'colour_jitter', 'brightness', 'num_distractors', 'distractor_sigma',
             'distractor_amplitude', 'occluder_prob', 'occluder_size', 'blur_sigma', 'noise_std')

    def __init__(self, num_classes, images_per_class, image_size=112, seed=0, identity_offset=0,
                 pipeline=None, cache=False, **knobs):
        if int(num_classes) < 1 or int(images_per_class) < 1:
            raise ValueError(f'num_classes and images_per_class must be >= 1, '
                             f'got {num_classes!r} and {images_per_class!r}')
        unknown = sorted(set(knobs) - set(self.KNOBS))
        if unknown:
            raise TypeError(f'SyntheticIdentities got unknown knob(s) {unknown}; '
                            f'known knobs: {", ".join(self.KNOBS)}')
        self.num_classes = int(num_classes)
        self.images_per_class = int(images_per_class)
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.identity_offset = int(identity_offset)
        self.knobs = dict(knobs)
        self._cache = {} if cache else None
        # Fail at construction, not mid-epoch, on a malformed knob.
        render_identity_image(self.identity_offset, 0, self.seed, 16, **self.knobs)
        super().__init__(pipeline)

    def __len__(self):
        return self.num_classes * self.images_per_class

    def get_label(self, idx):
        """Local class label of sample ``idx`` without rendering it."""
        if not 0 <= idx < len(self):
            raise IndexError(f'SyntheticIdentities index {idx} out of range [0, {len(self)})')
        return idx // self.images_per_class

    def indices_by_class(self):
        """{label: int64 sample indices}: contiguous ranges, computed without rendering."""
        n = self.images_per_class
        return {c: np.arange(c * n, (c + 1) * n, dtype=np.int64) for c in range(self.num_classes)}

    def get_image(self, idx):
        """(image_size, image_size, 3) uint8 RGB of sample ``idx``, before the pipeline."""
        label = self.get_label(idx)
        if self._cache is not None:
            img = self._cache.get(idx)
            if img is not None:
                return img
        img = render_identity_image(self.identity_offset + label, idx % self.images_per_class,
                                    self.seed, self.image_size, **self.knobs)
        if self._cache is not None:
            img.setflags(write=False)  # shared by every later epoch: transforms must copy
            self._cache[idx] = img
        return img

    def __repr__(self):
        return (f'SyntheticIdentities(num_classes={self.num_classes}, images_per_class='
                f'{self.images_per_class}, image_size={self.image_size}, seed={self.seed}, '
                f'identity_offset={self.identity_offset}, knobs={self.knobs})')
