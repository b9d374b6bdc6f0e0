"""Margin-based softmax losses on cosine logits: the combined margin family.

All take cosine logits ``cos(theta)`` (B, C) in [-1, 1] from a normalized head, labels (B,) int32
in logit space (-1 = the class lives on another PartialFC rank), change the target logit by a
margin, scale by ``s`` and apply softmax cross-entropy. The margin is applied with gradient (no
straight-through trick) unless ``straight_through=True`` asks for the reference trainer's exact
step (see ``CombinedMarginLoss``). Every loss overrides only ``MarginSoftmaxLoss.margin`` (see its docstring).
"""
import math

from mindspore import nn, ops

from ...registry import LOSSES
from .cross_entropy import SoftmaxCrossEntropy, one_hot

__all__ = ['MarginSoftmaxLoss', 'combined_margin', 'CombinedMarginLoss', 'ArcFaceLoss', 'CosFaceLoss',
           'SphereFaceLoss']

# Keeps acos and sqrt away from |cos| = 1, where their derivatives are infinite.
_COS_EPS = 1e-7


def combined_margin(cos_y, m1=1.0, m2=0.5, m3=0.0, easy_margin=False):
    """Target logit after the combined margin, ``cos(m1*theta + m2) - m3`` with theta = acos(cos_y).

    Where ``m1*theta + m2`` would pass pi the function stops decreasing in theta, which would
    reward the wrong direction, so beyond ``theta_th = (pi - m2) / m1`` a fallback is used:

    * m1 == 1 (ArcFace-type): ``cos(theta) - m2*sin(m2) - m3`` where ``cos(theta) <= cos(pi - m2)``,
      the classic fallback of the ArcFace reference (a first-order step; it drops 0.12 below the
      margin curve at the threshold for m2 = 0.5);
    * m1 != 1: ``cos(theta) - cos(theta_th) - 1 - m3``, the curve shifted to meet the margin curve at
      ``theta_th`` (value ``-1 - m3``), so it stays continuous and decreasing.

    ``easy_margin`` keeps ``cos(theta)`` unchanged where ``cos(theta) <= 0`` (margin only on positive cosines).

    Args:
        cos_y: (B,) or (B, 1) target cosines, float.
        m1: multiplicative angular margin (SphereFace), > 0.
        m2: additive angular margin (ArcFace), radians, >= 0.
        m3: additive cosine margin (CosFace).
        easy_margin: see above.
    Returns: tensor shaped like ``cos_y``.
    """
    if m1 == 1.0 and m2 == 0.0:
        return cos_y - m3
    c = ops.clamp(cos_y, -1.0 + _COS_EPS, 1.0 - _COS_EPS)
    if m1 == 1.0:
        # cos(theta + m) = c cos m - sin(theta) sin m: no acos needed.
        sin_theta = ops.sqrt(ops.clamp(1.0 - c * c, 1e-12, 1.0))
        phi = c * math.cos(m2) - sin_theta * math.sin(m2) - m3
        fallback = c - m2 * math.sin(m2) - m3
        threshold = math.cos(math.pi - m2)
    else:
        theta = ops.acos(c)
        phi = ops.cos(m1 * theta + m2) - m3
        theta_th = (math.pi - m2) / m1
        threshold = math.cos(theta_th) if theta_th < math.pi else -2.0
        fallback = c - math.cos(min(theta_th, math.pi)) - 1.0 - m3
    if easy_margin:
        return ops.where(cos_y > 0, phi, cos_y)
    return ops.where(c > threshold, phi, fallback)


