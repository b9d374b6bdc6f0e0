"""Worker for test_partial_fc_sampling.py, launched by msrun: one rank of a 2-rank PartialFC forward
at sample rate 0.5.

Writes this rank's loss, its cosine logits against its kept centres and its remapped labels to
<out_dir>/rank<r>.json; the test recovers each rank's kept classes from the cosines.
"""
import json
import os
import sys

os.environ.setdefault('ONEDNN_MAX_CPU_ISA', 'AVX2')
import numpy as np  # noqa: E402
import mindspore as ms  # noqa: E402
from mindspore import Tensor, nn  # noqa: E402
from mindspore.communication import get_group_size, get_rank, init  # noqa: E402

# 40 classes on 2 ranks: 20 each, rate 0.5 keeps 10 per rank, so 8 negatives are sampled on each.
C, E, B, RATE = 40, 8, 2, 0.5
LABELS = np.array([1, 25, 7, 33], np.int32)   # rank 0 owns 1 and 7, rank 1 owns 25 and 33


def problem():
    rng = np.random.RandomState(3)
    return rng.randn(C, E).astype(np.float32), rng.randn(2 * B, E).astype(np.float32), LABELS


class HeadLossOutputs(nn.Cell):
    """(embeddings, labels) -> (loss, cosine against the kept centres, remapped labels) of one step."""

    def __init__(self, head, loss):
        super().__init__()
        self.head, self.loss = head, loss

    def construct(self, emb, labels):
        cosine, local = self.head(emb, labels)
        return self.loss(cosine, local), cosine, local


def main(out_dir):
    ms.set_context(mode=ms.GRAPH_MODE)
    init()
    import facekit  # noqa: F401
    from facekit.models.heads import PartialFCHead
    from facekit.registry import LOSSES
    rank, world = get_rank(), get_group_size()
    from facekit.utils.dist import set_dist_state
    set_dist_state(rank, world)                 # this script initialises communication itself
    weight, emb, labels = problem()
    head = PartialFCHead(embedding_size=E, num_classes=C, sample_rate=RATE)
    head.weight.set_data(Tensor(weight[head.class_start:head.class_start + head.num_local]))
    loss = LOSSES.build(dict(type='ArcFaceLoss'))
    loss.set_cross_entropy(head.cross_entropy_cell())
    net = HeadLossOutputs(head, loss)
    mine = slice(rank * B, (rank + 1) * B)
    value, cosine, local = net(Tensor(emb[mine]), Tensor(labels[mine]))
    with open(os.path.join(out_dir, f'rank{rank}.json'), 'w') as f:
        json.dump(dict(loss=float(value.asnumpy()), cosine=cosine.asnumpy().tolist(), local=local.asnumpy().tolist(),
                       start=head.class_start, num_local=head.num_local, world=world,
                       distributed=bool(head.distributed)), f)


if __name__ == '__main__':
    main(sys.argv[1])
