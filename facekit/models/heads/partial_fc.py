"""PartialFC: class centres sharded across data-parallel ranks, with class-centre sampling.

An et al., "Killing Two Birds with One Stone: Efficient and Robust Training of Face Recognition
CNNs by Partial FC", CVPR 2022.

Rank r of W holds ``num_local = C // W + (r < C % W)`` consecutive class centres starting at
``C // W * r + min(r, C % W)``. Each step the embeddings and labels of all ranks are all-gathered;
each rank keeps every positive class of the global batch that it owns plus uniformly sampled
negatives, computes cosine logits against the kept centres only, and the softmax cross-entropy is
assembled across ranks (max over ranks of the row maxima, all-reduced sum of exponentials: see
``losses/cross_entropy.py``), so the loss equals a full softmax over all ranks' kept classes.

Fixed-size sampling (graph mode needs static shapes): the kept set has
``k = max(int(sample_rate * num_local), min(num_local, B_global))`` centres, chosen as the top-k of
(uniform noise + 2 for positives). With ``B_global <= int(sample_rate * num_local)`` (the normal
case) this is exactly ``int(sample_rate * num_local)`` and every positive fits; with a larger batch
the set grows to ``B_global`` so positives still always fit. ``sample_rate == 1`` skips sampling.

Gradient: the kept centres are gathered from the full (num_local, E) weight, so only kept rows get
a non-zero gradient. (Momentum and weight decay of a dense optimizer still move the other rows.)

Memory per rank (fp32, SGD with momentum), E = embedding size, B = per-rank batch, k as above:
    weight + grad + momentum  = 3 * 4 * E * ceil(C / W)            bytes
    logits + their gradient   = 2 * 4 * (W * B) * k                 bytes
e.g. C = 85,742, W = 1, E = 512, B = 128, rate 1: 527 MB + 88 MB; rate 0.1 on W = 8: 66 MB + 8.8 MB.
"""
from mindspore import nn, ops

from ...registry import HEADS
from ...utils import dist
from ..losses.cross_entropy import SoftmaxCrossEntropy
from .base import BaseHead
from .norm_fc import _centres, cosine_logits

__all__ = ['PartialFCHead', 'AllGatherRows', 'shard_range']


def shard_range(num_classes, rank, world_size):
    """(start, num_local) of the class centres rank ``rank`` of ``world_size`` owns."""
    if not 0 <= rank < world_size:
        raise ValueError(f'rank {rank} is outside world_size {world_size}')
    base, extra = divmod(num_classes, world_size)
    return base * rank + min(rank, extra), base + (1 if rank < extra else 0)


class AllGatherRows(nn.Cell):
    """All-gather (B, ...) rows of every rank into (W*B, ...), rank order, with a written-out gradient.

    The backward all-reduces (sums) the upstream gradient and keeps this rank's rows: every rank
    computes the same global loss, so a row's gradient is the sum of the pieces each rank's class
    shard contributes. (MindSpore's own AllGather backward is a ReduceScatter, which has no CPU
    kernel.) With ``differentiable=False`` (integer labels) the backward is zero and communicates
    nothing.

    Args:
        rank: this process's rank.
        differentiable: pass the gradient back (float rows) or not (labels).
    """

    def __init__(self, rank, differentiable=True):
        super().__init__()
        self.rank = rank
        self.differentiable = differentiable
        self.all_gather = ops.AllGather()
        if differentiable:
            self.all_reduce = ops.AllReduce(ops.ReduceOp.SUM)

    def construct(self, x):
        return self.all_gather(x)

    def bprop(self, x, out, dout):
        if not self.differentiable:
            return (ops.zeros_like(x),)
        b = x.shape[0]
        return (self.all_reduce(dout)[self.rank * b:(self.rank + 1) * b],)