class MarginSoftmaxLoss(nn.Cell):
    """Base of the margin losses: the bookkeeping around one override point, ``margin``.

    A subclass overrides only::

        def margin(self, cos_y, cosine, norms, valid):
            return target, cosine

    Args of the hook (all float, in the dtype of the logits):
        cos_y: (B, 1) each row's target cosine, gathered by the base class (0 where ``valid`` is 0).
        cosine: (B, C) all cosines of the row after inter-class filtering (target column included).
        norms: (B,) embedding norms, or None when the caller gave none.
        valid: (B, 1) 1 where the row's class is in these logits, 0 for label -1 (the class lives
            on another PartialFC rank); use it for batch statistics over targets.
    Returns: ``(target (B, 1), cosine (B, C))``, both before scaling: the new target logit, and
        the non-target logits (return ``cosine`` unchanged to leave them alone). The default is
        ``(cos_y, cosine)``, i.e. plain normalized softmax.

    The base class does everything else, in ``margin_logits``: the one-hot of the labels (an
    all-zero row for label -1), inter-class filtering, gathering ``cos_y``, writing ``target``
    into the label's column of the returned ``cosine`` (label -1 rows keep their plain logits),
    and scaling by ``s``; then ``construct`` applies the softmax cross-entropy (PartialFC's
    cross-rank one after ``set_cross_entropy``).

    Args:
        s: logit scale applied after the margin.
        interclass_filtering_threshold: if > 0, non-target cosines above this value are set to 0
            (treated as label noise / near-duplicate identities, as in arcface_torch's option);
            the mask carries no gradient. 0 disables.
    Call: ``(cosine (B, C), labels (B,) int32, norms (B,) or None) -> scalar``.
    """

    def __init__(self, s=64.0, interclass_filtering_threshold=0.0):
        super().__init__()
        self.s = float(s)
        self.interclass_filtering_threshold = float(interclass_filtering_threshold)
        self.cross_entropy = SoftmaxCrossEntropy()

    def set_cross_entropy(self, cross_entropy):
        """Replace the softmax cross-entropy (e.g. with a distributed one from a PartialFC head)."""
        self.cross_entropy = cross_entropy

    def margin(self, cos_y, cosine, norms, valid):
        """The override point: ``(cos_y (B,1), cosine (B,C), norms, valid (B,1)) -> (target (B,1), cosine (B,C))``."""
        return cos_y, cosine

    def filter_interclass(self, cosine, onehot):
        """Zero the non-target cosines above ``interclass_filtering_threshold`` (no gradient through the mask)."""
        if self.interclass_filtering_threshold <= 0:
            return cosine
        dirty = ops.stop_gradient((cosine > self.interclass_filtering_threshold).astype(cosine.dtype) * (1 - onehot))
        return cosine * (1 - dirty)

    def margin_logits(self, cosine, labels, norms=None):
        """(B, C) cosines, (B,) labels -> (B, C) scaled logits: ``margin`` applied, target written back."""
        onehot = one_hot(labels, cosine.shape[1], cosine.dtype)
        cosine = self.filter_interclass(cosine, onehot)
        cos_y = (cosine * onehot).sum(axis=1, keepdims=True)
        valid = (labels >= 0).astype(cosine.dtype).reshape(-1, 1)
        target, cosine = self.margin(cos_y, cosine, norms, valid)
        return (cosine * (1 - onehot) + target * onehot) * self.s

    def construct(self, cosine, labels, norms=None):
        return self.cross_entropy(self.margin_logits(cosine, labels, norms), labels)


