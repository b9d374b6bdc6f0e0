"""Margin losses against NumPy references written from the papers' formulas (values and gradients)."""
import math

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

import facekit  # noqa: F401
from facekit.registry import LOSSES

B, C = 6, 7


def np_ce(logits, labels):
    """Mean softmax cross-entropy, float64."""
    z = logits - logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(lse - z[np.arange(len(labels)), labels]))


def np_combined_target(c, m1, m2, m3, easy=False):
    """cos(m1*theta+m2)-m3 with the documented fallback past theta_th = (pi-m2)/m1."""
    c = np.clip(c, -1 + 1e-7, 1 - 1e-7)
    theta = np.arccos(c)
    phi = np.cos(m1 * theta + m2) - m3
    if easy:
        return np.where(c > 0, phi, c)
    if m1 == 1.0:
        if m2 == 0.0:
            return c - m3
        return np.where(theta < math.pi - m2, phi, c - m2 * math.sin(m2) - m3)
    theta_th = (math.pi - m2) / m1
    if theta_th >= math.pi:
        return phi
    return np.where(theta <= theta_th, phi, c - math.cos(theta_th) - 1 - m3)


def np_margin_loss(cos, labels, s, target_fn, filter_thr=0.0):
    cos = cos.copy()
    rows = np.arange(len(labels))
    if filter_thr > 0:
        mask = cos > filter_thr
        mask[rows, labels] = False
        cos[mask] = 0.0
    logits = cos.copy()
    logits[rows, labels] = target_fn(cos[rows, labels])
    return np_ce(s * logits, labels)


def fd_grad(f, x, h=1e-6):
    """Central finite differences of scalar f at x (float64)."""
    g = np.zeros_like(x)
    it = np.nditer(x, flags=['multi_index'])
    for _ in it:
        i = it.multi_index
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        g[i] = (f(xp) - f(xm)) / (2 * h)
    return g


def make_cos(seed=0):
    """Cosines in (-1, 1) with targets spread over (0, pi), including theta near pi and labels at both class edges."""
    rng = np.random.RandomState(seed)
    cos = rng.uniform(-0.9, 0.9, size=(B, C))
    labels = np.array([0, C - 1, 3, 0, 5, C - 1], np.int32)
    rows = np.arange(B)
    # targets: easy, medium, hard, past pi - 0.5, very close to pi, and negative
    cos[rows, labels] = [0.8, 0.3, -0.2, -0.95, -0.9999, -0.6]
    return cos, labels


def ms_value_and_grad(loss, cos, labels, norms=None):
    args = [Tensor(cos.astype(np.float32)), Tensor(labels)]
    if norms is not None:
        args.append(Tensor(norms.astype(np.float32)))
    pos = (0, 2) if norms is not None else 0
    value, grads = ms.value_and_grad(loss, grad_position=pos)(*args)
    return float(value.asnumpy()), grads


COMBINED = [
    ('ArcFaceLoss', dict(), (1.0, 0.5, 0.0)),
    ('CosFaceLoss', dict(), (1.0, 0.0, 0.4)),
    ('SphereFaceLoss', dict(), (1.35, 0.0, 0.0)),
    ('CombinedMarginLoss', dict(m1=1.0, m2=0.3, m3=0.2), (1.0, 0.3, 0.2)),
    ('CombinedMarginLoss', dict(m1=0.9, m2=0.4, m3=0.15), (0.9, 0.4, 0.15)),
    ('CombinedMarginLoss', dict(m1=1.5, m2=0.2, m3=0.1), (1.5, 0.2, 0.1)),
    ('CombinedMarginLoss', dict(m1=0.8, m2=0.1, m3=0.0), (0.8, 0.1, 0.0)),
]


@pytest.mark.parametrize('name,kwargs,m', COMBINED)
def test_combined_margin_family_values_and_gradients(name, kwargs, m):
    cos, labels = make_cos()
    s = 64.0
    loss = LOSSES.build(dict(type=name, **kwargs))

    def ref(x):
        return np_margin_loss(x, labels, s, lambda c: np_combined_target(c, *m))

    value, grad = ms_value_and_grad(loss, cos, labels)
    assert value == pytest.approx(ref(cos), rel=1e-5, abs=1e-4)
    np.testing.assert_allclose(grad.asnumpy(), fd_grad(ref, cos), rtol=2e-3, atol=2e-4)


