"""A tiny recognizer-shaped cell and a deterministic loader for engine tests (no real model needed)."""
import numpy as np

from mindspore import nn, ops


class TinyRecognizer(nn.Cell):
    """backbone (Dense + BN + PReLU) -> head (Dense, no bias) -> softmax CE; input (B, 4)."""

    def __init__(self, in_dim=4, emb=8, num_classes=3):
        super().__init__()
        self.backbone = nn.SequentialCell([nn.Dense(in_dim, emb), nn.BatchNorm1d(emb), nn.PReLU()])
        self.head = nn.Dense(emb, num_classes, has_bias=False)
        self.loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction='mean')

    def construct(self, img, label):
        return self.loss(self.head(self.backbone(img)), label)

    def extract(self, img):
        return self.backbone(img)


class ArrayLoader:
    """Batches of a fixed random classification set; the order depends only on (seed, epoch)."""

    def __init__(self, n=64, batch_size=8, in_dim=4, num_classes=3, seed=0, shuffle=True):
        rng = np.random.default_rng(seed)
        self.y = rng.integers(0, num_classes, n).astype(np.int32)
        centres = rng.normal(0, 2, (num_classes, in_dim)).astype(np.float32)
        self.x = (centres[self.y] + rng.normal(0, 1, (n, in_dim))).astype(np.float32)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.x) // self.batch_size

    def __iter__(self):
        order = np.arange(len(self.x))
        if self.shuffle:
            order = np.random.default_rng((self.seed, self.epoch)).permutation(len(self.x))
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield self.x[idx], self.y[idx]
