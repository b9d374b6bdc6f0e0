"""DepthwiseConv2d: the same function and gradients as nn.Conv2d(group=C), by another route."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from facekit.models.backbones.layers import DepthwiseConv2d


@pytest.mark.parametrize('channels,size,kernel,stride,padding', [
    (4, 9, 3, 1, 1), (4, 9, 3, 2, 1), (3, 8, 3, 2, 1), (6, 7, 7, 1, 0)])
def test_depthwise_matches_grouped_conv_values_and_gradients(channels, size, kernel, stride, padding):
    ms.set_context(mode=ms.GRAPH_MODE)
    rng = np.random.RandomState(0)
    mine = DepthwiseConv2d(channels, kernel, stride=stride, padding=padding)
    ref = nn.Conv2d(channels, channels, kernel, stride=stride, pad_mode='pad', padding=padding,
                    group=channels, has_bias=False)
    ref.weight.set_data(mine.weight.value())
    x = ms.Tensor(rng.randn(2, channels, size, size).astype(np.float32))
    out_shape = ref(x).shape
    probe = ms.Tensor(rng.randn(*out_shape).astype(np.float32))

    def mine_loss(x):
        return (mine(x) * probe).sum()

    def ref_loss(x):
        return (ref(x) * probe).sum()

    l1, (dx1, (dw1,)) = ms.jit(ms.value_and_grad(mine_loss, 0, mine.trainable_params()))(x)
    l2, (dx2, (dw2,)) = ms.jit(ms.value_and_grad(ref_loss, 0, ref.trainable_params()))(x)
    assert tuple(mine(x).shape) == tuple(out_shape)
    np.testing.assert_allclose(l1.asnumpy(), l2.asnumpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx1.asnumpy(), dx2.asnumpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw1.asnumpy(), dw2.asnumpy(), rtol=1e-4, atol=1e-4)
    assert isinstance(mine, nn.Conv2d) and [p.name for p in mine.trainable_params()] == ['weight']


def test_mobilefacenet_uses_it_for_every_depthwise_layer():
    from facekit.registry import BACKBONES
    model = BACKBONES.build(dict(type='mobilefacenet'))
    convs = [c for _, c in model.cells_and_names() if isinstance(c, nn.Conv2d)]
    depthwise = [c for c in convs if c.group == c.in_channels == c.out_channels > 1]
    # blocks (1, 4, 6, 2): 3 downsampling + 12 residual inverted blocks, each one depthwise 3x3, plus the GDC
    assert len(depthwise) == 16
    assert all(isinstance(c, DepthwiseConv2d) for c in depthwise)
    # the stem's grouped conv (64 groups over 128 channels) is not depthwise and stays a plain conv
    assert [type(c) for c in convs if 1 < c.group < c.in_channels] == [nn.Conv2d]