def test_arcface_true_gradient_is_not_straight_through():
    # d/dc cos(acos(c) + m) = cos m + c sin m / sqrt(1 - c^2); a straight-through margin would give 1.
    cos, labels = make_cos()
    _, grad = ms_value_and_grad(LOSSES.build(dict(type='ArcFaceLoss')), cos, labels)
    rows = np.arange(B)
    z = cos.copy()
    c = cos[rows, labels]
    z[rows, labels] = np_combined_target(c, 1.0, 0.5, 0.0)
    z *= 64
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dfdc = np.where(np.arccos(c) < math.pi - 0.5, math.cos(0.5) + c * math.sin(0.5) / np.sqrt(1 - c * c), 1.0)
    expected = 64 * (p[rows, labels] - 1) / B * dfdc
    np.testing.assert_allclose(grad.asnumpy()[rows, labels], expected, rtol=1e-3, atol=1e-6)


def test_fallback_region_and_easy_margin():
    cos = np.array([[-0.95, 0.1], [0.5, 0.1], [-0.3, 0.2]])
    labels = np.array([0, 0, 0], np.int32)
    for easy in (False, True):
        loss = LOSSES.build(dict(type='ArcFaceLoss', easy_margin=easy))

        def ref(x):
            return np_margin_loss(x, labels, 64.0, lambda c: np_combined_target(c, 1.0, 0.5, 0.0, easy))

        value, grad = ms_value_and_grad(loss, cos, labels)
        assert value == pytest.approx(ref(cos), rel=1e-5)
        np.testing.assert_allclose(grad.asnumpy(), fd_grad(ref, cos), rtol=2e-3, atol=2e-4)
    # the fallback itself: cos(theta) - m sin m at cos = -0.95 (theta > pi - m)
    from facekit.models.losses import combined_margin
    out = combined_margin(Tensor(np.array([-0.95], np.float32)), 1.0, 0.5, 0.0).asnumpy()
    assert out[0] == pytest.approx(-0.95 - 0.5 * math.sin(0.5), abs=1e-6)


def test_interclass_filtering_threshold():
    cos, labels = make_cos(1)
    thr = 0.4
    loss = LOSSES.build(dict(type='ArcFaceLoss', interclass_filtering_threshold=thr))

    def ref(x):
        return np_margin_loss(x, labels, 64.0, lambda c: np_combined_target(c, 1.0, 0.5, 0.0), thr)

    value, grad = ms_value_and_grad(loss, cos, labels)
    assert value == pytest.approx(ref(cos), rel=1e-5)
    assert value != pytest.approx(np_margin_loss(cos, labels, 64.0, lambda c: np_combined_target(c, 1.0, 0.5, 0.0)),
                                  rel=1e-3)
    np.testing.assert_allclose(grad.asnumpy(), fd_grad(ref, cos), rtol=2e-3, atol=2e-4)


def test_cross_entropy_loss_plain_logits():
    rng = np.random.RandomState(3)
    logits = rng.randn(B, C) * 3
    labels = np.array([0, 6, 2, 2, 1, 6], np.int32)
    value, grad = ms_value_and_grad(LOSSES.build(dict(type='CrossEntropyLoss')), logits, labels)
    assert value == pytest.approx(np_ce(logits, labels), rel=1e-6)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(B), labels] -= 1
    np.testing.assert_allclose(grad.asnumpy(), p / B, rtol=1e-4, atol=1e-7)


def np_curricular(cos, labels, t_old, s=64.0, m=0.5, alpha=0.01, t_fixed=None):
    """Huang et al. 2020: hard negatives c > cos(theta_y + m) become c * (t + c); returns (loss, t_new)."""
    rows = np.arange(len(labels))
    cy = cos[rows, labels]
    cos_theta_m = np.cos(np.arccos(np.clip(cy, -1, 1)) + m)
    t = alpha * cy.mean() + (1 - alpha) * t_old if t_fixed is None else t_fixed
    logits = cos.copy()
    hard = cos > cos_theta_m[:, None]
    logits[hard] = cos[hard] * (t + cos[hard])
    logits[rows, labels] = np_combined_target(cy, 1.0, m, 0.0)
    return np_ce(s * logits, labels), t


