import numpy as np
import pytest

import mindspore as ms

from engine_tiny import TinyRecognizer
from facekit.engine.amp import LossScaleConfig, apply_amp, parse_loss_scale
from facekit.engine.optim import SGD
from facekit.engine.train_step import TrainStep


@pytest.fixture(autouse=True)
def graph_mode():
    ms.set_context(mode=ms.GRAPH_MODE)


LR1 = ms.Tensor(np.float32(1.0))


def _batch(seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(8, 4)) * scale).astype(np.float32)
    y = rng.integers(0, 3, 8).astype(np.int32)
    return ms.Tensor(x), ms.Tensor(y)


def _params(net):
    return {n: p.asnumpy().copy() for n, p in net.parameters_and_names()}


def _grads(net, x, y):
    grad_fn = ms.value_and_grad(net, None, net.trainable_params())
    _, grads = grad_fn(x, y)
    return {p.name: g.asnumpy() for p, g in zip(net.trainable_params(), grads)}


def test_clipping_applies_to_backbone_only():
    ms.set_seed(1)
    net = TinyRecognizer()
    x, y = _batch(scale=50.0)
    net.set_train(False)   # BN in eval so the hand gradient and the step see the same function
    g = _grads(net, x, y)
    before = _params(net)
    max_norm = 0.01
    opt = SGD(net, lr=1.0, momentum=0.0, weight_decay=0.0)
    step = TrainStep(net, opt, LossScaleConfig('none'), clip_grad_norm=max_norm)
    assert step.clipped_names == ['backbone.0.weight', 'backbone.0.bias', 'backbone.1.gamma',
                                  'backbone.1.beta', 'backbone.2.w']
    step(x, y, LR1)
    after = _params(net)
    bb = [n for n in g if n.startswith('backbone.')]
    norm = np.sqrt(sum((g[n] ** 2).sum() for n in bb))
    assert norm > max_norm * 10      # the test only means something if clipping is active
    for n in bb:
        np.testing.assert_allclose(before[n] - after[n], g[n] * max_norm / norm, rtol=1e-4, atol=1e-7)
    # the head moved by its full, unclipped gradient
    np.testing.assert_allclose(before['head.weight'] - after['head.weight'], g['head.weight'], rtol=1e-4, atol=1e-6)


def test_overflow_skips_the_step_and_dynamic_scale_adapts():
    ms.set_seed(2)
    net = TinyRecognizer()
    opt = SGD(net, lr=0.1)
    step = TrainStep(net, opt, LossScaleConfig('dynamic', init_scale=1024.0, factor=2.0, window=2))
    step.set_train()
    x, y = _batch()
    seen = []
    for _ in range(4):    # grows by the factor after every 2 clean steps
        loss, finite = step(x, y, LR1)
        assert bool(finite.asnumpy())
        seen.append(float(step.loss_scale.asnumpy()))
    assert seen == [1024.0, 2048.0, 2048.0, 4096.0]
    trainable = {p.name for p in net.trainable_params()}
    before = _params(net)
    bad = ms.Tensor(np.full((8, 4), np.inf, np.float32))
    loss, finite = step(bad, y, LR1)
    assert not bool(finite.asnumpy())
    assert float(step.loss_scale.asnumpy()) == 2048.0   # divided by the factor
    after = _params(net)
    for n in trainable:
        np.testing.assert_array_equal(before[n], after[n])


def test_loss_scale_does_not_change_the_update():
    x, y = _batch(3)
    results = []
    for ls in (LossScaleConfig('none'), LossScaleConfig('fixed', init_scale=4096.0)):
        ms.set_seed(5)
        net = TinyRecognizer()
        step = TrainStep(net, SGD(net, lr=0.5), ls)
        step.set_train()
        for _ in range(2):
            step(x, y, ms.Tensor(np.float32(0.5)))
        results.append(_params(net))
    for n in results[0]:
        np.testing.assert_allclose(results[0][n], results[1][n], rtol=1e-5, atol=1e-6)


def test_amp_and_loss_scale_parsing():
    net = TinyRecognizer()
    assert apply_amp(net, 'O0', 'CPU') is net
    with pytest.raises(ValueError, match='amp_level'):
        apply_amp(net, 'O2', 'CPU')
    with pytest.raises(ValueError, match='amp_level'):
        apply_amp(net, 'O5', 'GPU')
    assert parse_loss_scale(None).mode == 'none'
    assert parse_loss_scale(128).init_scale == 128.0
    assert parse_loss_scale(dict(mode='dynamic', window=10)).window == 10
    with pytest.raises(ValueError, match='loss_scale'):
        parse_loss_scale(dict(mode='dynamic', windw=10))


def test_lr_input_reaches_the_compiled_optimizer_every_step():
    """The lr is an input of the compiled step: changing it after compilation takes effect."""
    net = TinyRecognizer()
    opt = SGD(net, lr=0.3, momentum=0.0, weight_decay=0.0, head_lr_mult=2.0)
    step = TrainStep(net, opt, LossScaleConfig('none'))
    step.set_train()
    x, y = _batch(4)
    moved = []
    for lr in (0.0, 0.2, 0.0):
        w = net.head.weight.asnumpy().copy()
        step(x, y, ms.Tensor(np.float32(lr)))
        moved.append(float(np.abs(net.head.weight.asnumpy() - w).max()))
        lrs = sorted({round(float(p.asnumpy()), 6) for p in opt.learning_rate})
        assert lrs == sorted({round(lr, 6), round(2 * lr, 6)})
    assert moved[0] == 0.0 and moved[1] > 1e-4 and moved[2] == 0.0
