"""facekit.models.backbones: image (B, 3, 112, 112) -> embedding (B, E). Importing fills BACKBONES."""
from .iresnet import IResNet, iresnet18, iresnet34, iresnet50, iresnet100, iresnet200  # noqa: F401
from .mobilefacenet import MobileFaceNet, mobilefacenet, mobilefacenet_large  # noqa: F401
from .vit import VisionTransformer, vit_t, vit_s, vit_b, vit_l  # noqa: F401
from .layers import PReLU, count_parameters, drop_path_scales  # noqa: F401
