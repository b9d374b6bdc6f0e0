"""Softmax cross-entropy, written so that the softmax can span class shards on several ranks.

The loss of row i is ``log(sum_j exp(z_ij)) - z_i,y_i``. With the classes split across ranks
(PartialFC), each rank holds some columns; the loss is assembled from three per-rank pieces,
each combined by an all-reduce:

* row max ``m_i`` (the maximum over ranks; only a numerical shift, carries no gradient; taken
  from an all-gather of the per-rank maxima because MindSpore's CPU AllReduce only sums),
* ``sum_j exp(z_ij - m_i)`` over the local columns (all-reduce SUM),
* the target logit, zero on ranks that do not own row i's class (label -1 there; all-reduce SUM).

The gradient is written out (``bprop``): ``d loss / d z_ij = (softmax_ij - onehot_ij) / B``.
Autodiff through the all-reduce would instead sum the identical upstream gradients of all
ranks and scale the result by the world size.
"""
from mindspore import nn, ops

from ...registry import LOSSES

__all__ = ['one_hot', 'row_max', 'sum_exp', 'target_logit', 'SoftmaxCrossEntropy', 'CrossEntropyLoss']


def one_hot(labels, num_classes, dtype):
    """(B,) int labels -> (B, num_classes) one-hot in ``dtype``; an all-zero row for label -1.

    A comparison with ``arange`` rather than ``ops.one_hot``, which fails to compile inside a
    custom ``bprop`` in graph mode (MindSpore 2.10).
    """
    return (labels.reshape(-1, 1) == ops.arange(num_classes, dtype=labels.dtype)).astype(dtype)


def row_max(logits):
    """(B, C) -> (B, 1) row maxima, without gradient."""
    return ops.stop_gradient(logits.max(axis=1, keepdims=True))


def sum_exp(logits, shift):
    """(B, C), (B, 1) -> (B, 1): sum over columns of exp(logits - shift)."""
    return ops.exp(logits - shift).sum(axis=1, keepdims=True)


def target_logit(logits, labels):
    """(B, C), (B,) int -> (B, 1): logits[i, labels[i]], 0 where labels[i] == -1 (class on another rank)."""
    return (logits * one_hot(labels, logits.shape[1], logits.dtype)).sum(axis=1, keepdims=True)


class _CrossEntropyCore(nn.Cell):
    """Mean cross-entropy of (B, C) logits against a (B, C) one-hot target, with the written-out gradient.

    Taking the one-hot (not labels) keeps the ``bprop`` free of ``ops.one_hot``/``ops.arange``,
    which fail to compile inside a custom bprop in graph mode (MindSpore 2.10).
    """

    def __init__(self, distributed=False, group=None):
        super().__init__()
        self.distributed = distributed
        if distributed:
            from mindspore.communication import GlobalComm, get_group_size
            group = group or GlobalComm.WORLD_COMM_GROUP
            self.world_size = get_group_size(group)
            self.all_gather = ops.AllGather(group)
            self.all_reduce_sum = ops.AllReduce(ops.ReduceOp.SUM, group)

    def _shift_total(self, logits):
        shift = row_max(logits)
        if self.distributed:
            shift = ops.stop_gradient(self.all_gather(shift).reshape(self.world_size, -1, 1).max(axis=0))
        total = sum_exp(logits, shift)
        if self.distributed:
            total = self.all_reduce_sum(total)
        return shift, total

    def construct(self, logits, onehot):
        shift, total = self._shift_total(logits)
        target = (logits * onehot).sum(axis=1, keepdims=True)
        if self.distributed:
            target = self.all_reduce_sum(target)
        return (ops.log(total) + shift - target).mean()

    def bprop(self, logits, onehot, out, dout):
        shift, total = self._shift_total(logits)
        prob = ops.exp(logits - shift) / total
        return (prob - onehot) * (dout / logits.shape[0]), ops.zeros_like(onehot)


class SoftmaxCrossEntropy(nn.Cell):
    """Mean softmax cross-entropy over (B, C) logits; optionally across class shards on several ranks.

    Args:
        distributed: combine the per-rank pieces with all-reduces over ``group`` (needs an
            initialised ``mindspore.communication``); False computes the ordinary loss.
        group: communication group name; None means the world group.
    Call: ``(logits (B, C) float, labels (B,) int32 with -1 for classes owned elsewhere) -> scalar``.
    """

    def __init__(self, distributed=False, group=None):
        super().__init__()
        self.distributed = distributed
        self.core = _CrossEntropyCore(distributed, group)

    def construct(self, logits, labels):
        return self.core(logits, one_hot(labels, logits.shape[1], logits.dtype))


@LOSSES.register_module()
class CrossEntropyLoss(nn.Cell):
    """Plain softmax cross-entropy on logits (the baseline to pair with ``SoftmaxHead``).

    Args:
        scale: multiply the logits by this before the softmax (1 for an ordinary FC head; s for
            a normalized head without margin, i.e. NormFace).
    Call: ``(logits (B, C), labels (B,) int32, norms=None) -> scalar``; norms are ignored.
    """

    def __init__(self, scale=1.0):
        super().__init__()
        self.scale = float(scale)
        self.cross_entropy = SoftmaxCrossEntropy()

    def set_cross_entropy(self, cross_entropy):
        """Replace the softmax cross-entropy (e.g. with a distributed one from a PartialFC head)."""
        self.cross_entropy = cross_entropy

    def construct(self, logits, labels, norms=None):
        if self.scale != 1.0:
            logits = logits * self.scale
        return self.cross_entropy(logits, labels)