@LOSSES.register_module()
class CombinedMarginLoss(MarginSoftmaxLoss):
    """Combined margin ``s * (cos(m1*theta + m2) - m3)`` on the target (insightface's CM, ArcFace paper Sec. 3.3).

    Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face Recognition", CVPR 2019.
    Any m1 > 0, m2 >= 0, m3 combination works; see ``combined_margin`` for the theta + m > pi fallback.

    Args:
        s: scale (default 64).
        m1: multiplicative angular margin (default 1.0).
        m2: additive angular margin in radians (default 0.5).
        m3: additive cosine margin (default 0.0).
        easy_margin: keep the target unchanged where cos(theta) <= 0.
        interclass_filtering_threshold: see ``MarginSoftmaxLoss``.
        straight_through: False (default): the true gradient of the margin curve. True: reproduce
            arcface_torch's CombinedMarginLoss (m1 = 1, m3 = 0 path) step for step: its margin is
            applied in place under ``torch.no_grad()``, so the target's value is cos(theta + m2)
            with no fallback past pi - m2, and its gradient w.r.t. cos(theta) is the identity's
            (times s, like every other logit). Only for runs that must equal that trainer's;
            needs m1 = 1, m3 = 0, easy_margin False.
    """

    def __init__(self, s=64.0, m1=1.0, m2=0.5, m3=0.0, easy_margin=False, interclass_filtering_threshold=0.0,
                 straight_through=False):
        super().__init__(s, interclass_filtering_threshold)
        if m1 <= 0:
            raise ValueError(f'CombinedMarginLoss m1 must be > 0, got {m1}')
        if m2 < 0:
            raise ValueError(f'CombinedMarginLoss m2 must be >= 0 radians, got {m2}')
        if straight_through and (m1 != 1.0 or m3 != 0.0 or easy_margin):
            raise ValueError(f'CombinedMarginLoss straight_through=True reproduces the reference ArcFace path '
                             f'only (m1=1, m3=0, easy_margin=False); got m1={m1}, m3={m3}, easy_margin={easy_margin}')
        self.m1, self.m2, self.m3 = float(m1), float(m2), float(m3)
        self.easy_margin = bool(easy_margin)
        self.straight_through = bool(straight_through)

    def margin(self, cos_y, cosine, norms, valid):
        if self.straight_through:
            # value cos(acos(c) + m2), gradient of the identity: the reference's no-grad in-place margin
            c = ops.stop_gradient(ops.clamp(cos_y, -1.0, 1.0))
            return cos_y + (ops.cos(ops.acos(c) + self.m2) - c), cosine
        return combined_margin(cos_y, self.m1, self.m2, self.m3, self.easy_margin), cosine


@LOSSES.register_module()
class ArcFaceLoss(CombinedMarginLoss):
    """ArcFace: ``s * cos(theta + m)`` on the target. Deng et al., CVPR 2019; paper defaults s=64, m=0.5.

    Args:
        s: scale. m: additive angular margin (radians). easy_margin, interclass_filtering_threshold,
        straight_through (False; True = arcface_torch's no-grad margin, for step-for-step parity): as
        in ``CombinedMarginLoss``.
    """

    def __init__(self, s=64.0, m=0.5, easy_margin=False, interclass_filtering_threshold=0.0, straight_through=False):
        super().__init__(s, 1.0, m, 0.0, easy_margin, interclass_filtering_threshold, straight_through)


@LOSSES.register_module()
class CosFaceLoss(CombinedMarginLoss):
    """CosFace / LMCL: ``s * (cos(theta) - m)`` on the target.

    Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face Recognition", CVPR 2018; paper
    defaults s=64, m=0.35 (the ArcFace reference trainers use m=0.4, our default).
    """

    def __init__(self, s=64.0, m=0.4, interclass_filtering_threshold=0.0):
        super().__init__(s, 1.0, 0.0, m, False, interclass_filtering_threshold)


@LOSSES.register_module()
class SphereFaceLoss(CombinedMarginLoss):
    """SphereFace-style multiplicative margin ``s * cos(m * theta)`` on normalized features.

    Liu et al., "SphereFace: Deep Hypersphere Embedding for Face Recognition", CVPR 2017 (A-Softmax,
    m=4 on un-normalized features with a lambda-annealed softmax). On normalized features with
    s=64, the ArcFace paper (Deng et al., CVPR 2019, Table 2) uses m=1.35, our default. Beyond
    theta = pi/m the continuous fallback of ``combined_margin`` applies.
    """

    def __init__(self, s=64.0, m=1.35, interclass_filtering_threshold=0.0):
        super().__init__(s, m, 0.0, 0.0, False, interclass_filtering_threshold)