def test_curricular_face_values_state_and_gradient():
    cos, labels = make_cos(2)
    loss = LOSSES.build(dict(type='CurricularFaceLoss'))
    t = 0.0
    for step in range(2):  # the second call exercises the momentum state
        value, grad = ms_value_and_grad(loss, cos, labels)
        ref_value, t_new = np_curricular(cos, labels, t)
        assert value == pytest.approx(ref_value, rel=1e-5)
        fd = fd_grad(lambda x: np_curricular(x, labels, t, t_fixed=t_new)[0], cos)
        np.testing.assert_allclose(grad.asnumpy(), fd, rtol=2e-3, atol=2e-4)
        t = t_new
        assert float(loss.t.asnumpy()[0]) == pytest.approx(t, abs=1e-6)
        cos = np.clip(cos + 0.05, -0.99, 0.99)


def np_adaface(cos, labels, norms, mean_old=20.0, std_old=100.0, s=64.0, m=0.4, h=0.333, t_alpha=0.01, eps=1e-3):
    """Kim et al. 2022, written as in the paper's code (acos/cos over the whole matrix)."""
    n = np.clip(norms, 0.001, 100)
    mean = t_alpha * n.mean() + (1 - t_alpha) * mean_old
    std = t_alpha * n.std(ddof=1) + (1 - t_alpha) * std_old
    z = np.clip((n - mean) / (std + eps) * h, -1, 1)[:, None]
    onehot = np.zeros_like(cos)
    onehot[np.arange(len(labels)), labels] = 1
    c = np.clip(cos, -1 + eps, 1 - eps)
    theta = np.clip(np.arccos(c) + onehot * (-m * z), eps, math.pi - eps)
    logits = np.cos(theta) - onehot * (m + m * z)
    return np_ce(s * logits, labels), mean, std


def test_adaface_values_state_and_gradient():
    cos, labels = make_cos(4)
    norms = np.array([5.0, 12.0, 20.0, 33.0, 0.5, 60.0])
    loss = LOSSES.build(dict(type='AdaFaceLoss'))
    value, (g_cos, g_norm) = ms_value_and_grad(loss, cos, labels, norms)
    ref_value, mean, std = np_adaface(cos, labels, norms)
    assert value == pytest.approx(ref_value, rel=1e-5)
    np.testing.assert_allclose(g_cos.asnumpy(), fd_grad(lambda x: np_adaface(x, labels, norms)[0], cos),
                               rtol=2e-3, atol=2e-4)
    # norms only set the margin, never receive gradient (AdaFace detaches them)
    assert np.all(g_norm.asnumpy() == 0)
    assert float(loss.batch_mean.asnumpy()[0]) == pytest.approx(mean, rel=1e-6)
    assert float(loss.batch_std.asnumpy()[0]) == pytest.approx(std, rel=1e-6)
    # a second step uses the updated statistics
    value2, _ = ms_value_and_grad(loss, cos, labels, norms)
    assert value2 == pytest.approx(np_adaface(cos, labels, norms, mean, std)[0], rel=1e-5)


def np_magface(cos, labels, norms, s=64.0, l_a=10.0, u_a=110.0, l_m=0.45, u_m=0.8, lambda_g=35.0):
    """Meng et al. 2021: per-sample ArcFace margin m(a) plus lambda_g * mean(1/a + a/u_a^2)."""
    a = np.clip(norms, l_a, u_a)
    margin = (u_m - l_m) / (u_a - l_a) * (a - l_a) + l_m
    rows = np.arange(len(labels))
    cy = cos[rows, labels]
    theta = np.arccos(np.clip(cy, -1 + 1e-7, 1 - 1e-7))
    target = np.where(cy > np.cos(math.pi - margin), np.cos(theta + margin), cy - margin * np.sin(margin))
    logits = cos.copy()
    logits[rows, labels] = target
    return np_ce(s * logits, labels) + lambda_g * np.mean(1 / a + a / u_a ** 2)


def test_magface_values_and_gradients_including_norms():
    cos, labels = make_cos(5)
    norms = np.array([5.0, 15.0, 40.0, 70.0, 100.0, 130.0])
    loss = LOSSES.build(dict(type='MagFaceLoss'))
    value, (g_cos, g_norm) = ms_value_and_grad(loss, cos, labels, norms)
    assert value == pytest.approx(np_magface(cos, labels, norms), rel=1e-5)
    np.testing.assert_allclose(g_cos.asnumpy(), fd_grad(lambda x: np_magface(x, labels, norms), cos),
                               rtol=2e-3, atol=2e-4)
    # inside [l_a, u_a] the norms get the gradient of both the margin and the regularizer
    fd_n = fd_grad(lambda n: np_magface(cos, labels, n), norms, h=1e-4)
    np.testing.assert_allclose(g_norm.asnumpy()[1:5], fd_n[1:5], rtol=2e-3, atol=1e-5)
    assert np.all(g_norm.asnumpy()[[0, 5]] == 0)  # clipped outside the range


