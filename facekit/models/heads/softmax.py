"""Plain (un-normalized) softmax classifier head, the baseline for CrossEntropyLoss."""
from mindspore import nn

from ...registry import HEADS
from ..backbones.layers import torch_linear_init
from .base import BaseHead

__all__ = ['SoftmaxHead']


@HEADS.register_module()
class SoftmaxHead(BaseHead):
    """Linear classifier ``logits = x W^T + b`` (not cosines; pair with ``CrossEntropyLoss``).

    Args:
        embedding_size: embedding dimension E.
        num_classes: number of classes C.
        bias: learn a per-class bias.
    Call: ``(embeddings (B, E), labels (B,) int32) -> (logits (B, C), labels (B,))``.
    """

    def __init__(self, embedding_size=512, num_classes=10572, bias=True):
        super().__init__(embedding_size, num_classes)
        self.fc = nn.Dense(embedding_size, num_classes, has_bias=bias)
        torch_linear_init(self.fc)

    def construct(self, embeddings, labels):
        return self.fc(embeddings), labels
