"""Backbones: parameter counts against the published figures, output shapes, ViT options, layers."""
import math

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn
from mindspore.nn.utils import no_init_parameters

import facekit  # noqa: F401
from facekit.models.backbones import PReLU, count_parameters, drop_path_scales
from facekit.registry import BACKBONES

# name -> (published parameter count, relative tolerance). DESIGN.md / the issue.
PUBLISHED = {
    'iresnet18': (24.0e6, 0.005), 'iresnet34': (34.1e6, 0.005), 'iresnet50': (43.6e6, 0.005),
    'iresnet100': (65.2e6, 0.005), 'iresnet200': (118.8e6, 0.005),
    'mobilefacenet': (2.06e6, 0.02),
    'vit_t': (19.1e6, 0.01), 'vit_s': (76.0e6, 0.01), 'vit_b': (113.8e6, 0.01), 'vit_l': (255.7e6, 0.01),
}


def build_shell(name, **kwargs):
    """Build without filling the weights (shapes only): counting 255M parameters needs no random numbers."""
    with no_init_parameters():
        return BACKBONES.build(dict(type=name, **kwargs))


@pytest.mark.parametrize('name', sorted(PUBLISHED))
def test_parameter_count_matches_published(name):
    expected, tol = PUBLISHED[name]
    assert count_parameters(build_shell(name)) == pytest.approx(expected, rel=tol)


def test_iresnet18_count_by_hand():
    # stem conv 3*64*9 + BN 2*64 + PReLU 64; each block: BN(in) + conv(in->c) + BN + PReLU + conv(c->c) + BN
    # + 1x1 projection conv + BN (first block of each stage); head BN2d(512) + Linear(25088->512, bias) + BN1d(512).
    total = 3 * 64 * 9 + 3 * 64
    cin = 64
    for c in (64, 128, 256, 512):
        for i in range(2):
            first = i == 0
            i_c = cin if first else c
            total += 2 * i_c + i_c * c * 9 + 2 * c + c + c * c * 9 + 2 * c
            if first:
                total += i_c * c + 2 * c
        cin = c
    total += 2 * 512 + 512 * 7 * 7 * 512 + 512 + 2 * 512
    assert count_parameters(build_shell('iresnet18')) == total


def test_mobilefacenet_large_is_wider_and_deeper():
    base = count_parameters(build_shell('mobilefacenet'))
    large = build_shell('mobilefacenet_large')
    assert count_parameters(large) > 2.5 * base
    assert len(large.layers) == 1 + 2 + 1 + 8 + 1 + 12 + 1 + 4


@pytest.mark.parametrize('name', ['iresnet18', 'mobilefacenet', 'vit_t'])
def test_output_shape_and_embedding_size(name):
    net = BACKBONES.build(dict(type=name, embedding_size=128))
    net.set_train(False)
    out = net(Tensor(np.random.RandomState(0).randn(2, 3, 112, 112).astype(np.float32)))
    assert out.shape == (2, 128) and out.dtype == ms.float32
    assert np.all(np.isfinite(out.asnumpy()))


def test_iresnet_reference_init_and_frozen_embedding_scale():
    net = BACKBONES.build(dict(type='iresnet18'))
    w = net.layer3[0].conv1.weight.asnumpy()
    assert w.std() == pytest.approx(0.1, rel=0.02)           # N(0, 0.1) convs
    assert not net.features.gamma.requires_grad              # BN1d scale fixed at 1
    assert np.all(net.features.gamma.asnumpy() == 1)
    assert net.prelu.w.asnumpy() == pytest.approx(0.25)


def tiny_vit(**kwargs):
    cfg = dict(type='VisionTransformer', img_size=36, patch_size=9, embed_dim=16, depth=3, num_heads=2,
               embedding_size=8)
    cfg.update(kwargs)
    return BACKBONES.build(cfg)


def test_vit_masking_and_drop_path_only_in_training():
    x = Tensor(np.random.RandomState(1).randn(4, 3, 36, 36).astype(np.float32))
    net = tiny_vit(mask_ratio=0.25, drop_path_rate=0.5)
    assert net.num_patches == 16 and net.len_keep == 12
    net.set_train(False)
    np.testing.assert_array_equal(net(x).asnumpy(), net(x).asnumpy())
    net.set_train(True)
    ms.set_seed(3)
    a, b = net(x).asnumpy(), net(x).asnumpy()
    assert not np.allclose(a, b)                              # random masks / dropped paths differ per call
    plain = tiny_vit(mask_ratio=0.0, drop_path_rate=0.0)
    plain.set_train(True)
    np.testing.assert_allclose(plain(x).asnumpy(), plain(x).asnumpy(), rtol=1e-6, atol=1e-6)


