"""facekit.models.losses: margin losses on cosine logits. Importing fills LOSSES."""
from .cross_entropy import CrossEntropyLoss, SoftmaxCrossEntropy  # noqa: F401
from .margin import (ArcFaceLoss, CombinedMarginLoss, CosFaceLoss, MarginSoftmaxLoss,  # noqa: F401
                     SphereFaceLoss, combined_margin)
from .adaptive import AdaFaceLoss, CurricularFaceLoss, MagFaceLoss  # noqa: F401