def test_magface_regularizer_is_decreasing_and_margin_linear():
    from facekit.models.losses.adaptive import magface_margin, magface_regularizer
    a = Tensor(np.array([10.0, 60.0, 110.0], np.float32))
    np.testing.assert_allclose(magface_margin(a).asnumpy(), [0.45, 0.625, 0.8], rtol=1e-6)
    g = magface_regularizer(a).asnumpy()
    np.testing.assert_allclose(g, [0.1 + 10 / 110 ** 2, 1 / 60 + 60 / 110 ** 2, 1 / 110 + 1 / 110], rtol=1e-6)
    assert g[0] > g[1] > g[2]


def test_losses_need_norms():
    cos, labels = make_cos()
    for name in ('AdaFaceLoss', 'MagFaceLoss'):
        with pytest.raises(ValueError, match='norms'):
            LOSSES.build(dict(type=name))(Tensor(cos.astype(np.float32)), Tensor(labels))


def test_labels_minus_one_rows_keep_plain_logits():
    # label -1 (class on another PartialFC rank): no margin, no target in this rank's piece
    cos, _ = make_cos()
    labels = np.full((B,), -1, np.int32)
    loss = LOSSES.build(dict(type='ArcFaceLoss'))
    logits = loss.margin_logits(Tensor(cos.astype(np.float32)), Tensor(labels)).asnumpy()
    np.testing.assert_allclose(logits, 64 * cos, rtol=1e-6)


def test_margin_hook_contract_target_and_non_target_logits():
    # One override point: margin(cos_y, cosine, norms, valid) -> (target, cosine). The base gathers cos_y,
    # passes valid (0 for label -1), writes target into the label column, keeps the returned non-targets.
    from facekit.models.losses import MarginSoftmaxLoss
    seen = {}

    class Probe(MarginSoftmaxLoss):
        def margin(self, cos_y, cosine, norms, valid):
            seen['cos_y'], seen['valid'] = cos_y.asnumpy(), valid.asnumpy()
            return 2.0 * cos_y + 0.25, 0.5 * cosine

    cos, labels = make_cos(6)
    labels = labels.copy()
    labels[2] = -1
    logits = Probe(s=3.0).margin_logits(Tensor(cos.astype(np.float32)), Tensor(labels)).asnumpy()
    rows = np.flatnonzero(labels >= 0)
    expected = 0.5 * cos
    expected[rows, labels[rows]] = 2.0 * cos[rows, labels[rows]] + 0.25
    np.testing.assert_allclose(logits, 3.0 * expected, rtol=1e-5, atol=1e-6)
    cos_y = np.zeros(B)
    cos_y[rows] = cos[rows, labels[rows]]
    np.testing.assert_allclose(seen['cos_y'].ravel(), cos_y, rtol=1e-6)
    np.testing.assert_array_equal(seen['valid'].ravel(), (labels >= 0).astype(np.float32))


def test_arcface_straight_through_is_the_reference_margin():
    """straight_through=True: value cos(acos(c) + m) even past pi - m (no fallback), d(logit)/d(cos) = s."""
    import math
    import mindspore as ms
    import numpy as np
    from facekit.models.losses.margin import ArcFaceLoss
    loss = ArcFaceLoss(s=2.0, m=0.5, straight_through=True)
    cos = np.array([[0.3, -0.2], [-0.95, 0.1]], np.float32)
    labels = ms.Tensor(np.array([0, 0], np.int32))
    logits = loss.margin_logits(ms.Tensor(cos), labels).asnumpy()
    expect = np.array([[math.cos(math.acos(0.3) + 0.5), -0.2], [math.cos(math.acos(-0.95) + 0.5), 0.1]]) * 2.0
    np.testing.assert_allclose(logits, expect, atol=1e-6)
    grad = ms.grad(lambda c: loss.margin_logits(c, labels).sum())(ms.Tensor(cos)).asnumpy()
    np.testing.assert_allclose(grad, np.full((2, 2), 2.0), atol=1e-6)
    with pytest.raises(ValueError, match='straight_through'):
        from facekit.models.losses.margin import CombinedMarginLoss
        CombinedMarginLoss(m1=1.35, straight_through=True)
