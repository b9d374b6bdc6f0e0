"""FaceRecognizer: backbone -> embedding -> head (cosine logits) -> margin loss, the trainable model."""
from mindspore import nn, ops

from ..registry import BACKBONES, HEADS, LOSSES, MODELS
from .heads.base import BaseHead

__all__ = ['FaceRecognizer']


@MODELS.register_module()
class FaceRecognizer(nn.Cell):
    """The trainable face-recognition model, built from three config dicts.

    Registered in ``MODELS``; parameter names start with ``backbone.``, ``head.`` (and ``loss.`` for
    losses with state such as CurricularFace's t), so ``load_state_into(backbone, params,
    prefix='backbone.')`` loads a checkpoint's backbone.

    Args:
        backbone: BACKBONES config, e.g. ``dict(type='iresnet50', embedding_size=512)``.
        head: HEADS config, e.g. ``dict(type='PartialFCHead', embedding_size=512, num_classes=10572)``.
        loss: LOSSES config, e.g. ``dict(type='ArcFaceLoss')``.
    Calls:
        ``model(img (B, 3, 112, 112) float32, label (B,) int32) -> scalar loss`` (graph-mode
        compilable; use with ``mindspore.value_and_grad``). ``forward_train`` is the same.
        ``model.extract(img) -> (B, E)`` raw (un-normalized) embeddings.
    Mixed precision: after ``mindspore.amp.auto_mixed_precision(model, 'O2')`` put the head and
    loss back to fp32 (``model.head.to_float(mindspore.float32)``, same for ``model.loss``): the
    reference computes logits and the margin loss in fp32, and an fp16 s=64 softmax can overflow.
    The head (a ``BaseHead``) hands its ``cross_entropy_cell()`` to the loss's ``set_cross_entropy``
    (PartialFC's spans ranks), and its ``gather_rows`` gathers the embedding norms, so the loss
    sees the same global batch as the head. A loss without ``set_cross_entropy`` keeps its own
    softmax; that is refused only for a head whose logits are sharded over ranks.
    """

    def __init__(self, backbone, head, loss):
        super().__init__()
        self.backbone = backbone if isinstance(backbone, nn.Cell) else BACKBONES.build(backbone)
        self.head = head if isinstance(head, nn.Cell) else HEADS.build(head)
        self.loss = loss if isinstance(loss, nn.Cell) else LOSSES.build(loss)
        if not isinstance(self.head, BaseHead):
            raise TypeError(f'head {type(self.head).__name__} must subclass facekit.models.heads.BaseHead '
                            '(it supplies cross_entropy_cell, gather_rows and the sharding API)')
        if hasattr(self.loss, 'set_cross_entropy'):
            self.loss.set_cross_entropy(self.head.cross_entropy_cell())
        elif self.head.is_sharded:
            raise TypeError(f'{type(self.head).__name__} computes the cross-entropy across ranks, but loss '
                            f'{type(self.loss).__name__} has no set_cross_entropy() to accept it')

    def construct(self, img, label):
        embeddings = self.backbone(img)
        norms = ops.sqrt((embeddings * embeddings).sum(axis=1))
        logits, labels = self.head(embeddings, label)
        norms = self.head.gather_rows(norms)
        return self.loss(logits, labels, norms)

    def forward_train(self, img, label):
        """Same as calling the model: scalar training loss."""
        return self(img, label)

    def extract(self, img):
        """(B, 3, H, W) float32 normalized images -> (B, E) raw embeddings (call ``set_train(False)`` first)."""
        return self.backbone(img)
