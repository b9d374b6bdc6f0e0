"""facekit.models: backbones, heads, losses and the FaceRecognizer. Importing fills the registries."""
from . import backbones, heads, losses  # noqa: F401
from .recognizer import FaceRecognizer  # noqa: F401
from .complexity import complexity  # noqa: F401
