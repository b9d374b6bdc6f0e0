"""Give randomly initialised backbones realistic activations for parity tests.

Random init leaves BatchNorm running statistics at (0, 1), so a 20-layer net's output reaches
1e7 (iresnet18) or 1e-6 (mobilefacenet) and an absolute tolerance means nothing. Setting every
BN's running mean/variance to the statistics of its actual input (one eval pass, in order)
brings embeddings to O(1), as in a trained model. The 1e-2 variance floor keeps near-constant
channels (a few samples see little variation) from amplifying rounding noise a trained model would not.
"""
import mindspore as ms
import numpy as np
from mindspore import nn


def calibrate_bn(net, x):
    """Set each BatchNorm's moving mean/variance from its input on batch ``x`` (N, 3, H, W) float32."""
    previous = ms.get_context('mode')
    ms.set_context(mode=ms.PYNATIVE_MODE)
    handles = []

    def pre_hook(cell, inputs):
        data = inputs[0].asnumpy()
        axes = (0,) + tuple(range(2, data.ndim))
        cell.moving_mean.set_data(ms.Tensor(data.mean(axis=axes).astype(np.float32)))
        cell.moving_variance.set_data(ms.Tensor(data.var(axis=axes).astype(np.float32) + 1e-2))

    try:
        net.set_train(False)
        for _, cell in net.cells_and_names():
            if isinstance(cell, (nn.BatchNorm2d, nn.BatchNorm1d)):
                handles.append(cell.register_forward_pre_hook(pre_hook))
        net(ms.Tensor(x))
    finally:
        for h in handles:
            h.remove()
        ms.set_context(mode=previous)
    return net
