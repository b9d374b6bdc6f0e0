"""facekit.apis: inference (FaceEmbedder, infer), face alignment, export and weight import.

Export (``facekit.apis.export``) and ONNX weight import (``facekit.apis.onnx_import``) need the
optional ``onnx`` / ``onnxruntime`` packages and are imported from their modules directly.
"""
from .alignment import ARCFACE_TEMPLATE, align_face, arcface_template, estimate_similarity, transform_points
from .embedder import FaceEmbedder, infer, l2_normalize
from .images import collect_images, normalize_batch, read_image
from .model_loading import backbone_cfg_from_config, build_backbone, load_backbone_weights

__all__ = ['ARCFACE_TEMPLATE', 'align_face', 'arcface_template', 'estimate_similarity', 'transform_points',
           'FaceEmbedder', 'infer', 'l2_normalize', 'collect_images', 'normalize_batch', 'read_image',
           'backbone_cfg_from_config', 'build_backbone', 'load_backbone_weights']
