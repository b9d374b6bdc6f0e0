"""Margin losses whose margin adapts during training: CurricularFace, AdaFace, MagFace."""
import math

import numpy as np
from mindspore import Parameter, Tensor, ops

from ...registry import LOSSES
from .margin import MarginSoftmaxLoss, combined_margin

__all__ = ['CurricularFaceLoss', 'AdaFaceLoss', 'MagFaceLoss', 'magface_margin', 'magface_regularizer']


@LOSSES.register_module()
class CurricularFaceLoss(MarginSoftmaxLoss):
    """CurricularFace: ArcFace target plus hard negatives re-weighted by an adaptive curriculum.

    Huang et al., "CurricularFace: Adaptive Curriculum Learning Loss for Deep Face Recognition",
    CVPR 2020. Target: ``cos(theta + m)`` (fallback ``cos(theta) - m sin m`` past pi - m). A
    negative cosine ``c`` larger than the target's ``cos(theta + m)`` is a hard example and becomes
    ``c * (t + c)``; ``t`` follows the mean target cosine with momentum:
    ``t <- alpha * mean(cos theta_y) + (1 - alpha) * t`` (no gradient), starting at 0. Paper defaults
    s=64, m=0.5, alpha=0.01.

    Args:
        s: scale. m: additive angular margin (radians). alpha: momentum of ``t``.
        interclass_filtering_threshold: see ``MarginSoftmaxLoss``.
    """

    def __init__(self, s=64.0, m=0.5, alpha=0.01, interclass_filtering_threshold=0.0):
        super().__init__(s, interclass_filtering_threshold)
        self.m = float(m)
        self.alpha = float(alpha)
        self.t = Parameter(Tensor(np.zeros((1,), np.float32)), name='t', requires_grad=False)

    def margin(self, cos_y, cosine, norms, valid):
        c = ops.clamp(cos_y, -1.0, 1.0)
        cos_theta_m = c * math.cos(self.m) - ops.sqrt(ops.clamp(1.0 - c * c, 1e-12, 1.0)) * math.sin(self.m)
        mean_y = ops.stop_gradient((cos_y * valid).sum() / ops.maximum(valid.sum(), 1.0))
        t = self.alpha * mean_y + (1.0 - self.alpha) * self.t.astype(cosine.dtype)
        t = ops.depend(t, ops.assign(self.t, t.astype(self.t.dtype)))
        # The target column is overwritten by the base class, so re-weighting it here is harmless.
        hard = ops.stop_gradient((cosine > cos_theta_m).astype(cosine.dtype))
        cosine = cosine + hard * cosine * (t + cosine - 1.0)
        return combined_margin(cos_y, 1.0, self.m, 0.0), cosine


@LOSSES.register_module()
class AdaFaceLoss(MarginSoftmaxLoss):
    """AdaFace: margin adapted to image quality, measured by the embedding norm.

    Kim et al., "AdaFace: Quality Adaptive Margin for Face Recognition", CVPR 2022. With the
    (detached, clipped to [1e-3, 100]) norm ``n``, batch statistics tracked by momentum
    ``t_alpha`` (mean from 20, std from 100; the std is the unbiased one), the quality score is
    ``z = clip(h * (n - mean) / (std + eps), -1, 1)`` and the target becomes
    ``cos(clip(theta - m z, eps, pi - eps)) - (m + m z)``; cosines are clamped to [-1+eps, 1-eps]
    (eps = 1e-3). Paper defaults m=0.4, h=0.333, s=64, t_alpha=0.01. Needs ``norms``.

    Args:
        s: scale. m: margin. h: concentration of the quality score. t_alpha: momentum of the
        norm statistics. eps: clamp width. interclass_filtering_threshold: see ``MarginSoftmaxLoss``.
    """

    def __init__(self, s=64.0, m=0.4, h=0.333, t_alpha=0.01, eps=1e-3, interclass_filtering_threshold=0.0):
        super().__init__(s, interclass_filtering_threshold)
        self.m, self.h, self.t_alpha, self.eps = float(m), float(h), float(t_alpha), float(eps)
        self.batch_mean = Parameter(Tensor(np.full((1,), 20.0, np.float32)), name='batch_mean', requires_grad=False)
        self.batch_std = Parameter(Tensor(np.full((1,), 100.0, np.float32)), name='batch_std', requires_grad=False)

    def margin(self, cos_y, cosine, norms, valid):
        if norms is None:
            raise ValueError('AdaFaceLoss needs the embedding norms: call loss(cosine, labels, norms)')
        # Non-target columns: cos(clip(acos(c))) == c for the clamped c, so only the target changes.
        cosine = ops.clamp(cosine, -1.0 + self.eps, 1.0 - self.eps)
        cos_y = ops.clamp(cos_y, -1.0 + self.eps, 1.0 - self.eps)
        n = ops.stop_gradient(ops.clamp(norms.reshape(-1, 1).astype(cosine.dtype), 0.001, 100.0))
        count = n.shape[0]
        mean = n.mean()
        std = ops.sqrt(((n - mean) ** 2).sum() / max(count - 1, 1))
        new_mean = self.t_alpha * mean + (1.0 - self.t_alpha) * self.batch_mean.astype(n.dtype)
        new_std = self.t_alpha * std + (1.0 - self.t_alpha) * self.batch_std.astype(n.dtype)
        new_mean = ops.depend(new_mean, ops.assign(self.batch_mean, new_mean.astype(self.batch_mean.dtype)))
        new_std = ops.depend(new_std, ops.assign(self.batch_std, new_std.astype(self.batch_std.dtype)))
        z = ops.clamp((n - new_mean) / (new_std + self.eps) * self.h, -1.0, 1.0)
        theta = ops.clamp(ops.acos(cos_y) - self.m * z, self.eps, math.pi - self.eps)
        return ops.cos(theta) - (self.m + self.m * z), cosine


