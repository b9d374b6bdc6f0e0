"""mindface (the earlier MindSpore face toolkit) checkpoints: converted weights give mindface's embeddings.

Each test builds mindface's model as mindface builds it (tests/apis/mindface_ref.py), gives every
BatchNorm non-trivial statistics and affine values and every PReLU/LayerNorm random values, saves
it with ``mindspore.save_checkpoint`` wrapped as mindface's training scripts wrap it (head,
optimizer state, counters, their name prefixes), converts the file with facekit and compares
embeddings of the same random inputs in eval mode.
"""
import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

import facekit.models  # noqa: F401
from facekit.apis.mindface_import import (MINDFACE_BACKBONE_OPTIONS, MindfaceImportError,
                                          convert_mindface_to_backbone, looks_like_mindface)
from facekit.apis.weight_import import detect_format, import_weights
from facekit.registry import BACKBONES
from facekit.utils.checkpoint import save_checkpoint

from . import mindface_ref

X = np.random.default_rng(0).uniform(-1, 1, (3, 3, 112, 112)).astype(np.float32)


def _randomize(net, seed):
    """Non-trivial BN statistics/affine, PReLU slopes, LayerNorm affine, biases; weights scaled so the
    activations stay O(1) through depth."""
    rng = np.random.default_rng(seed)
    for name, p in net.parameters_and_names():
        shape, leaf = p.shape, name.rsplit('.', 1)[-1]
        if leaf == 'moving_mean':
            v = rng.normal(0, 0.1, shape)
        elif leaf == 'moving_variance':
            v = rng.uniform(0.5, 1.5, shape)
        elif leaf == 'gamma':
            v = rng.uniform(0.5, 1.5, shape)
        elif leaf in ('beta', 'bias'):
            v = rng.normal(0, 0.1, shape)
        elif leaf == 'w':                       # PReLU slope
            v = rng.uniform(0.0, 0.5, shape)
        elif leaf == 'pos_embed':
            v = rng.normal(0, 0.5, shape)
        else:                                   # conv / dense weights: fan-in scaled
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            v = rng.normal(0, 1.0 / np.sqrt(fan_in), shape)
        p.set_data(ms.Tensor(v.astype(np.float32)))
    net.set_train(False)
    return net


def _save_as_mindface(ref, path, script):
    wrapper = {'train.py': mindface_ref.train_py_network,
               'train_cfg.py': mindface_ref.train_cfg_network}[script](ref)
    ms.save_checkpoint(wrapper, str(path))       # what ModelCheckpoint does with the train network
    return str(path)


def _parity(ref_out, out):
    scale = max(1.0, float(np.abs(ref_out).max()))
    diff = float(np.abs(ref_out - out).max())
    cos = (ref_out * out).sum(1) / (np.linalg.norm(ref_out, axis=1) * np.linalg.norm(out, axis=1))
    return diff, scale, float(cos.min())


CASES = [
    # (mindface constructor, facekit name, facekit kwargs, wrapper script)
    pytest.param('iresnet18', 'iresnet18', {}, 'train.py', id='iresnet18-train.py'),
    pytest.param('iresnet50', 'iresnet50', {}, 'train_cfg.py', id='iresnet50-train_cfg.py',
                 marks=pytest.mark.slow),
    pytest.param('get_mbf', 'mobilefacenet', {}, 'train.py', id='mbf-train.py'),
    pytest.param('get_mbf', 'mobilefacenet', {}, 'train_cfg.py', id='mbf-train_cfg.py'),
    pytest.param('vit_t', 'vit_t', MINDFACE_BACKBONE_OPTIONS['vit_t'], 'train_cfg.py', id='vit_t-train_cfg.py'),
]


@pytest.mark.parametrize('mf_name,fk_name,fk_kwargs,script', CASES)
def test_mindface_checkpoint_parity(mf_name, fk_name, fk_kwargs, script, tmp_path):
    ref = _randomize(getattr(mindface_ref, mf_name)(), seed=1)
    ref_out = ref(ms.Tensor(X)).asnumpy()
    path = _save_as_mindface(ref, tmp_path / 'ArcFace-1_60.ckpt', script)

    assert detect_format(path) == 'mindface'
    net = BACKBONES.build(dict(type=fk_name, **fk_kwargs))
    params, info = import_weights(path, net)
    assert info['format'] == 'mindface' and 'matched' in info['checked']
    assert info['prefix'] == ('' if script == 'train.py' else '_backbone.')
    assert info['ignored'] > 0                   # head + optimizer state were in the file, not used
    expected = {n: tuple(p.shape) for n, p in net.parameters_and_names()}
    assert {n: v.shape for n, v in params.items()} == expected
    for name, p in net.parameters_and_names():
        p.set_data(ms.Tensor(params[name]))
    net.set_train(False)
    out = net(ms.Tensor(X)).asnumpy()
    diff, scale, cos = _parity(ref_out, out)
    print(f'{fk_name} ({script}): max|emb| {scale:.3g}, max abs diff {diff:.3g}, min cosine {cos:.8f}')
    assert diff <= 1e-3 * scale and cos >= 0.99999


