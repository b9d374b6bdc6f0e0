"""Worker for test_partial_fc_distributed.py, launched by msrun: one rank of a 2-rank PartialFC step.

Writes this rank's loss and gradients (local embeddings, local class-centre shard) to <out_dir>/rank<r>.json.
"""
import json
import os
import sys

os.environ.setdefault('ONEDNN_MAX_CPU_ISA', 'AVX2')
import numpy as np  # noqa: E402
import mindspore as ms  # noqa: E402
from mindspore import Tensor, nn  # noqa: E402
from mindspore.communication import get_group_size, get_rank, init  # noqa: E402

C, E, B = 11, 8, 4


def problem(world):
    rng = np.random.RandomState(0)
    weight = rng.randn(C, E).astype(np.float32)
    emb = rng.randn(world * B, E).astype(np.float32)
    labels = np.array([0, 10, 5, 6, 3, 7, 10, 1], np.int32)[:world * B]
    return weight, emb, labels


class HeadAndLoss(nn.Cell):
    def __init__(self, head, loss):
        super().__init__()
        self.head, self.loss = head, loss

    def construct(self, emb, labels):
        return self.loss(*self.head(emb, labels))


def main(out_dir):
    ms.set_context(mode=ms.GRAPH_MODE)
    init()
    import facekit  # noqa: F401
    from facekit.models.heads import PartialFCHead
    from facekit.registry import LOSSES
    from facekit.utils.dist import set_dist_state
    rank, world = get_rank(), get_group_size()
    set_dist_state(rank, world)                 # this script initialises communication itself
    weight, emb, labels = problem(world)
    head = PartialFCHead(embedding_size=E, num_classes=C, sample_rate=1.0)   # rank/world from facekit.utils.dist
    head.weight.set_data(Tensor(weight[head.class_start:head.class_start + head.num_local]))
    loss = LOSSES.build(dict(type='ArcFaceLoss'))
    loss.set_cross_entropy(head.cross_entropy_cell())                        # what FaceRecognizer does
    net = HeadAndLoss(head, loss)
    mine = slice(rank * B, (rank + 1) * B)
    value, (g_emb, g_w) = ms.value_and_grad(net, 0, net.trainable_params())(Tensor(emb[mine]), Tensor(labels[mine]))
    with open(os.path.join(out_dir, f'rank{rank}.json'), 'w') as f:
        json.dump(dict(loss=float(value.asnumpy()), g_emb=g_emb.asnumpy().tolist(), g_w=g_w[0].asnumpy().tolist(),
                       start=head.class_start, num_local=head.num_local, distributed=bool(head.distributed)), f)


if __name__ == '__main__':
    main(sys.argv[1])
