import numpy as np
import pytest

from facekit.datasets import SyntheticIdentities, make_verification_bin
from facekit.evaluation.floor import raw_pixel_floor
from facekit.datasets.synthetic import render_identity_image
from facekit.registry import DATASETS


def test_shapes_labels_and_determinism():
    ds = SyntheticIdentities(num_classes=3, images_per_class=4, seed=7)
    assert len(ds) == 12
    img, label = ds[5]
    assert img.shape == (112, 112, 3) and img.dtype == np.uint8
    assert label == 1
    # same (seed, identity, index) -> same pixels, from a fresh object and in any order
    again = SyntheticIdentities(num_classes=3, images_per_class=4, seed=7)
    assert np.array_equal(again[5][0], img)
    assert np.array_equal(ds[-7][0], img)
    # a different image index or seed changes the pixels
    assert not np.array_equal(ds[4][0], img)
    assert not np.array_equal(SyntheticIdentities(3, 4, seed=8)[5][0], img)


def test_identity_offset_gives_the_global_identity():
    base = SyntheticIdentities(num_classes=10, images_per_class=2, seed=0)
    held = SyntheticIdentities(num_classes=2, images_per_class=2, seed=0, identity_offset=8)
    # local class 0 of the offset set is global identity 8 = class 8 of the base set
    assert np.array_equal(held[1][0], base[17][0])
    assert held[1][1] == 0
    assert np.array_equal(render_identity_image(8, 1, seed=0), base[17][0])


def test_identity_structure_is_shared_across_images():
    # With every per-image nuisance off, two images of one identity are identical and
    # two identities differ: the identity alone decides the pixels.
    quiet = dict(rotation=0, shift=0, scale_jitter=0, colour_jitter=0, brightness=0,
                 num_distractors=0, occluder_prob=0, blur_sigma=0, noise_std=0)
    ds = SyntheticIdentities(2, 2, seed=3, **quiet)
    assert np.array_equal(ds[0][0], ds[1][0])
    assert np.abs(ds[0][0].astype(int) - ds[2][0].astype(int)).max() > 30


def test_knobs_change_pixels_and_unknown_knob_is_named():
    a = SyntheticIdentities(1, 1, seed=0)[0][0]
    b = SyntheticIdentities(1, 1, seed=0, noise_std=0.0)[0][0]
    assert not np.array_equal(a, b)
    with pytest.raises(TypeError, match='rotaton'):
        SyntheticIdentities(1, 1, rotaton=3)
    with pytest.raises(ValueError, match='shift'):
        SyntheticIdentities(1, 1, shift=(3, 1))


def test_registered_and_image_size():
    ds = DATASETS.build(dict(type='SyntheticIdentities', num_classes=2, images_per_class=1, image_size=64))
    assert ds[1][0].shape == (64, 64, 3)


def test_pipeline_output():
    ds = SyntheticIdentities(2, 2, pipeline=[dict(type='Normalize'), dict(type='ToCHW')])
    img, label = ds[3]
    assert img.shape == (3, 112, 112) and img.dtype == np.float32 and label == 1
    raw = SyntheticIdentities(2, 2).get_image(3)
    np.testing.assert_allclose(img[:, 10, 20], (raw[10, 20] / 255.0 - 0.5) / 0.5, atol=1e-6)


def test_raw_pixel_floor_default_knobs_is_low():
    # DESIGN.md: raw pixels must not verify held-out identities (floor about 0.75 or less).
    held = SyntheticIdentities(60, 6, seed=0, identity_offset=1_000_000)
    pairs = make_verification_bin(held, 300, seed=1, img_format='.png')
    floor = raw_pixel_floor(pairs)
    assert 0.5 <= floor['accuracy'] <= 0.75, floor


def test_raw_pixel_floor_is_high_without_nuisances():
    # The same measurement must be able to report an easy set as easy.
    quiet = dict(rotation=0, shift=0, scale_jitter=0, colour_jitter=0, brightness=0,
                 num_distractors=0, occluder_prob=0, blur_sigma=0, noise_std=0.02)
    held = SyntheticIdentities(40, 4, seed=0, identity_offset=1_000_000, **quiet)
    floor = raw_pixel_floor(make_verification_bin(held, 200, seed=1, img_format='.png'))
    assert floor['accuracy'] >= 0.97, floor


def test_part_jitter_moves_parts_but_keeps_other_streams():
    quiet = dict(rotation=0, shift=0, scale_jitter=0, colour_jitter=0, brightness=0,
                 num_distractors=0, occluder_prob=0, blur_sigma=0, noise_std=0)
    ds = SyntheticIdentities(1, 2, seed=3, part_jitter=4, **quiet)
    a, b = ds[0][0].astype(int), ds[1][0].astype(int)
    assert np.abs(a - b).max() > 10            # the parts moved between the two images
    # off by default: same pixels as passing 0 explicitly (no extra random draws)
    assert np.array_equal(SyntheticIdentities(2, 2, seed=1)[3][0],
                          SyntheticIdentities(2, 2, seed=1, part_jitter=0, part_scale_jitter=0)[3][0])


def test_cache_same_pixels_and_loader_accepts_read_only_images():
    from facekit.datasets import build_dataloader
    cached = SyntheticIdentities(3, 2, image_size=32, cache=True)
    plain = SyntheticIdentities(3, 2, image_size=32)
    first = cached.get_image(4)
    assert cached.get_image(4) is first and np.array_equal(first, plain.get_image(4))
    cfg = dict(batch_size=3, shuffle=False, dataset=SyntheticIdentities(
        3, 2, image_size=32, cache=True, pipeline=[dict(type='RandomHorizontalFlip', prob=1.0),
                                                  dict(type='Normalize'), dict(type='ToCHW')]))
    for _ in range(2):  # second pass is served from the cache
        img, label = next(iter(build_dataloader(cfg)))
        np.testing.assert_allclose(img[1], plain.get_image(1)[:, ::-1].transpose(2, 0, 1) / 127.5 - 1, atol=1e-6)