def magface_margin(norms, l_a=10.0, u_a=110.0, l_m=0.45, u_m=0.8):
    """MagFace margin m(a) = (u_m - l_m) / (u_a - l_a) * (a - l_a) + l_m for a = clip(norm, l_a, u_a)."""
    a = ops.clamp(norms, l_a, u_a)
    return (u_m - l_m) / (u_a - l_a) * (a - l_a) + l_m


def magface_regularizer(norms, l_a=10.0, u_a=110.0):
    """MagFace regularizer g(a) = 1/a + a/u_a^2 for a = clip(norm, l_a, u_a); decreasing on [l_a, u_a]."""
    a = ops.clamp(norms, l_a, u_a)
    return 1.0 / a + a / (u_a * u_a)


@LOSSES.register_module()
class MagFaceLoss(MarginSoftmaxLoss):
    """MagFace: ArcFace with a norm-dependent margin m(a) plus the norm regularizer lambda_g * g(a).

    Meng et al., "MagFace: A Universal Representation for Face Recognition and Quality
    Assessment", CVPR 2021. ``a`` is the embedding norm clipped to [l_a, u_a]; the margin grows
    linearly from l_m to u_m over that range, and ``g(a) = 1/a + a/u_a^2`` pulls easy samples to
    large norms. Gradients flow into the norms through both. Past pi - m(a) the target falls back
    to ``cos(theta) - m sin m`` (per sample). Paper defaults s=64, l_a=10, u_a=110, l_m=0.45,
    u_m=0.8, lambda_g=35. Needs ``norms``. Loss = CE + lambda_g * mean(g(a)).

    Args:
        s, l_a, u_a, l_m, u_m, lambda_g: as above. interclass_filtering_threshold: see ``MarginSoftmaxLoss``.
    """

    def __init__(self, s=64.0, l_a=10.0, u_a=110.0, l_m=0.45, u_m=0.8, lambda_g=35.0,
                 interclass_filtering_threshold=0.0):
        super().__init__(s, interclass_filtering_threshold)
        if not (0 < l_a < u_a and 0 <= l_m <= u_m):
            raise ValueError(f'MagFaceLoss needs 0 < l_a < u_a and 0 <= l_m <= u_m; got l_a={l_a}, u_a={u_a}, '
                             f'l_m={l_m}, u_m={u_m}')
        self.l_a, self.u_a, self.l_m, self.u_m = float(l_a), float(u_a), float(l_m), float(u_m)
        self.lambda_g = float(lambda_g)

    def margin(self, cos_y, cosine, norms, valid):
        if norms is None:
            raise ValueError('MagFaceLoss needs the embedding norms: call loss(cosine, labels, norms)')
        m = magface_margin(norms.reshape(-1, 1).astype(cosine.dtype), self.l_a, self.u_a, self.l_m, self.u_m)
        c = ops.clamp(cos_y, -1.0 + 1e-7, 1.0 - 1e-7)
        sin_theta = ops.sqrt(ops.clamp(1.0 - c * c, 1e-12, 1.0))
        phi = c * ops.cos(m) - sin_theta * ops.sin(m)
        return ops.where(c > ops.cos(math.pi - m), phi, c - ops.sin(m) * m), cosine

    def construct(self, cosine, labels, norms=None):
        ce = self.cross_entropy(self.margin_logits(cosine, labels, norms), labels)
        reg = magface_regularizer(norms.astype(cosine.dtype), self.l_a, self.u_a).mean()
        return ce + self.lambda_g * reg
