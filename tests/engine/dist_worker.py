"""Worker for test_distributed.py: a few data-parallel steps of a tiny FaceRecognizer.

Run under msrun (2 ranks: each takes its half of the global batch) or alone (1 rank: the whole
global batch). Arguments: OUT_DIR [HEAD_TYPE] (NormFCHead: replicated head; PartialFCHead: sharded)
[ACCUMULATIVE_COUNTS] (k: each rank's rows of a step come as k micro-batches). Writes OUT/rank<R>.json
with per-step losses (the mean over a step's micro-batches) and weights.
"""
import json
import os
import os.path as osp
import sys

import numpy as np

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import mindspore as ms  # noqa: E402
from mindspore import nn  # noqa: E402

import facekit  # noqa: E402,F401
from facekit.engine import Runner, dist  # noqa: E402
from facekit.engine.lr_schedules import ConstantLR  # noqa: E402
from facekit.engine.optim import SGD  # noqa: E402
from facekit.registry import MODELS  # noqa: E402

GLOBAL_BATCH, IN_DIM, EMB, CLASSES, STEPS = 8, 6, 8, 6, 3


class FixedBatches:
    """The given batches, in order, every epoch."""
    batch_size = None

    def __init__(self, x, y):
        self.x, self.y = x, y
        self.batch_size = x.shape[1]

    def __len__(self):
        return len(self.x)

    def __iter__(self):
        for s in range(len(self.x)):
            yield self.x[s], self.y[s]


def main(out_dir, head_type='NormFCHead', accumulative_counts='1'):
    k = int(accumulative_counts)
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device('CPU')
    rank, world = dist.init_dist()
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.5, (EMB, IN_DIM)).astype(np.float32)
    centres = rng.normal(0, 1, (CLASSES, EMB)).astype(np.float32)
    xs = rng.normal(0, 1, (STEPS, GLOBAL_BATCH, IN_DIM)).astype(np.float32)
    ys = rng.integers(0, CLASSES, (STEPS, GLOBAL_BATCH)).astype(np.int32)
    backbone = nn.SequentialCell([nn.Dense(IN_DIM, EMB, weight_init=ms.Tensor(w1), has_bias=False), nn.Tanh()])
    model = MODELS.build(dict(type='FaceRecognizer', backbone=backbone,
                              head=dict(type=head_type, embedding_size=EMB, num_classes=CLASSES),
                              loss=dict(type='ArcFaceLoss', s=8.0, m=0.3)))
    head = model.head
    start, num_local = getattr(head, 'class_start', 0), getattr(head, 'num_local', CLASSES)
    model.head.weight.set_data(ms.Tensor(centres[start:start + num_local]))
    per = GLOBAL_BATCH // world
    # this rank's rows of each step, split into k micro-batches in row order
    loader = FixedBatches(xs[:, rank * per:(rank + 1) * per].reshape(STEPS * k, per // k, IN_DIM),
                          ys[:, rank * per:(rank + 1) * per].reshape(STEPS * k, per // k))
    opt = SGD(model, lr=0.5, momentum=0.9, weight_decay=0.0)
    runner = Runner(model, loader, opt, ConstantLR(0.5, STEPS), 1, osp.join(out_dir, 'work'),
                    hooks=[dict(type='CheckpointHook', interval=1)], clip_grad_norm=None, accumulative_counts=k)
    hist = runner.train()
    runner.close()
    result = dict(rank=rank, world=world, losses=np.reshape([h[2] for h in hist], (STEPS, k)).mean(axis=1).tolist(),
                  backbone=model.backbone[0].weight.asnumpy().tolist(),
                  head=model.head.weight.asnumpy().tolist(), class_start=start,
                  sharded=bool(getattr(head, 'distributed', False)))
    with open(osp.join(out_dir, f'rank{rank}.json'), 'w') as f:
        json.dump(result, f)


if __name__ == '__main__':
    main(*sys.argv[1:])
