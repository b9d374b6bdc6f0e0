"""The faster-backward layers in facekit.models.backbones.layers against NumPy.

``LayerNorm`` replaces MindSpore's LayerNormGrad with a closed-form backward and ``Linear`` replaces
Dense's BiasAdd with a broadcast Add; both must stay the same function with the same gradients.
Gradients are checked against central finite differences of a float64 NumPy forward, so a wrong sign,
a missing term of the LayerNorm backward or a bias gradient summed over the wrong axis fails.
"""
import numpy as np
import pytest

import mindspore as ms
from mindspore import nn

from facekit.models.backbones.layers import LayerNorm, Linear


def numpy_layer_norm(x, gamma, beta, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


def _grads(cell, x, c):
    params = cell.trainable_params()
    fn = ms.grad(lambda inp: (cell(inp) * ms.Tensor(c.astype(np.float32))).sum(), grad_position=0, weights=params)
    dx, dw = fn(ms.Tensor(x.astype(np.float32)))
    return dx.asnumpy().astype(np.float64), [g.asnumpy().astype(np.float64) for g in dw]


def _numeric(f, value, rng, eps=1e-6):
    direction = rng.normal(size=value.shape)
    return direction, (f(value + eps * direction) - f(value - eps * direction)) / (2 * eps)


@pytest.mark.parametrize('shape, eps', [((3, 4, 6), 1e-5), ((5, 6), 1e-7)])
def test_layer_norm_forward_and_gradients(shape, eps):
    rng = np.random.default_rng(0)
    cell = LayerNorm(shape[-1], epsilon=eps)
    gamma, beta = rng.normal(1, 0.3, shape[-1]), rng.normal(0, 0.3, shape[-1])
    cell.gamma.set_data(ms.Tensor(gamma.astype(np.float32)))
    cell.beta.set_data(ms.Tensor(beta.astype(np.float32)))
    x = rng.normal(0.5, 2.0, size=shape)
    c = rng.normal(size=shape)
    got = cell(ms.Tensor(x.astype(np.float32))).asnumpy()
    np.testing.assert_allclose(got, numpy_layer_norm(x, gamma, beta, eps), rtol=1e-4, atol=1e-5)
    dx, (dgamma, dbeta) = _grads(cell, x, c)
    for value, analytic, f in (
            (x, dx, lambda v: (numpy_layer_norm(v, gamma, beta, eps) * c).sum()),
            (gamma, dgamma, lambda v: (numpy_layer_norm(x, v, beta, eps) * c).sum()),
            (beta, dbeta, lambda v: (numpy_layer_norm(x, gamma, v, eps) * c).sum())):
        direction, numeric = _numeric(f, value, rng)
        assert (analytic * direction).sum() == pytest.approx(numeric, rel=1e-3, abs=1e-4)


def test_layer_norm_keeps_nn_layernorm_parameters_and_epsilon():
    cell = LayerNorm(6, epsilon=1e-7)
    assert isinstance(cell, nn.LayerNorm)
    assert [(p.name, p.shape) for p in cell.get_parameters()] == [('gamma', (6,)), ('beta', (6,))]
    assert cell.epsilon == 1e-7


@pytest.mark.parametrize('has_bias', [True, False])
def test_linear_forward_and_gradients_on_3d_input(has_bias):
    rng = np.random.default_rng(1)
    cell = Linear(4, 3, has_bias=has_bias)
    w = rng.normal(size=(3, 4))
    b = rng.normal(size=3)
    cell.weight.set_data(ms.Tensor(w.astype(np.float32)))
    if has_bias:
        cell.bias.set_data(ms.Tensor(b.astype(np.float32)))
    x = rng.normal(size=(2, 5, 4))
    c = rng.normal(size=(2, 5, 3))
    fwd = lambda x_, w_, b_: x_ @ w_.T + (b_ if has_bias else 0.0)  # noqa: E731
    np.testing.assert_allclose(cell(ms.Tensor(x.astype(np.float32))).asnumpy(), fwd(x, w, b), rtol=1e-5, atol=1e-5)
    dx, grads = _grads(cell, x, c)
    np.testing.assert_allclose(dx, c @ w, rtol=1e-5, atol=1e-5)                            # dy W
    np.testing.assert_allclose(grads[0], c.reshape(-1, 3).T @ x.reshape(-1, 4), rtol=1e-5, atol=1e-5)  # dy^T x
    if has_bias:
        np.testing.assert_allclose(grads[1], c.sum((0, 1)), rtol=1e-5, atol=1e-5)         # sum of dy over rows
    assert isinstance(cell, nn.Dense)
    assert [p.name for p in cell.get_parameters()] == (['weight', 'bias'] if has_bias else ['weight'])
