"""facekit.models.heads: embeddings -> (cosine) logits. Importing fills HEADS."""
from .base import BaseHead  # noqa: F401
from .norm_fc import NormFCHead, SubCenterArcFace, cosine_logits, l2_normalize  # noqa: F401
from .softmax import SoftmaxHead  # noqa: F401
from .partial_fc import PartialFCHead, shard_range  # noqa: F401
