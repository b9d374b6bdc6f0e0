"""Small building blocks shared by the backbones: a fast PReLU, a fast-backward depthwise conv,
stochastic depth, init helpers."""
import math

import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Uniform, initializer


class PReLU(nn.Cell):
    """Channel-wise PReLU, ``relu(x) - w * relu(-x)``, for NCHW (or (B, C)) input.

    Same function and parameter (``w``, shape (C,), init 0.25) as ``mindspore.nn.PReLU``,
    written with two ReLUs because that form trains faster on MindSpore CPU: forward+backward
    of a (32, 64, 56, 56) map took 0.21 s against 0.38-0.61 s for ``nn.PReLU`` (graph mode,
    2 cores, same run).

    Args:
        channels: number of channels C (dimension 1 of the input).
        init: initial slope for negative inputs.
    """

    def __init__(self, channels, init=0.25):
        super().__init__()
        self.w = Parameter(Tensor(np.full((channels,), init, np.float32)), name='w')
        self.channels = channels

    def construct(self, x):
        w = self.w.astype(x.dtype)
        if x.ndim == 4:
            w = w.reshape(1, self.channels, 1, 1)
        return ops.relu(x) - w * ops.relu(-x)


class _DepthwiseConvFn(nn.Cell):
    """Depthwise conv ``(x (B,C,H,W), w (C,1,k,k)) -> (B,C,Ho,Wo)`` with a fast weight gradient.

    MindSpore's CPU kernel for a depthwise conv's weight gradient is slow: for a
    (32, 128, 56, 56) map it took 6.7 s against 0.36 s for the formulation below (same run,
    2 cores). dW[c, i, j] = sum_{b,h,w} x_pad[b, c, s*h + i, s*w + j] * dout[b, c, h, w] is a
    grouped convolution of the channel-major input (1, C*B, Hp, Wp) with dout as the kernel
    (C, B, Ho, Wo), dilated by the stride; its first k x k outputs are the gradient.
    """

    def __init__(self, channels, kernel_size, stride, padding, conv_op):
        super().__init__()
        self.channels = channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        # the forward op is nn.Conv2d's own primitive: its tuple attributes are what MindSpore's
        # ONNX exporter expects (a Conv2D built here from ints failed to export)
        self.conv = conv_op
        self.input_grad = ops.Conv2DBackpropInput(out_channel=channels, kernel_size=kernel_size, pad_mode='pad',
                                                  pad=padding, stride=stride, group=channels)

    def construct(self, x, w):
        return self.conv(x, w)

    def bprop(self, x, w, out, dout):
        dx = self.input_grad(dout, w, x.shape)
        b, c, h, wd = x.shape
        k = self.kernel_size
        channel_major = x.transpose(1, 0, 2, 3).reshape(1, c * b, h, wd)
        kernel = dout.transpose(1, 0, 2, 3)
        dw = ops.conv2d(channel_major, kernel, pad_mode='pad', padding=self.padding, dilation=self.stride,
                        groups=c)
        return dx, dw[:, :, :k, :k].reshape(c, 1, k, k)


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(C, C, k, stride, padding, group=C, has_bias=False)`` with a fast weight gradient.

    A subclass, so parameter names (``weight``), initialisation, export and complexity counting
    are those of ``nn.Conv2d``; only the backward differs (see ``_DepthwiseConvFn``).

    Args:
        channels: C, input and output channels.
        kernel_size: k (square kernel).
        stride: s.
        padding: zero padding on each side.
        weight_init: initializer for the (C, 1, k, k) weight.
    """

    def __init__(self, channels, kernel_size, stride=1, padding=0, weight_init='he_uniform'):
        super().__init__(channels, channels, kernel_size, stride=stride, pad_mode='pad', padding=padding,
                         group=channels, has_bias=False, weight_init=weight_init)
        self.depthwise = _DepthwiseConvFn(channels, kernel_size, stride, padding, self.conv2d)

    def construct(self, x):
        return self.depthwise(x, self.weight)


def drop_path_scales(keep_probs, shape):
    """Stochastic-depth factors (Huang et al., ECCV 2016): a residual branch is kept with its
    probability and then scaled by 1/probability, else zeroed, independently per sample.

    Args:
        keep_probs: (D,) float tensor, keep probability of each of D branches (1 = never dropped).
        shape: trailing shape of the factors, e.g. (B, 1, 1) for (B, N, C) tokens.
    Returns: (D,) + shape tensor of values in {0, 1/p}.
    """
    p = keep_probs.reshape((-1,) + (1,) * len(shape))
    return ops.floor(p + ops.rand((keep_probs.shape[0],) + tuple(shape), dtype=keep_probs.dtype)) / p


def torch_linear_init(dense):
    """Initialise a ``nn.Dense`` like PyTorch's ``nn.Linear`` default (the reference trainers'
    choice where they leave the layer alone): U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias."""
    bound = 1.0 / math.sqrt(dense.in_channels)
    dense.weight.set_data(initializer(Uniform(bound), dense.weight.shape, dense.weight.dtype))
    if dense.bias is not None:
        dense.bias.set_data(initializer(Uniform(bound), dense.bias.shape, dense.bias.dtype))


def torch_conv_default_init(conv):
    """PyTorch's ``nn.Conv2d`` default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform a=sqrt(5))."""
    fan_in = conv.in_channels // conv.group * int(np.prod(conv.kernel_size))
    bound = 1.0 / math.sqrt(fan_in)
    conv.weight.set_data(initializer(Uniform(bound), conv.weight.shape, conv.weight.dtype))
    if conv.bias is not None:
        conv.bias.set_data(initializer(Uniform(bound), conv.bias.shape, conv.bias.dtype))


def count_parameters(cell):
    """Number of parameters of ``cell``: weights and BN affine (trainable or frozen), not BN running statistics."""
    return int(sum(p.size for n, p in cell.parameters_and_names()
                   if 'moving_mean' not in n and 'moving_variance' not in n))
