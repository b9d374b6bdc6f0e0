"""Model complexity: parameters and forward multiply-adds, counted analytically.

One forward pass in PyNative mode records, through forward hooks, the output shape of every
``nn.Conv2d`` and ``nn.Dense`` and the token count of every ViT ``Attention``; the multiply-adds
are then
    Conv2d:    out_elements * (in_channels / groups) * kh * kw
    Dense:     out_elements * in_features
    Attention: 2 * N * N * D   (q k^T and attn v; the qkv/proj layers are Dense)
per image. BatchNorm, activations, softmax and additions are not counted (the convention of the
published figures).
"""
import numpy as np
import mindspore as ms
from mindspore import Tensor, nn

from .backbones.layers import count_parameters
from .backbones.vit import Attention

__all__ = ['complexity']


def complexity(model, input_shape=(1, 3, 112, 112)):
    """Parameters and multiply-adds of one forward pass.

    Args:
        model: a backbone cell, or a model with a ``.backbone`` (then the backbone is measured,
            as the published figures are).
        input_shape: (B, C, H, W) input shape; MACs are reported per image.
    Returns: dict(params=int (weights and BN affine, no running statistics), macs=int per image,
        by_type=dict(Conv2d=int, Dense=int, Attention=int)).
    """
    net = model.backbone if hasattr(model, 'backbone') and isinstance(model.backbone, nn.Cell) else model
    batch = int(input_shape[0])
    counts = {'Conv2d': 0, 'Dense': 0, 'Attention': 0}

    def conv_hook(cell, inputs, output):
        kh, kw = cell.kernel_size
        counts['Conv2d'] += int(np.prod(output.shape)) * (cell.in_channels // cell.group) * kh * kw

    def dense_hook(cell, inputs, output):
        outputs = output if isinstance(output, (tuple, list)) else (output,)   # the ViT's q, k, v projection
        counts['Dense'] += sum(int(np.prod(o.shape)) for o in outputs) * cell.in_channels

    def attn_hook(cell, inputs, output):
        _, n, d = output.shape
        counts['Attention'] += int(output.shape[0]) * 2 * n * n * d

    handles = []
    for _, cell in net.cells_and_names():
        if isinstance(cell, nn.Conv2d):
            handles.append(cell.register_forward_hook(conv_hook))
        elif isinstance(cell, nn.Dense):
            handles.append(cell.register_forward_hook(dense_hook))
        elif isinstance(cell, Attention):
            handles.append(cell.register_forward_hook(attn_hook))
    old_mode = ms.get_context('mode')
    was_training = net.training
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        net.set_train(False)
        net(Tensor(np.zeros(input_shape, np.float32)))
    finally:
        for h in handles:
            h.remove()
        net.set_train(was_training)
        ms.set_context(mode=old_mode)
    by_type = {k: v // batch for k, v in counts.items()}
    return dict(params=count_parameters(net), macs=sum(by_type.values()), by_type=by_type)