@HEADS.register_module()
class PartialFCHead(BaseHead):
    """Sharded, sampled cosine head (PartialFC).

    Args:
        embedding_size: embedding dimension E.
        num_classes: total number of classes C over all ranks.
        sample_rate: share of this rank's centres kept per step (1.0 = all, no sampling).
        rank: this process's rank; default ``facekit.utils.dist.get_rank()``.
        world_size: number of ranks; default ``facekit.utils.dist.get_world_size()``.
            An explicit world_size > 1 in a process that is not distributed (``get_world_size() == 1``)
            builds one shard for simulated-rank tests: it expects the already-gathered batch and does
            no communication.
    Call: ``(embeddings (B, E), labels (B,) int32 global ids) -> (cosine (W*B, k), labels (W*B,))``
    with labels remapped into the kept set, -1 for classes owned by other ranks.
    Sharding: with world_size > 1 the centre ``weight`` (num_local, E) holds rows ``shard_slice()`` of
    the full (C, E) matrix and is marked ``layerwise_parallel`` (data-parallel gradient reduction
    must skip it: each rank's rows are different classes).
    """

    def __init__(self, embedding_size=512, num_classes=10572, sample_rate=1.0, rank=None, world_size=None):
        super().__init__(embedding_size, num_classes)
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f'PartialFCHead sample_rate must be in (0, 1], got {sample_rate}')
        process_world = dist.get_world_size()
        world_size = process_world if world_size is None else int(world_size)
        rank = dist.get_rank() if rank is None else int(rank)
        if process_world > 1 and world_size > 1 and world_size != process_world:
            raise ValueError(f'PartialFCHead world_size={world_size} differs from the {process_world} ranks '
                             f'this process runs with (facekit.utils.dist)')
        if num_classes < world_size:
            raise ValueError(f'PartialFCHead num_classes {num_classes} is smaller than world_size {world_size}')
        self.rank, self.world_size = rank, world_size
        self.class_start, self.num_local = shard_range(num_classes, rank, world_size)
        self.sample_rate = float(sample_rate)
        self.num_sample = max(1, int(self.sample_rate * self.num_local))
        self.sampling = self.num_sample < self.num_local
        self.distributed = process_world > 1 and world_size > 1
        if self.distributed:
            self.gather_float = AllGatherRows(rank)
            self.gather_labels = AllGatherRows(rank, differentiable=False)
        self.weight = _centres(self.num_local, embedding_size)
        if self.is_sharded:
            self.weight.layerwise_parallel = True

    @property
    def is_sharded(self):
        return self.world_size > 1

    def shard_slice(self):
        return self.class_start, self.num_local

    def sharded_param_names(self):
        return ('weight',)

    def cross_entropy_cell(self):
        """The softmax cross-entropy that matches this head (all-reduced across ranks when distributed)."""
        return SoftmaxCrossEntropy(distributed=self.distributed)

    def gather_rows(self, x):
        """All-gather per-rank float rows (B, ...) -> (W*B, ...) in rank order; identity on one rank."""
        if self.distributed:
            return self.gather_float(x)
        return x

    def sample(self, local, valid):
        """Choose the kept centres.

        Args:
            local: (N,) int32 shard-relative labels, -1 for other ranks' classes.
            valid: (N,) bool, local >= 0.
        Returns: (index (k,) int32 sorted kept centre ids, remapped (N,) int32 positions of each
            label in ``index``, -1 where invalid).
        """
        n = local.shape[0]
        k = max(self.num_sample, min(self.num_local, n))
        safe = ops.where(valid, local, ops.zeros_like(local))
        positives = ops.scatter_nd(safe.reshape(-1, 1), valid.astype(self.weight.dtype), (self.num_local,))
        score = ops.rand((self.num_local,), dtype=self.weight.dtype) + 2.0 * (positives > 0).astype(self.weight.dtype)
        _, index = ops.topk(score, k)
        index, _ = ops.sort(index.astype(self.weight.dtype))
        index = index.astype(local.dtype)
        position = ops.scatter_nd(index.reshape(-1, 1), ops.arange(k, dtype=local.dtype), (self.num_local,))
        remapped = ops.where(valid, ops.gather(position, safe, 0), -ops.ones_like(local))
        return index, remapped

    def construct(self, embeddings, labels):
        embeddings = self.gather_rows(embeddings)
        if self.distributed:
            labels = self.gather_labels(labels)
        local, valid = self.local_labels(labels)
        weight = self.weight.astype(embeddings.dtype)
        if self.sampling:
            index, local = self.sample(local, valid)
            weight = ops.gather(weight, index, 0)
        return cosine_logits(embeddings, weight), local
