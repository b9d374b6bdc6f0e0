"""FaceRecognizer: config build, parameter names, extract, graph-mode training, plugin losses."""
import os
import textwrap

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

import facekit  # noqa: F401
from facekit.config import Config
from facekit.registry import LOSSES, MODELS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_RESNET = dict(type='IResNet', layers=(1, 1, 1, 1), widths=(8, 8, 16, 16), embedding_size=16, input_size=32)
TINY_VIT = dict(type='VisionTransformer', img_size=36, patch_size=9, embed_dim=16, depth=2, num_heads=2,
                embedding_size=16, mask_ratio=0.25, drop_path_rate=0.1)


def train_steps(model, x, y, steps=3, lr=0.1):
    """Graph-mode training on one fixed batch; returns the loss before each step."""
    model.set_train(True)
    opt = nn.SGD(model.trainable_params(), learning_rate=lr, momentum=0.9)
    value_and_grad = ms.value_and_grad(model, None, opt.parameters)

    @ms.jit
    def step(img, label):
        loss, grads = value_and_grad(img, label)
        opt(grads)
        return loss

    return [float(step(x, y).asnumpy()) for _ in range(steps)]


def fixed_batch(size, n=8, classes=10, seed=0):
    rng = np.random.RandomState(seed)
    return (Tensor(rng.randn(n, 3, size, size).astype(np.float32)),
            Tensor(rng.randint(0, classes, n).astype(np.int32)))


def test_graph_mode_training_decreases_loss():
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_seed(0)
    model = MODELS.build(dict(type='FaceRecognizer', backbone=TINY_RESNET,
                              head=dict(type='NormFCHead', embedding_size=16, num_classes=10),
                              loss=dict(type='ArcFaceLoss')))
    losses = train_steps(model, *fixed_batch(32))
    assert all(np.isfinite(losses))
    assert losses[0] > losses[1] > losses[2], losses


@pytest.mark.slow
def test_graph_mode_training_vit_partial_fc_sampled_curricular():
    # masking, drop path, sampled PartialFC and a stateful loss all inside one compiled step
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_seed(1)
    model = MODELS.build(dict(type='FaceRecognizer', backbone=TINY_VIT,
                              head=dict(type='PartialFCHead', embedding_size=16, num_classes=10, sample_rate=0.8),
                              loss=dict(type='CurricularFaceLoss')))
    losses = train_steps(model, *fixed_batch(36), steps=4, lr=0.05)
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0], losses
    assert float(model.loss.t.asnumpy()[0]) != 0.0   # the curriculum state moved


def test_build_from_base_config_names_and_extract(tmp_path):
    cfg_file = tmp_path / 'mbf.py'
    cfg_file.write_text(textwrap.dedent(f"""
        _base_ = ['{ROOT}/configs/_base_/models/mobilefacenet.py']
        model = dict(head=dict(num_classes=20))
    """))
    cfg = Config.fromfile(str(cfg_file))
    model = MODELS.build(cfg.model)
    names = [n for n, _ in model.parameters_and_names()]
    assert all(n.startswith(('backbone.', 'head.')) for n in names), names[:5]
    assert model.head.weight.shape == (20, 512)
    model.set_train(False)
    emb = model.extract(Tensor(np.random.RandomState(0).randn(2, 3, 112, 112).astype(np.float32)))
    assert emb.shape == (2, 512) and emb.dtype == ms.float32
    loss = model(Tensor(np.zeros((2, 3, 112, 112), np.float32)), Tensor(np.array([0, 19], np.int32)))
    assert loss.shape == () and np.isfinite(float(loss.asnumpy()))


def test_backbone_part_of_a_checkpoint_loads_with_prefix(tmp_path):
    from facekit.utils.checkpoint import load_checkpoint, load_state_into, save_checkpoint
    cfg = dict(type='FaceRecognizer', backbone=TINY_RESNET,
               head=dict(type='NormFCHead', embedding_size=16, num_classes=10), loss=dict(type='ArcFaceLoss'))
    model = MODELS.build(cfg)
    path = str(tmp_path / 'm.ckpt')
    save_checkpoint(model, path)
    fresh = MODELS.build(cfg).backbone
    missing, unexpected = load_state_into(fresh, load_checkpoint(path), prefix='backbone.', strict=True)
    assert not missing and not unexpected
    np.testing.assert_array_equal(fresh.conv1.weight.asnumpy(), model.backbone.conv1.weight.asnumpy())


