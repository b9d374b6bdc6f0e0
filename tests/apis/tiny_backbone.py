"""A tiny registered backbone so API tests compile in a fraction of a second."""
from mindspore import nn, ops

from facekit.registry import BACKBONES


@BACKBONES.register_module(name='_apis_test_tiny', force=True)
class TinyBackbone(nn.Cell):
    """(B, 3, 112, 112) -> (B, embedding_size): stride-4 conv, BN, ReLU, Linear, BN1d."""

    def __init__(self, embedding_size=8):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 4, stride=4, pad_mode='valid', has_bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Dense(4 * 28 * 28, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size)

    def construct(self, x):
        x = ops.relu(self.bn(self.conv(x)))
        return self.features(self.fc(ops.flatten(x, start_dim=1)))
