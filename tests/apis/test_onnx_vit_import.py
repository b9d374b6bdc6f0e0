"""ONNX import of arcface_torch's ViT, exported the way its ``torch2onnx.py`` exports it.

The PyTorch model (tools/benchmarks/torch_reference.py) is a transcription of arcface_torch ``backbones/vit.py`` (module names,
layer order, LayerNorm eps 1e-5, BatchNorm1d eps 2e-5, qkv without bias, ReLU6 MLP, scale applied to
the q k^T scores, ``.float()`` casts) at the ``vit_t`` setting of its ``get_model`` (112 px, patch 9,
width 256, 8 heads, 512-d embedding); only the depth is cut to 2 blocks for speed (``test_full_vit_t``
keeps all 12). Eval mode: DropPath and Dropout are identities and no token is masked, so they are
left out. LayerNorm and BatchNorm carry non-trivial values. Export: ``torch.onnx.export(...,
input_names=['data'], opset_version=11)`` with the legacy (TorchScript) exporter, then the batch
dimension renamed 'None' as torch2onnx.py does. The reference is onnxruntime running that file.
"""
import os
import os.path as osp
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest

import facekit.models  # noqa: F401
from facekit.apis.onnx_import import ConversionError, convert_onnx_to_backbone, read_onnx_layers
from facekit.registry import BACKBONES

from required import require_module

onnx = require_module('onnx')
ort = require_module('onnxruntime')
torch = require_module('torch')
nn = torch.nn
sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'tools', 'benchmarks'))
import torch_reference  # noqa: E402  (arcface_torch's backbones transcribed in PyTorch: one copy, shared)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
VIT_T = dict(img_size=112, patch_size=9, num_classes=512, embed_dim=256, depth=2, num_heads=8)
X = np.random.default_rng(0).uniform(-1, 1, (3, 3, 112, 112)).astype(np.float32)


def _torch_vit(seed=0, **kw):
    """arcface_torch's ViT with trained-looking values: random biases, LayerNorm affine and BN statistics."""
    torch.manual_seed(seed)
    net = torch_reference.VisionTransformer(**{**VIT_T, **kw})
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith('pos_embed') or name.endswith('mask_token'):
                p.normal_(0, 0.02)
            elif p.ndim == 2:
                nn.init.trunc_normal_(p, std=0.02)
            elif name.endswith('weight') and p.ndim == 1:      # LayerNorm / BatchNorm gamma
                p.uniform_(0.5, 1.5)
            elif p.ndim == 1:                                  # biases, LayerNorm / BatchNorm beta
                p.normal_(0, 0.1)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def _export(net, path):
    """torch2onnx.py's export: opset 11, input 'data', initializers not inputs, batch dim named 'None'."""
    img = torch.from_numpy(X[:1])
    kw = dict(input_names=['data'], keep_initializers_as_inputs=False, verbose=False, opset_version=11,
              do_constant_folding=True)
    if 'dynamo' in torch.onnx.export.__code__.co_varnames:
        kw['dynamo'] = False  # torch >= 2.9 defaults to the torch.export exporter; torch2onnx predates it
    torch.onnx.export(net, img, str(path), **kw)
    model = onnx.load(str(path))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = 'None'
    onnx.save(model, str(path))
    return str(path)


def _ort(path, x):
    # Image by image: the exporter bakes the example's batch of 1 into the Reshape constants.
    sess = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    return np.concatenate([sess.run(None, {'data': x[i:i + 1]})[0] for i in range(len(x))])


def _facekit_vit(**kw):
    net = BACKBONES.build(dict(type='vit_t', embedding_size=512, depth=VIT_T['depth'], **kw))
    net.set_train(False)
    return net


