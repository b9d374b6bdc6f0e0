"""BaseHead: the contract every head keeps, with the defaults of a head that holds all classes on one rank."""
from mindspore import nn, ops

from ..losses.cross_entropy import SoftmaxCrossEntropy

__all__ = ['BaseHead']


class BaseHead(nn.Cell):
    """Base of the heads: embeddings -> logits over the classes, plus what the model and checkpoints ask of a head.

    A subclass sets its parameters in ``__init__`` (after ``super().__init__(embedding_size, num_classes)``)
    and writes ``construct``. The other methods have defaults for a head that holds every class
    centre on this rank; a sharded head (``PartialFCHead``) overrides them.

    Args:
        embedding_size: embedding dimension E.
        num_classes: number of classes C over all ranks.
    Call: ``(embeddings (B, E) float32, labels (B,) int32 global class ids) -> (logits (N, C'), labels (N,))``
    with the labels renumbered into the logits' columns (-1 where the class is not among them);
    N = B on one rank, C' = C for a head without sampling or sharding.

    Used by ``FaceRecognizer``:
        ``cross_entropy_cell()`` the softmax cross-entropy that matches the logits (handed to the loss);
        ``gather_rows(x)`` per-sample rows (B, ...) -> the (N, ...) rows the logits belong to (norms).
    Used by checkpoint save/load:
        ``is_sharded``, ``shard_slice()``, ``sharded_param_names()``.
    """

    def __init__(self, embedding_size=512, num_classes=10572):
        super().__init__()
        if embedding_size < 1 or num_classes < 1:
            raise ValueError(f'{type(self).__name__} needs embedding_size >= 1 and num_classes >= 1, '
                             f'got {embedding_size} and {num_classes}')
        self.embedding_size = int(embedding_size)
        self.num_classes = int(num_classes)

    def construct(self, embeddings, labels):
        raise NotImplementedError(f'{type(self).__name__} must implement construct(embeddings, labels)')

    def cross_entropy_cell(self):
        """The softmax cross-entropy over this head's logits; the plain single-rank one by default."""
        return SoftmaxCrossEntropy()

    def gather_rows(self, x):
        """Per-sample rows (B, ...) of this rank -> the rows the logits are computed for (identity by default)."""
        return x

    def local_labels(self, labels):
        """Global class ids (N,) -> (ids relative to ``shard_slice()``'s start, -1 outside it; valid (N,) bool).

        The identity (with ``valid = 0 <= label < num_classes``) for a head that holds every class.
        """
        start, num_local = self.shard_slice()
        local = labels - start
        valid = ops.logical_and(local >= 0, local < num_local)
        return ops.where(valid, local, -ops.ones_like(local)), valid

    @property
    def is_sharded(self):
        """True when this rank holds only part of the per-class parameters (then checkpoints need every rank's part)."""
        return False

    def shard_slice(self):
        """(start, num_local): the rows of the full (num_classes, ...) per-class state this rank holds."""
        return 0, self.num_classes

    def sharded_param_names(self):
        """Names, relative to the head, of per-class parameters whose rows are split over ranks when sharded.

        Checkpoints re-assemble them from every rank's file and cut ``shard_slice()`` rows on load, so a
        run can resume on another number of ranks.
        """
        return ()
