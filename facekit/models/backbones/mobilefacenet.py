"""MobileFaceNet.

Chen et al., "MobileFaceNets: Efficient CNNs for Accurate Real-Time Face Verification on Mobile
Devices", CCBR 2018, in the widened form of insightface's arcface_torch ("mbf", 0.45 GFLOPs):
a stride-2 stem, inverted-residual depthwise-separable blocks (1, 4, 6, 2) with channel scale 2,
a 1x1 conv to 512 and the GDC head (7x7 depthwise conv + Linear + BN1d).
"""
from mindspore import nn, ops
from mindspore.common.initializer import HeNormal

from ...registry import BACKBONES
from .layers import DepthwiseConv2d, PReLU

__all__ = ['MobileFaceNet', 'mobilefacenet', 'mobilefacenet_large']


def _conv_bn(in_c, out_c, kernel=1, stride=1, groups=1):
    # Reference init: kaiming normal (fan_out, relu) for convs.
    padding = kernel // 2 if kernel == 3 else 0
    init = HeNormal(mode='fan_out', nonlinearity='relu')
    if groups == in_c == out_c and groups > 1:
        # same layer as nn.Conv2d(group=C), with a weight gradient 4-18x faster on MindSpore CPU
        conv = DepthwiseConv2d(in_c, kernel, stride=stride, padding=padding, weight_init=init)
    else:
        conv = nn.Conv2d(in_c, out_c, kernel, stride=stride, pad_mode='pad', padding=padding,
                         group=groups, has_bias=False, weight_init=init)
    return [conv, nn.BatchNorm2d(out_c, momentum=0.9)]


class ConvBlock(nn.SequentialCell):
    """conv (no bias) -> BN -> PReLU."""

    def __init__(self, in_c, out_c, kernel=1, stride=1, groups=1):
        super().__init__(_conv_bn(in_c, out_c, kernel, stride, groups) + [PReLU(out_c)])


class LinearBlock(nn.SequentialCell):
    """conv (no bias) -> BN, no activation (the linear bottleneck)."""

    def __init__(self, in_c, out_c, kernel=1, stride=1, groups=1):
        super().__init__(_conv_bn(in_c, out_c, kernel, stride, groups))


class DepthWise(nn.Cell):
    """Inverted residual: 1x1 expand to ``groups`` channels -> 3x3 depthwise(stride) -> 1x1 linear project.

    Args:
        in_c: input channels.
        out_c: output channels.
        groups: expanded (depthwise) channels.
        stride: depthwise stride.
        residual: add the input (needs stride 1 and in_c == out_c).
    """

    def __init__(self, in_c, out_c, groups, stride=1, residual=False):
        super().__init__()
        if residual and (stride != 1 or in_c != out_c):
            raise ValueError(f'DepthWise residual needs stride 1 and in_c == out_c; got stride={stride}, '
                             f'in_c={in_c}, out_c={out_c}')
        self.conv = ConvBlock(in_c, groups, 1)
        self.conv_dw = ConvBlock(groups, groups, 3, stride, groups=groups)
        self.project = LinearBlock(groups, out_c, 1)
        self.residual = residual

    def construct(self, x):
        out = self.project(self.conv_dw(self.conv(x)))
        if self.residual:
            out = out + x
        return out


def _residual(channels, num_block, groups):
    return [DepthWise(channels, channels, groups, 1, residual=True) for _ in range(num_block)]


@BACKBONES.register_module()
class MobileFaceNet(nn.Cell):
    """MobileFaceNet: (B, 3, 112, 112) float32 -> (B, embedding_size) float32 (un-normalized).

    Args:
        embedding_size: output embedding dimension.
        blocks: residual blocks in the four stages (reference 0.45G model: (1, 4, 6, 2)).
        scale: channel multiplier of the 64/128-wide trunk (reference: 2).
    """

    def __init__(self, embedding_size=512, blocks=(1, 4, 6, 2), scale=2):
        super().__init__()
        if len(blocks) != 4:
            raise ValueError(f'MobileFaceNet blocks must have 4 entries, got {blocks}')
        c64, c128 = 64 * scale, 128 * scale
        layers = [ConvBlock(3, c64, 3, 2)]
        if blocks[0] == 1:
            # The reference's single first block is a grouped 3x3 conv (64 groups), not a residual.
            layers.append(ConvBlock(c64, c64, 3, 1, groups=64))
        else:
            layers += _residual(c64, blocks[0], 128)
        layers.append(DepthWise(c64, c64, 128, stride=2))
        layers += _residual(c64, blocks[1], 128)
        layers.append(DepthWise(c64, c128, 256, stride=2))
        layers += _residual(c128, blocks[2], 256)
        layers.append(DepthWise(c128, c128, 512, stride=2))
        layers += _residual(c128, blocks[3], 256)
        self.layers = nn.SequentialCell(layers)
        self.conv_sep = ConvBlock(c128, 512, 1)
        # GDC: global depthwise conv over the 7x7 map, then a bias-free Linear and BN1d.
        self.gdc = LinearBlock(512, 512, 7, 1, groups=512)
        self.linear = nn.Dense(512, embedding_size, has_bias=False,
                               weight_init=HeNormal(mode='fan_out', nonlinearity='relu'))
        self.features = nn.BatchNorm1d(embedding_size, momentum=0.9)
        self.embedding_size = embedding_size

    def construct(self, x):
        x = self.conv_sep(self.layers(x))
        x = ops.flatten(self.gdc(x), start_dim=1)
        return self.features(self.linear(x))


# Registered variants: the block counts and width of each size; keyword arguments override them
# (configs shrink the model with blocks=/scale=) and reach ``MobileFaceNet``.

@BACKBONES.register_module()
def mobilefacenet(**kwargs):
    """MobileFaceNet-0.45G (arcface_torch "mbf"): blocks (1, 4, 6, 2), scale 2, ~2.06M parameters."""
    return MobileFaceNet(**{'blocks': (1, 4, 6, 2), 'scale': 2, **kwargs})


@BACKBONES.register_module()
def mobilefacenet_large(**kwargs):
    """MobileFaceNet-large (arcface_torch "mbf_large"): blocks (2, 8, 12, 4), scale 4."""
    return MobileFaceNet(**{'blocks': (2, 8, 12, 4), 'scale': 4, **kwargs})
