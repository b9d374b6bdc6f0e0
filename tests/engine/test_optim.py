import numpy as np
import pytest

import mindspore as ms
from mindspore import nn, ops

from engine_tiny import TinyRecognizer
from facekit.engine.amp import LossScaleConfig
from facekit.engine.optim import AdamW, SGD, build_optimizer, get_lr, set_lr
from facekit.engine.train_step import TrainStep


@pytest.fixture(autouse=True)
def graph_mode():
    ms.set_context(mode=ms.GRAPH_MODE)


def test_groups_reach_the_optimizer():
    net = TinyRecognizer()
    opt = SGD(net, lr=0.1, weight_decay=5e-4, head_lr_mult=10.0)
    names = [p.name for p in opt.parameters]
    decayed = {n for n, flag in zip(names, opt.decay_flags) if flag}
    # only >= 2-d weights decay; bias, BN gamma/beta and the PReLU slope do not
    assert decayed == {'backbone.0.weight', 'head.weight'}
    wd = dict(zip(names, (float(w.asnumpy()) for w in opt.weight_decay)))
    assert wd['backbone.1.gamma'] == 0.0 and wd['backbone.2.w'] == 0.0 and wd['backbone.0.bias'] == 0.0
    assert wd['head.weight'] == pytest.approx(5e-4)
    lrs = dict(zip(names, (float(p.asnumpy()) for p in opt.learning_rate)))
    assert lrs['head.weight'] == pytest.approx(1.0) and lrs['backbone.0.weight'] == pytest.approx(0.1)
    set_lr(opt, 0.02)
    lrs = dict(zip(names, (float(p.asnumpy()) for p in opt.learning_rate)))
    assert lrs['head.weight'] == pytest.approx(0.2) and lrs['backbone.1.beta'] == pytest.approx(0.02)
    assert get_lr(opt) == pytest.approx([0.02, 0.02, 0.2])


def test_no_decay_switch_off_decays_everything():
    opt = SGD(TinyRecognizer(), lr=0.1, weight_decay=1e-3, no_decay_norm_bias=False)
    assert all(opt.decay_flags)
    assert [g['name'] for g in opt.facekit_groups] == ['backbone_decay', 'head_decay']


def test_build_optimizer_errors_name_the_registry():
    with pytest.raises(KeyError, match='SGD'):
        build_optimizer(dict(type='SDG', lr=0.1), TinyRecognizer())
    with pytest.raises(ValueError, match="'type'"):
        build_optimizer(dict(lr=0.1), TinyRecognizer())


class Linear2(nn.Cell):
    """loss = sum(H @ (W @ x + b)): gradients by hand are dW = (H^T 1) x^T, db = H^T 1, dH = 1 (Wx+b)^T."""

    def __init__(self, W, b, H):
        super().__init__()
        self.backbone = nn.Dense(W.shape[1], W.shape[0], weight_init=ms.Tensor(W), bias_init=ms.Tensor(b))
        self.head = nn.Dense(H.shape[1], H.shape[0], weight_init=ms.Tensor(H), has_bias=False)

    def construct(self, img, label):
        return ops.reduce_sum(self.head(self.backbone(img)))


def _hand_grads(W, b, H, x):
    ones = np.ones(H.shape[0], np.float64)
    gW = np.outer(H.T @ ones, x)
    gb = H.T @ ones
    gH = np.outer(ones, W @ x + b)
    return gW, gb, gH


def _setup():
    rng = np.random.default_rng(3)
    W = rng.normal(size=(3, 2)).astype(np.float32)
    b = rng.normal(size=3).astype(np.float32)
    H = rng.normal(size=(2, 3)).astype(np.float32)
    x = rng.normal(size=2).astype(np.float32)
    return W, b, H, x


def test_sgd_momentum_weight_decay_head_mult_two_steps_by_hand():
    W, b, H, x = _setup()
    net = Linear2(W, b, H)
    lr, wd, mom, mult = 0.1, 0.01, 0.9, 3.0
    opt = SGD(net, lr=lr, momentum=mom, weight_decay=wd, head_lr_mult=mult)
    step = TrainStep(net, opt, LossScaleConfig('none'))
    P = {'W': W.astype(np.float64), 'b': b.astype(np.float64), 'H': H.astype(np.float64)}
    buf = {k: np.zeros_like(v) for k, v in P.items()}
    for _ in range(2):
        step(ms.Tensor(x[None]), ms.Tensor(np.zeros(1, np.int32)), ms.Tensor(np.float32(lr)))
        g = dict(zip('WbH', _hand_grads(P['W'], P['b'], P['H'], x)))
        for k in P:
            d = g[k] + (wd * P[k] if k != 'b' else 0.0)   # bias is in the no-decay group
            buf[k] = mom * buf[k] + d
            P[k] = P[k] - (lr * mult if k == 'H' else lr) * buf[k]
    np.testing.assert_allclose(net.backbone.weight.asnumpy(), P['W'], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.backbone.bias.asnumpy(), P['b'], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.head.weight.asnumpy(), P['H'], rtol=1e-5, atol=1e-6)


def test_adamw_matches_torch_formula_two_steps():
    W, b, H, x = _setup()
    net = Linear2(W, b, H)
    lr, wd, b1, b2, eps = 0.01, 0.1, 0.9, 0.999, 1e-8
    opt = AdamW(net, lr=lr, weight_decay=wd, betas=(b1, b2), eps=eps)
    step = TrainStep(net, opt, LossScaleConfig('none'))
    P = {'W': W.astype(np.float64), 'b': b.astype(np.float64), 'H': H.astype(np.float64)}
    m = {k: np.zeros_like(v) for k, v in P.items()}
    v = {k: np.zeros_like(v) for k, v in P.items()}
    for t in (1, 2):
        step(ms.Tensor(x[None]), ms.Tensor(np.zeros(1, np.int32)), ms.Tensor(np.float32(lr)))
        g = dict(zip('WbH', _hand_grads(P['W'], P['b'], P['H'], x)))
        for k in P:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
            upd = (m[k] / (1 - b1 ** t)) / (np.sqrt(v[k] / (1 - b2 ** t)) + eps)
            decay = wd * P[k] if k != 'b' else 0.0
            P[k] = P[k] - lr * (upd + decay)
    np.testing.assert_allclose(net.backbone.weight.asnumpy(), P['W'], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.backbone.bias.asnumpy(), P['b'], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.head.weight.asnumpy(), P['H'], rtol=1e-5, atol=1e-6)