def test_vit_random_masking_keeps_a_subset_and_restores_order():
    net = tiny_vit(mask_ratio=0.25)
    tokens = np.random.RandomState(2).randn(3, 16, 16).astype(np.float32)
    kept, ids_restore = net.random_masking(Tensor(tokens))
    kept, ids_restore = kept.asnumpy(), ids_restore.asnumpy()
    assert kept.shape == (3, 12, 16)
    for i in range(3):
        assert sorted(ids_restore[i].tolist()) == list(range(16))
        # kept token j sits at shuffled position j; original token p is at shuffled position ids_restore[p]
        for p in range(16):
            if ids_restore[i, p] < 12:
                np.testing.assert_array_equal(kept[i, ids_restore[i, p]], tokens[i, p])


def test_vit_recompute_option_marks_every_block():
    assert all(blk._has_config_recompute for blk in build_shell('vit_b').blocks)
    assert not any(blk._has_config_recompute for blk in build_shell('vit_b', use_recompute=False).blocks)


class SquaredSum(nn.Cell):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def construct(self, x):
        return (self.net(x) ** 2).sum()


@pytest.mark.slow
def test_vit_recompute_gives_the_same_gradients_in_graph_mode():
    ms.set_context(mode=ms.GRAPH_MODE)
    x = Tensor(np.random.RandomState(4).randn(2, 3, 36, 36).astype(np.float32))
    grads = []
    for recompute in (True, False):
        net = tiny_vit(use_recompute=recompute)
        if grads:
            ms.load_param_into_net(net, {p.name: ms.Parameter(Tensor(v), name=p.name)
                                         for p, v in zip(net.get_parameters(), weights)})
        weights = [p.asnumpy() for p in net.get_parameters()]
        net.set_train(True)
        objective = SquaredSum(net)
        _, g = ms.value_and_grad(objective, None, net.trainable_params())(x)
        grads.append([v.asnumpy() for v in g])
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_prelu_matches_formula():
    act = PReLU(3, init=0.2)
    x = np.random.RandomState(5).randn(2, 3, 4, 4).astype(np.float32)
    np.testing.assert_allclose(act(Tensor(x)).asnumpy(), np.where(x > 0, x, 0.2 * x), rtol=1e-6)
    np.testing.assert_allclose(act(Tensor(x[:, :, 0, 0])).asnumpy(), np.where(x > 0, x, 0.2 * x)[:, :, 0, 0])


def test_drop_path_scales_drop_whole_samples_and_rescale():
    scales = drop_path_scales(Tensor(np.array([1.0, 0.5], np.float32)), (2, 400, 1, 1)).asnumpy()
    assert scales.shape == (2, 2, 400, 1, 1)
    assert np.all(scales[0] == 1.0)                           # keep probability 1: never dropped
    assert set(np.unique(scales[1]).tolist()) == {0.0, 2.0}   # dropped, or kept and scaled by 1/0.5
    assert 0.4 < (scales[1] == 0).mean() < 0.6


def test_vit_drop_path_is_per_sample_in_training():
    net = tiny_vit(drop_path_rate=0.9, depth=2)
    x = Tensor(np.random.RandomState(6).randn(8, 3, 36, 36).astype(np.float32))
    net.set_train(False)
    a = net(x).asnumpy()
    np.testing.assert_array_equal(a, net(x).asnumpy())
    net.set_train(True)
    ms.set_seed(7)
    assert not np.allclose(net(x).asnumpy(), net(x).asnumpy())


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match='four stages'):
        BACKBONES.build(dict(type='IResNet', layers=(1, 1, 1)))
    with pytest.raises(ValueError, match='mask_ratio'):
        tiny_vit(mask_ratio=1.0)
    with pytest.raises(ValueError, match='drop_path_rate'):
        tiny_vit(drop_path_rate=1.0)
    with pytest.raises(ValueError, match='num_heads'):
        tiny_vit(num_heads=3)
    assert math.isclose(count_parameters(build_shell('vit_t', embedding_size=256)),
                        count_parameters(build_shell('vit_t')) - 256 * 256 - 2 * 256)


def test_config_backbone_names_are_explicit_registered_constructors():
    # every backbone a base model config names is a `def <name>(**kwargs)` that grep finds in the model file
    import glob
    import inspect
    import os
    import re
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    names = set()
    for path in glob.glob(os.path.join(root, 'configs', '_base_', 'models', '*.py')):
        names |= set(re.findall(r"backbone=dict\(type='(\w+)'", open(path).read()))
    assert {'iresnet18', 'iresnet34', 'iresnet50', 'iresnet100', 'iresnet200', 'mobilefacenet',
            'mobilefacenet_large', 'vit_t', 'vit_s', 'vit_b', 'vit_l'} == names
    for name in names:
        fn = BACKBONES.get(name)
        assert inspect.isfunction(fn) and fn.__name__ == name
        assert f'def {name}(**kwargs):' in open(inspect.getsourcefile(fn)).read()


def test_variant_keyword_arguments_override_the_size_defaults():
    small = build_shell('mobilefacenet', blocks=(1, 1, 1, 1), scale=1)
    assert count_parameters(small) < count_parameters(build_shell('mobilefacenet'))
    vit = build_shell('vit_t', depth=2, mask_ratio=0.0)
    assert (vit.depth, vit.mask_ratio, vit.embed_dim) == (2, 0.0, 256)