def test_vit_needs_mindface_options(tmp_path):
    ref = _randomize(mindface_ref.VisionTransformer(embed_dim=64, depth=2, num_heads=8), seed=2)
    path = _save_as_mindface(ref, tmp_path / 'vit.ckpt', 'train_cfg.py')
    plain = BACKBONES.build(dict(type='VisionTransformer', embed_dim=64, depth=2))
    with pytest.raises(MindfaceImportError, match=r'layer_norm_eps=1e-7.*qkv_bias=True'):
        convert_mindface_to_backbone(path, plain)
    only_eps = BACKBONES.build(dict(type='VisionTransformer', embed_dim=64, depth=2, layer_norm_eps=1e-7))
    with pytest.raises(MindfaceImportError, match='qkv projection without bias'):
        convert_mindface_to_backbone(path, only_eps)


def test_wrong_backbone_is_refused_with_what_the_file_holds(tmp_path):
    ref = _randomize(mindface_ref.VisionTransformer(embed_dim=64, depth=2, num_heads=8), seed=3)
    path = _save_as_mindface(ref, tmp_path / 'vit.ckpt', 'train_cfg.py')
    with pytest.raises(MindfaceImportError, match='holds a mindface ViT with 2 blocks.*missing'):
        convert_mindface_to_backbone(path, BACKBONES.build(dict(type='iresnet18')))
    deeper = BACKBONES.build(dict(type='VisionTransformer', embed_dim=64, depth=3, qkv_bias=True,
                                  layer_norm_eps=1e-7))
    with pytest.raises(MindfaceImportError, match=r"blocks\.2\.layer1"):
        convert_mindface_to_backbone(path, deeper)
    wider = BACKBONES.build(dict(type='VisionTransformer', embed_dim=64, depth=2, qkv_bias=True,
                                 layer_norm_eps=1e-7, embedding_size=128))
    with pytest.raises(MindfaceImportError, match=r'shapes do not fit.*feature\.2\.weight'):
        convert_mindface_to_backbone(path, wider)


def test_detect_format_tells_mindface_from_facekit(tmp_path):
    mbf = mindface_ref.get_mbf(blocks=(1, 1, 1, 1))
    bare = str(tmp_path / 'mbf_bare.ckpt')
    ms.save_checkpoint(mbf, bare)                # even a bare mindface MobileFaceNet is recognised
    assert detect_format(bare) == 'mindface'
    r18 = mindface_ref.iresnet18()
    assert detect_format(_save_as_mindface(r18, tmp_path / 'r18.ckpt', 'train.py')) == 'mindface'

    fk = BACKBONES.build(dict(type='mobilefacenet', blocks=(1, 1, 1, 1)))
    fk_bare = str(tmp_path / 'fk_bare.ckpt')
    save_checkpoint(fk, fk_bare)
    assert detect_format(fk_bare) == 'facekit'

    class Recognizer(nn.Cell):
        def __init__(self):
            super().__init__()
            self.backbone = BACKBONES.build(dict(type='iresnet18'))

    fk_run = str(tmp_path / 'fk_run.ckpt')
    save_checkpoint(Recognizer(), fk_run, extra={'optimizer.moments.backbone.conv1.weight': np.zeros(1),
                                                 'train_state.epoch': np.int64(1)})
    assert detect_format(fk_run) == 'facekit'


def test_looks_like_mindface_names():
    assert looks_like_mindface(['_backbone.conv1.weight', 'fc.weight'])
    assert looks_like_mindface(['conv1.weight', 'mp_weight', 'moments.conv1.weight', 'learning_rate'])
    assert looks_like_mindface(['conv1.weight', 'accum.conv1.weight', 'global_step'])
    assert looks_like_mindface(['patch_embed.proj.weight', 'blocks.0.layer1.0.cell.0.gamma'])
    assert not looks_like_mindface(['conv1.weight', 'layer1.0.bn1.gamma', 'features.gamma'])
    assert not looks_like_mindface(['backbone.conv1.weight', 'head.weight', 'optimizer.moments.head.weight'])
    assert not looks_like_mindface(['patch_embed.weight', 'blocks.0.norm1.gamma', 'mask_token'])
