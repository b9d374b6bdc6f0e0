import cv2
import numpy as np
import pytest

from facekit.datasets import ShardedShuffleSampler, SyntheticIdentities, build_dataloader
from facekit.datasets.transforms import Compose
from facekit.registry import TRANSFORMS


def _img():
    return np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)


def test_normalize_and_chw_by_hand():
    out, label = Compose([dict(type='Normalize'), dict(type='ToCHW')])(_img(), 3)
    assert out.shape == (3, 4, 6) and out.dtype == np.float32 and label == 3
    # pixel (1, 2) channel 1 holds 1*18 + 2*3 + 1 = 25
    assert out[1, 1, 2] == pytest.approx((25 / 255 - 0.5) / 0.5)
    assert out.min() >= -1 and out.max() <= 1


def test_decode_and_resize():
    rgb = np.zeros((10, 20, 3), np.uint8)
    rgb[..., 0] = 200
    png = cv2.imencode('.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
    out, _ = Compose([dict(type='DecodeImage'), dict(type='Resize', size=(5, 7))])(png, 0)
    assert out.shape == (5, 7, 3) and out[2, 3].tolist() == [200, 0, 0]
    with pytest.raises(ValueError, match='could not decode'):
        TRANSFORMS.build(dict(type='DecodeImage'))(b'garbage')


@pytest.mark.parametrize('cfg', [dict(type='RandomHorizontalFlip', prob=1.0),
                                 dict(type='RandomGrayscale', prob=1.0),
                                 dict(type='RandomGaussianBlur', prob=1.0),
                                 dict(type='RandomDownUpResize', prob=1.0, min_size=2),
                                 dict(type='ColorJitter', prob=1.0)])
def test_random_transforms_keep_shape_and_act(cfg):
    img = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    t = TRANSFORMS.build(cfg)
    out = t(img)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert not np.array_equal(out, img)
    assert np.array_equal(TRANSFORMS.build(dict(cfg, prob=0.0))(img), img)


def test_flip_and_grey_exact():
    img = _img()
    assert np.array_equal(TRANSFORMS.build(dict(type='RandomHorizontalFlip', prob=1.0))(img), img[:, ::-1])
    g = TRANSFORMS.build(dict(type='RandomGrayscale', prob=1.0))(img)
    expect = np.round(img.astype(float) @ [0.299, 0.587, 0.114])
    assert np.abs(g[..., 0] - expect).max() <= 1 and np.array_equal(g[..., 0], g[..., 2])


def test_sampler_seeded_sharded_by_hand():
    s = ShardedShuffleSampler(5, shuffle=True, seed=3, rank=1, world_size=2)
    perm = np.random.default_rng([3, 0]).permutation(5)
    padded = np.r_[perm, perm[:1]]           # 5 -> 6 so both ranks get 3
    assert list(s) == padded[1::2].tolist()
    # the next pass is epoch 1: a new permutation, padded and strided the same way
    perm1 = np.random.default_rng([3, 1]).permutation(5)
    assert list(s) == [perm1[1], perm1[3], perm1[0]]
    both = [ShardedShuffleSampler(7, seed=0, rank=r, world_size=3).indices(4) for r in range(3)]
    assert all(len(b) == 3 for b in both)
    assert set(np.concatenate(both)) == set(range(7))
    assert ShardedShuffleSampler(4, shuffle=False).indices(9).tolist() == [0, 1, 2, 3]


def test_dataloader_batches_and_order():
    cfg = dict(batch_size=4, num_workers=2, python_multiprocessing=False, shuffle=True, seed=5,
               dataset=dict(type='SyntheticIdentities', num_classes=5, images_per_class=2, image_size=16,
                            pipeline=[dict(type='Normalize'), dict(type='ToCHW')]))
    loader = build_dataloader(cfg, rank=0, world_size=1)
    assert len(loader) == 2          # 10 samples, drop_remainder
    batches = list(loader)
    assert len(batches) == 2
    img, label = batches[0]
    assert img.shape == (4, 3, 16, 16) and img.dtype == np.float32 and label.dtype == np.int32
    order = np.random.default_rng([5, 0]).permutation(10)[:8]
    assert np.concatenate([b[1] for b in batches]).tolist() == (order // 2).tolist()
    ds = SyntheticIdentities(5, 2, image_size=16)
    np.testing.assert_allclose(img[1], ds.get_image(int(order[1])).transpose(2, 0, 1) / 127.5 - 1, atol=1e-6)


def test_dataloader_shards_disjoint():
    cfg = dict(batch_size=3, num_workers=1, shuffle=True, seed=1,
               dataset=dict(type='SyntheticIdentities', num_classes=6, images_per_class=1, image_size=8))
    seen = []
    for rank in range(2):
        loader = build_dataloader(cfg, rank=rank, world_size=2)
        for _, label in loader:
            seen.extend(label.tolist())
    assert sorted(seen) == list(range(6))


def test_dataloader_rejects_uint8_hwc_and_unknown_keys():
    with pytest.raises(KeyError, match='num_wrkers'):
        build_dataloader(dict(batch_size=2, num_wrkers=2, dataset=dict(type='SyntheticIdentities',
                                                                        num_classes=2, images_per_class=2)))
    loader = build_dataloader(dict(batch_size=2, dataset=SyntheticIdentities(2, 2, image_size=8)))
    with pytest.raises(Exception, match='CHW float32'):
        next(iter(loader))


def test_dataloader_reshuffles_each_epoch_reproducibly():
    cfg = dict(batch_size=4, num_workers=1, seed=2,
               dataset=dict(type='SyntheticIdentities', num_classes=8, images_per_class=1, image_size=8))
    loader = build_dataloader(cfg)
    perm = [np.random.default_rng([2, e]).permutation(8).tolist() for e in range(4)]
    epochs = [np.concatenate([b[1] for b in loader]).tolist() for _ in range(3)]
    assert epochs == perm[:3]
    # an epoch left unfinished, then a resume at epoch 1: the orders still follow the sampler
    next(iter(loader))
    loader.set_epoch(1)
    assert np.concatenate([b[1] for b in loader]).tolist() == perm[1]
    assert np.concatenate([b[1] for b in loader]).tolist() == perm[2]
    loader.close()
