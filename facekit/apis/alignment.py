"""Face alignment for inference: the ArcFace 5-point similarity transform.

Re-exported from its one home, ``facekit.datasets.alignment`` (dataset readers such as the IJB
loose-crop reader align with it too, and datasets never import ``facekit.apis``).
"""
from ..datasets.alignment import (ARCFACE_TEMPLATE, TEMPLATE_96x112, align_face, arcface_template,  # noqa: F401
                                  estimate_similarity, transform_points)

__all__ = ['ARCFACE_TEMPLATE', 'TEMPLATE_96x112', 'align_face', 'arcface_template', 'estimate_similarity',
           'transform_points']
