"""docs/customize.md's loss, backbone and head examples run exactly as written and do what their text says."""
import os
import re
import types

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

import facekit  # noqa: F401
from doc_examples import customize_blocks
from facekit.registry import BACKBONES, HEADS, LOSSES, MODELS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REGISTRIES = {'LOSSES': LOSSES, 'BACKBONES': BACKBONES, 'HEADS': HEADS}


def run_example(code, name):
    """Execute a documented plugin module as written; its registrations replace earlier runs' (popped first)."""
    registered = re.findall(r'@(\w+)\.register_module\(\)\n(?:class|def) (\w+)', code)
    assert registered, 'the example registers nothing'
    for registry, obj in registered:
        REGISTRIES[registry].module_dict.pop(obj, None)
    module = types.ModuleType(name)
    exec(compile(code, name, 'exec'), module.__dict__)
    return module, [obj for _, obj in registered]


@pytest.fixture
def cleanup():
    names = []
    yield names
    for registry in REGISTRIES.values():
        for n in names:
            registry.module_dict.pop(n, None)


def np_ce(z, y):
    z = z - z.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]))


def test_loss_example_matches_its_formula(cleanup):
    code, config = customize_blocks('A loss')
    assert code.startswith('# my_plugins/linear_cosface.py')
    _, names = run_example(code, 'my_plugins.linear_cosface')
    cleanup.extend(names)
    assert names == ['LinearCosFaceLoss']
    loss = LOSSES.build(dict(type='LinearCosFaceLoss', s=32.0, m=0.3))
    rng = np.random.RandomState(0)
    cos = rng.uniform(-0.9, 0.9, (5, 6))
    labels = np.array([0, 5, 2, -1, 3], np.int32)     # -1: the class lives on another PartialFC rank
    value = float(loss(Tensor(cos.astype(np.float32)), Tensor(labels)).asnumpy())
    # the docstring's formula, s*(cos - m*(1-cos)/2) on the target; label -1 rows keep s*cos and add no target
    rows = np.flatnonzero(labels >= 0)
    z = cos.copy()
    z[rows, labels[rows]] = cos[rows, labels[rows]] - 0.3 * (1 - cos[rows, labels[rows]]) / 2
    z *= 32.0
    lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    target = np.zeros(5)
    target[rows] = z[rows, labels[rows]]
    assert value == pytest.approx(float(np.mean(lse - target)), rel=1e-5)
    assert value != pytest.approx(np_ce(32.0 * cos[rows], labels[rows]), rel=1e-3)   # the margin acts
    # the config block is the README's, which tests/foundation/test_readme.py trains from
    with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
        assert config in f.read()


def test_backbone_example_and_its_variant_give_embeddings(cleanup):
    (code,) = customize_blocks('A backbone')
    _, names = run_example(code, 'my_plugins.tinynet')
    cleanup.extend(names)
    assert names == ['TinyNet', 'tinynet_wide']
    x = Tensor(np.random.RandomState(1).randn(2, 3, 112, 112).astype(np.float32))
    for cfg, width in ((dict(type='TinyNet', embedding_size=16), 32), (dict(type='tinynet_wide', embedding_size=16), 64)):
        net = BACKBONES.build(cfg)
        net.set_train(False)
        out = net(x).asnumpy()
        assert out.shape == (2, 16) and np.all(np.isfinite(out))
        assert net.body[-1].in_channels == width


def test_head_example_gives_cosine_logits_and_trains_in_a_model(cleanup):
    (code,) = customize_blocks('A head')
    _, names = run_example(code, 'my_plugins.cosine_head')
    cleanup.extend(names)
    assert names == ['MyCosineHead']
    head = HEADS.build(dict(type='MyCosineHead', embedding_size=8, num_classes=5))
    emb = np.random.RandomState(2).randn(3, 8).astype(np.float32)
    labels = np.array([4, 0, 2], np.int32)
    logits, out_labels = head(Tensor(emb), Tensor(labels))
    w = head.weight.asnumpy()
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    assert logits.shape == (3, 5)
    np.testing.assert_allclose(logits.asnumpy(), unit(emb) @ unit(w).T, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out_labels.asnumpy(), labels)
    assert not head.is_sharded and head.shard_slice() == (0, 5)

    ms.set_context(mode=ms.PYNATIVE_MODE)
    backbone = ms.nn.Dense(6, 8)
    model = MODELS.build(dict(type='FaceRecognizer', backbone=backbone, loss=dict(type='ArcFaceLoss'),
                              head=dict(type='MyCosineHead', embedding_size=8, num_classes=5)))
    value = model(Tensor(np.random.RandomState(3).randn(3, 6).astype(np.float32)), Tensor(labels))
    assert np.isfinite(float(value.asnumpy()))
