"""ViT attention against a NumPy transcription of multi-head self-attention on the fused qkv weight.

The attention projects q, k and v with row blocks of one ``attn.qkv.weight`` (3D, D) (the
reference's fused parameter); these tests pin the forward and the weight gradient to
softmax(q k^T / sqrt(hd)) v computed in NumPy from that same fused weight, so a wrong row block,
a lost bias or a misplaced scale fails.
"""
import numpy as np
import pytest

import mindspore as ms
from mindspore import ops

from facekit.models.backbones.vit import Attention

B, N, D, H = 2, 5, 8, 2


def numpy_attention(x, w_qkv, b_qkv, w_proj, b_proj):
    hd = D // H
    qkv = x @ w_qkv.T + (b_qkv if b_qkv is not None else 0.0)          # (B, N, 3D)
    q, k, v = (qkv[..., i * D:(i + 1) * D].reshape(B, N, H, hd).transpose(0, 2, 1, 3) for i in range(3))
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    attn = scores / scores.sum(-1, keepdims=True)
    out = (attn @ v).transpose(0, 2, 1, 3).reshape(B, N, D)
    return out @ w_proj.T + b_proj


def _cell(qkv_bias, rng):
    cell = Attention(D, H, qkv_bias=qkv_bias)
    for p in cell.get_parameters():
        p.set_data(ms.Tensor(rng.normal(0, 0.5, p.shape).astype(np.float32)))
    return cell


def _weights(cell, qkv_bias):
    get = {p.name: p.asnumpy().astype(np.float64) for p in cell.get_parameters()}
    names = sorted(get)
    pick = lambda suffix: get[[n for n in names if n.endswith(suffix)][0]]  # noqa: E731
    return (pick('qkv.weight'), pick('qkv.bias') if qkv_bias else None, pick('proj.weight'), pick('proj.bias'))


@pytest.mark.parametrize('qkv_bias', [False, True])
def test_forward_matches_numpy(qkv_bias):
    rng = np.random.default_rng(0)
    cell = _cell(qkv_bias, rng)
    x = rng.normal(size=(B, N, D)).astype(np.float32)
    got = cell(ms.Tensor(x)).asnumpy()
    want = numpy_attention(x.astype(np.float64), *_weights(cell, qkv_bias))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('qkv_bias', [False, True])
def test_qkv_weight_gradient_matches_finite_differences(qkv_bias):
    # d(sum(out * c))/d(qkv.weight) from MindSpore's autodiff against central differences of the
    # NumPy forward (float64) along one random direction per row block (q, k and v rows separately).
    rng = np.random.default_rng(1)
    cell = _cell(qkv_bias, rng)
    x = rng.normal(size=(B, N, D)).astype(np.float32)
    c = rng.normal(size=(B, N, D))
    qkv_w = [p for p in cell.trainable_params() if p.name.endswith('qkv.weight')][0]
    grad_fn = ms.grad(lambda inp: (cell(inp) * ms.Tensor(c.astype(np.float32))).sum(), grad_position=None,
                      weights=[qkv_w])
    g = grad_fn(ms.Tensor(x))[0].asnumpy().astype(np.float64)
    w_qkv, b_qkv, w_proj, b_proj = _weights(cell, qkv_bias)
    f = lambda w: float((numpy_attention(x.astype(np.float64), w, b_qkv, w_proj, b_proj) * c).sum())  # noqa: E731
    for block in range(3):
        direction = np.zeros_like(w_qkv)
        direction[block * D:(block + 1) * D] = rng.normal(size=(D, D))
        eps = 1e-5
        numeric = (f(w_qkv + eps * direction) - f(w_qkv - eps * direction)) / (2 * eps)
        analytic = float((g * direction).sum())
        assert analytic == pytest.approx(numeric, rel=2e-3, abs=1e-3), f'row block {block}'


def test_parameters_keep_the_fused_names_and_shapes():
    names = {p.name.split('.')[-2] + '.' + p.name.split('.')[-1]: p.shape for p in Attention(D, H).get_parameters()}
    assert names == {'qkv.weight': (3 * D, D), 'proj.weight': (D, D), 'proj.bias': (D,)}
