"""Improved ResNet (IResNet) for face recognition.

Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face Recognition", CVPR 2019, with
the IBasicBlock of Duta et al. ("Improved Residual Networks", 2020) as used by insightface's
arcface_torch: BN-conv3x3-BN-PReLU-conv3x3(stride)-BN plus a shortcut, every stage's first block
strides 2 so 112x112 input ends at 7x7; the head is BN2d -> dropout -> flatten(512*7*7) -> Linear
-> BN1d (its scale frozen at 1).
"""
from mindspore import nn, ops
from mindspore.common.initializer import Normal

from ...registry import BACKBONES
from .layers import PReLU, torch_linear_init

__all__ = ['IResNet', 'iresnet18', 'iresnet34', 'iresnet50', 'iresnet100', 'iresnet200']

_BN_EPS = 1e-5
# PyTorch BN momentum 0.1 is MindSpore momentum 0.9 (weight of the running value).
_BN_MOMENTUM = 0.9


def _conv(in_c, out_c, kernel, stride=1):
    # Reference init: N(0, 0.1) for every conv weight.
    return nn.Conv2d(in_c, out_c, kernel, stride=stride, pad_mode='pad', padding=kernel // 2,
                     has_bias=False, weight_init=Normal(0.1))


def _bn2d(c):
    return nn.BatchNorm2d(c, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class IBasicBlock(nn.Cell):
    """BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, plus the (projected) input.

    Args:
        in_channels: input channels.
        channels: output channels.
        stride: stride of the second convolution (and of the 1x1 shortcut projection).
    """

    def __init__(self, in_channels, channels, stride=1):
        super().__init__()
        self.bn1 = _bn2d(in_channels)
        self.conv1 = _conv(in_channels, channels, 3)
        self.bn2 = _bn2d(channels)
        self.prelu = PReLU(channels)
        self.conv2 = _conv(channels, channels, 3, stride)
        self.bn3 = _bn2d(channels)
        self.has_downsample = stride != 1 or in_channels != channels
        if self.has_downsample:
            self.downsample = nn.SequentialCell(_conv(in_channels, channels, 1, stride), _bn2d(channels))
        else:
            self.downsample = None

    def construct(self, x):
        out = self.bn1(x)
        out = self.conv1(out)
        out = self.bn2(out)
        out = self.prelu(out)
        out = self.conv2(out)
        out = self.bn3(out)
        identity = self.downsample(x) if self.has_downsample else x
        return out + identity


@BACKBONES.register_module()
class IResNet(nn.Cell):
    """IResNet backbone: (B, 3, 112, 112) float32 -> (B, embedding_size) float32 (un-normalized).

    Args:
        layers: number of IBasicBlocks in each of the four stages, e.g. (3, 4, 14, 3) for r50.
        embedding_size: output embedding dimension.
        widths: output channels of the four stages.
        dropout: dropout probability before the final Linear (reference: 0).
        input_size: input height/width in pixels (must be divisible by 16).
        stem_channels: channels of the stem convolution.
    """

    def __init__(self, layers=(3, 4, 14, 3), embedding_size=512, widths=(64, 128, 256, 512),
                 dropout=0.0, input_size=112, stem_channels=64):
        super().__init__()
        if len(layers) != 4 or len(widths) != 4:
            raise ValueError(f'IResNet needs four stages; got layers={layers}, widths={widths}')
        if input_size % 16 != 0:
            raise ValueError(f'IResNet input_size {input_size} must be divisible by 16 (four stride-2 stages)')
        self.embedding_size = embedding_size
        self.conv1 = _conv(3, stem_channels, 3)
        self.bn1 = _bn2d(stem_channels)
        self.prelu = PReLU(stem_channels)
        stages = []
        in_c = stem_channels
        for n, c in zip(layers, widths):
            blocks = [IBasicBlock(in_c, c, stride=2)]
            blocks += [IBasicBlock(c, c, stride=1) for _ in range(n - 1)]
            stages.append(nn.SequentialCell(blocks))
            in_c = c
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn2 = _bn2d(in_c)
        self.dropout = nn.Dropout(p=dropout) if dropout > 0 else None
        final = input_size // 16
        self.fc = nn.Dense(in_c * final * final, embedding_size)
        torch_linear_init(self.fc)
        self.features = nn.BatchNorm1d(embedding_size, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        # The reference freezes the embedding BN's scale at 1 (only the shift learns).
        self.features.gamma.requires_grad = False

    def construct(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.bn2(x)
        x = ops.flatten(x, start_dim=1)
        if self.dropout is not None:
            x = self.dropout(x)
        return self.features(self.fc(x))


# Registered variants: the stage depths of each size; other keyword arguments go to ``IResNet``.

@BACKBONES.register_module()
def iresnet18(**kwargs):
    """IResNet-18: stages (2, 2, 2, 2), ~24.0M parameters."""
    return IResNet(layers=(2, 2, 2, 2), **kwargs)


@BACKBONES.register_module()
def iresnet34(**kwargs):
    """IResNet-34: stages (3, 4, 6, 3), ~34.1M parameters."""
    return IResNet(layers=(3, 4, 6, 3), **kwargs)


@BACKBONES.register_module()
def iresnet50(**kwargs):
    """IResNet-50: stages (3, 4, 14, 3), ~43.6M parameters."""
    return IResNet(layers=(3, 4, 14, 3), **kwargs)


@BACKBONES.register_module()
def iresnet100(**kwargs):
    """IResNet-100: stages (3, 13, 30, 3), ~65.2M parameters."""
    return IResNet(layers=(3, 13, 30, 3), **kwargs)


@BACKBONES.register_module()
def iresnet200(**kwargs):
    """IResNet-200: stages (6, 26, 60, 6), ~118.8M parameters."""
    return IResNet(layers=(6, 26, 60, 6), **kwargs)