def _assert_parity(ours, ref):
    diff, scale = np.abs(ours - ref).max(), np.abs(ref).max()
    cos = np.sum(ours * ref, 1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    assert diff <= 1e-3 * max(1.0, scale), (diff, scale)
    assert cos.min() >= 0.99999, cos
    return diff, scale, cos.min()


_FILES = {}


def _exported(tmp_path_factory, **kw):
    key = tuple(sorted(kw.items()))
    if key not in _FILES:
        net = _torch_vit(**kw)
        path = _export(net, tmp_path_factory.mktemp('vit') / 'model.onnx')
        _FILES[key] = (net, path)
    return _FILES[key]


@pytest.fixture(scope='module')
def vit_file(tmp_path_factory):
    return _exported(tmp_path_factory)


def test_graph_is_read_as_the_vit_layers(vit_file):
    _, path = vit_file
    layers, affine = read_onnx_layers(path)
    kinds = [t.kind for t in layers]
    block = ['layernorm', 'linear', 'linear', 'layernorm', 'linear', 'linear']
    assert kinds == ['conv', 'posembed'] + block * VIT_T['depth'] + ['layernorm', 'linear', 'bn', 'linear', 'bn']
    assert affine == (1.0, 0.0)
    for t in layers:
        if t.kind == 'layernorm':
            assert t.attrs['epsilon'] == pytest.approx(1e-5, rel=1e-6)
    qkv = layers[3]
    assert (qkv.attrs['heads'], qkv.attrs['head_dim']) == (8, 32) and 'bias' not in qkv.arrays
    assert qkv.attrs['softmax'] == dict(axis=3, scale=pytest.approx(32 ** -0.5, rel=1e-6))
    assert layers[6].attrs['activation'] == 'relu6'  # mlp.fc1


def test_vit_t_converts_exactly_and_matches_onnxruntime(vit_file):
    net, path = vit_file
    ours_net = _facekit_vit()
    params, _ = convert_onnx_to_backbone(path, ours_net)
    # Every value is the PyTorch one, by name (facekit: gamma/beta, moving_*; Dense (out, in) like torch).
    # Both BatchNorm1d use eps 2e-5, so even the variances come across unchanged.
    sd = {k: v.numpy() for k, v in net.state_dict().items()}
    rename = [('patch_embed.', 'patch_embed.proj.'), ('.gamma', '.weight'), ('.beta', '.bias'),
              ('.moving_mean', '.running_mean'), ('.moving_variance', '.running_var')]
    for name, value in params.items():
        if name == 'mask_token':
            np.testing.assert_array_equal(value, 0)  # training-only, absent from the graph
            continue
        key = name
        for ours_part, torch_part in rename:
            key = key.replace(ours_part, torch_part)
        np.testing.assert_array_equal(value, sd[key], err_msg=name)
    assert len(params) == len(list(ours_net.get_parameters()))
    ours = ours_net(ms.Tensor(X)).asnumpy()
    ref = _ort(path, X)
    _assert_parity(ours, ref)
    with torch.no_grad():
        np.testing.assert_allclose(net(torch.from_numpy(X)).numpy(), ref, rtol=1e-4, atol=1e-4)


def test_qkv_bias_needs_the_option(tmp_path_factory):
    _, path = _exported(tmp_path_factory, qkv_bias=True)
    with pytest.raises(ConversionError, match=r'blocks\.0\.attn\.qkv has no bias but the ONNX linear layer has one'):
        convert_onnx_to_backbone(path, _facekit_vit())
    ours_net = _facekit_vit(qkv_bias=True)
    convert_onnx_to_backbone(path, ours_net)
    _assert_parity(ours_net(ms.Tensor(X)).asnumpy(), _ort(path, X))


def test_layernorm_epsilon_mismatch_is_refused(tmp_path_factory):
    _, path = _exported(tmp_path_factory, ln_eps=1e-6)
    with pytest.raises(ConversionError, match=r'blocks\.0\.norm1: LayerNorm epsilon 1e-05 in facekit vs 1e-06'):
        convert_onnx_to_backbone(path, _facekit_vit())


def test_head_count_mismatch_is_refused(vit_file):
    # Same weight shapes, different attention: only the graph's Reshape tells the heads apart.
    _, path = vit_file
    with pytest.raises(ConversionError, match=r'blocks\.0\.attn\.qkv: 4 heads of width 64 in facekit vs 8 of width 32'):
        convert_onnx_to_backbone(path, _facekit_vit(num_heads=4))


def test_convert_tool_checks_parity(vit_file, tmp_path):
    _, path = vit_file
    out = tmp_path / 'vit.ckpt'
    env = dict(os.environ, PYTHONPATH=ROOT)
    cfg = tmp_path / 'vit_cfg.py'
    cfg.write_text(f"model = dict(backbone=dict(type='vit_t', embedding_size=512, depth={VIT_T['depth']}))\n")
    run = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'convert_weights.py'), path, str(cfg), str(out)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert 'parity on 2 random faces (onnxruntime): max abs diff' in run.stdout, run.stdout
    assert out.exists()


@pytest.mark.slow
def test_full_vit_t(tmp_path):
    net = _torch_vit(depth=12)
    path = _export(net, tmp_path / 'vit_t.onnx')
    ours_net = BACKBONES.build(dict(type='vit_t', embedding_size=512))
    ours_net.set_train(False)
    convert_onnx_to_backbone(path, ours_net)
    _assert_parity(ours_net(ms.Tensor(X)).asnumpy(), _ort(path, X))