def test_plugin_loss_from_a_test_module_through_a_config(tmp_path, monkeypatch):
    (tmp_path / 'my_plugin_loss.py').write_text(textwrap.dedent("""
        from mindspore import nn
        from facekit.registry import LOSSES
        from facekit.models.losses.cross_entropy import SoftmaxCrossEntropy


        @LOSSES.register_module(force=True)
        class HalfScaleTestLoss(nn.Cell):
            '''Softmax CE on s * cosine, s = 2 (a user's loss, defined outside facekit).'''

            def __init__(self, s=2.0):
                super().__init__()
                self.s = s
                self.cross_entropy = SoftmaxCrossEntropy()

            def set_cross_entropy(self, ce):
                self.cross_entropy = ce

            def construct(self, cosine, labels, norms=None):
                return self.cross_entropy(cosine * self.s, labels)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg_file = tmp_path / 'exp.py'
    cfg_file.write_text(textwrap.dedent(f"""
        custom_imports = dict(imports=['my_plugin_loss'])
        model = dict(type='FaceRecognizer', backbone={TINY_RESNET!r},
                     head=dict(type='NormFCHead', embedding_size=16, num_classes=4),
                     loss=dict(type='HalfScaleTestLoss', s=2.0))
    """))
    cfg = Config.fromfile(str(cfg_file))
    assert 'HalfScaleTestLoss' in LOSSES
    model = MODELS.build(cfg.model)
    model.set_train(False)
    x, y = fixed_batch(32, n=3, classes=4)
    cos = model.head(model.extract(x), y)[0].asnumpy().astype(np.float64) * 2.0
    z = cos - cos.max(1, keepdims=True)
    expected = np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(3), y.asnumpy()])
    assert float(model(x, y).asnumpy()) == pytest.approx(expected, rel=1e-5)


def test_loss_without_set_cross_entropy_is_rejected_for_a_sharded_head():
    class PlainLoss(nn.Cell):
        def construct(self, cosine, labels, norms=None):
            return cosine.mean()

    # logits of one shard of the classes: a plain softmax over them would be a different loss
    with pytest.raises(TypeError, match='set_cross_entropy'):
        MODELS.build(dict(type='FaceRecognizer', backbone=TINY_RESNET, loss=PlainLoss(),
                          head=dict(type='PartialFCHead', embedding_size=16, num_classes=4, rank=0, world_size=2)))
    # all classes on this rank: the loss's own softmax is the right one
    model = MODELS.build(dict(type='FaceRecognizer', backbone=TINY_RESNET, loss=PlainLoss(),
                              head=dict(type='PartialFCHead', embedding_size=16, num_classes=4)))
    assert not model.head.is_sharded


def test_head_must_subclass_base_head():
    class PlainHead(nn.Cell):
        def construct(self, embeddings, labels):
            return embeddings, labels

    with pytest.raises(TypeError, match='BaseHead'):
        MODELS.build(dict(type='FaceRecognizer', backbone=TINY_RESNET, loss=dict(type='ArcFaceLoss'),
                          head=PlainHead()))


def test_fp16_backbone_with_fp32_head_and_loss():
    # AMP recipe: O2 casts the model to fp16 (BN stays fp32); the head and margin loss are put
    # back to fp32, as the reference computes logits and loss in fp32.
    model = MODELS.build(dict(type='FaceRecognizer', backbone=TINY_VIT,
                              head=dict(type='PartialFCHead', embedding_size=16, num_classes=10, sample_rate=0.5),
                              loss=dict(type='CurricularFaceLoss')))
    amp = ms.amp.auto_mixed_precision(model, 'O2')
    model.head.to_float(ms.float32)
    model.loss.to_float(ms.float32)
    amp.set_train(True)
    assert model.extract(fixed_batch(36, n=2)[0]).dtype == ms.float16
    loss, grads = ms.value_and_grad(amp, None, model.trainable_params())(*fixed_batch(36, n=4))
    assert loss.dtype == ms.float32 and np.isfinite(float(loss.asnumpy()))
    assert all(np.all(np.isfinite(g.asnumpy().astype(np.float32))) for g in grads)
