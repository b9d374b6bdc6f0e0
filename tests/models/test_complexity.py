"""complexity(): parameters and multiply-adds against DESIGN.md's published figures and hand counts."""
import pytest

import facekit  # noqa: F401
from facekit.models import complexity
from facekit.registry import BACKBONES, MODELS

# DESIGN.md forward multiply-adds (G) and parameters (M).
PUBLISHED = {'iresnet18': (2.6, 24.0), 'iresnet50': (6.3, 43.6), 'iresnet100': (12.1, 65.2),
             'mobilefacenet': (0.45, 2.06), 'vit_t': (1.5, 19.1), 'vit_s': (5.7, 76.0)}


def check(name):
    gmacs, mparams = PUBLISHED[name]
    result = complexity(BACKBONES.build(dict(type=name)))
    assert result['macs'] / 1e9 == pytest.approx(gmacs, rel=0.05)
    assert result['params'] / 1e6 == pytest.approx(mparams, rel=0.01)
    return result


@pytest.mark.parametrize('name', ['iresnet18', 'mobilefacenet'])
def test_complexity_matches_published(name):
    check(name)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['iresnet50', 'iresnet100', 'vit_t', 'vit_s'])
def test_complexity_matches_published_large(name):
    check(name)


def test_vit_complexity_by_hand():
    # tiny ViT: 16 tokens of width 16, 2 blocks; count every matmul by hand
    net = BACKBONES.build(dict(type='VisionTransformer', img_size=36, patch_size=9, embed_dim=16, depth=2,
                               num_heads=2, embedding_size=8))
    n, d, depth = 16, 16, 2
    patch = n * d * 3 * 81
    per_block = n * (d * 3 * d + d * d + 2 * d * 4 * d) + 2 * n * n * d
    head = n * d * d + d * 8
    result = complexity(net, (2, 3, 36, 36))
    assert result['by_type'] == {'Conv2d': patch, 'Dense': depth * n * (3 * d * d + d * d + 8 * d * d) + head,
                                 'Attention': depth * 2 * n * n * d}
    assert result['macs'] == patch + depth * per_block + head


def test_complexity_of_a_recognizer_is_its_backbone():
    model = MODELS.build(dict(type='FaceRecognizer', backbone=dict(type='mobilefacenet'),
                              head=dict(type='NormFCHead', num_classes=100), loss=dict(type='ArcFaceLoss')))
    assert complexity(model) == complexity(model.backbone)
