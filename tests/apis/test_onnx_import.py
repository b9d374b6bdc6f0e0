"""ONNX weight import: our exported model, rewritten to look like an arcface_torch export, converts back."""
import importlib.util
import os.path as osp

import mindspore as ms
import numpy as np
import pytest

import facekit.models  # noqa: F401
from facekit.apis.export import export_backbone
from facekit.apis.onnx_import import ConversionError, convert_onnx_to_backbone, read_onnx_layers
from facekit.registry import BACKBONES
from facekit.utils.checkpoint import load_checkpoint

from . import tiny_backbone  # noqa: F401
from .calibration import calibrate_bn
from required import require_module

onnx = require_module('onnx')
ort = require_module('onnxruntime')
from .torchify import torchify  # noqa: E402

X = np.random.default_rng(0).uniform(-1, 1, (8, 3, 112, 112)).astype(np.float32)


_EXPORTED = {}


def _torch_style_onnx(name, tmp_path, **kw):
    # One calibrated model and export per backbone, shared by the rewrite variants.
    if name not in _EXPORTED:
        net = calibrate_bn(BACKBONES.build(dict(type=name)), X)
        path = export_backbone(net, tmp_path / name, fmt='onnx', batch='dynamic')
        _EXPORTED[name] = (net, onnx.load(path))
    net, model = _EXPORTED[name]
    out = str(tmp_path / f'{name}_torch.onnx')
    onnx.save(torchify(model, **kw), out)
    return net, out


def _fresh(name):
    ms.set_seed(123)  # different weights from the exported model
    net = BACKBONES.build(dict(type=name))
    net.set_train(False)
    return net


@pytest.mark.slow
@pytest.mark.parametrize('name,kw', [
    ('iresnet18', dict(fold_bn=True, bake_normalization=True)),   # torch eval export, Sub/Mul input
    ('iresnet18', dict(fold_bn=False, matmul=True)),             # kept BN, Linear as MatMul + Add
    ('mobilefacenet', dict(fold_bn=True)),
])
def test_convert_matches_onnx_and_source(name, kw, tmp_path):
    source, path = _torch_style_onnx(name, tmp_path, **kw)
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert 'PRelu' in ops and ('MatMul' in ops) == kw.get('matmul', False)
    net = _fresh(name)
    before = net(ms.Tensor(X[:2])).asnumpy()
    _, affine = convert_onnx_to_backbone(path, net)
    assert (affine != (1.0, 0.0)) == kw.get('bake_normalization', False)
    ours = net(ms.Tensor(X[:2])).asnumpy()
    # onnxruntime on the file itself; a graph with its normalization baked in takes pixels.
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    pixels = X[:2] * 127.5 + 127.5 if kw.get('bake_normalization') else X[:2]
    ref = session.run(None, {session.get_inputs()[0].name: pixels})[0]
    assert np.abs(before - ref).max() > 0.1  # the fresh model really was different
    assert np.abs(ref).max() > 0.1
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours, source(ms.Tensor(X[:2])).asnumpy(), rtol=1e-4, atol=1e-4)


def test_folded_bn_becomes_identity_bn_with_bias(tmp_path):
    # Tiny model: conv -> BN folded by the rewrite; the conv bias must land in BN beta.
    source, path = _torch_style_onnx('_apis_test_tiny', tmp_path, fold_bn=True)
    layers, _ = read_onnx_layers(path)
    assert [l.kind for l in layers] == ['conv', 'linear', 'bn']
    net = _fresh('_apis_test_tiny')
    params, _ = convert_onnx_to_backbone(path, net)
    k = source.bn.gamma.asnumpy() / np.sqrt(source.bn.moving_variance.asnumpy() + source.bn.eps)
    np.testing.assert_allclose(params['bn.beta'], source.bn.beta.asnumpy() - source.bn.moving_mean.asnumpy() * k,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(params['bn.moving_variance'] + net.bn.eps, 1.0, atol=1e-7)
    np.testing.assert_allclose(params['conv.weight'], source.conv.weight.asnumpy() * k[:, None, None, None],
                               rtol=1e-5, atol=1e-7)


def test_wrong_backbone_is_refused_with_the_layer_named(tmp_path):
    _, path = _torch_style_onnx('_apis_test_tiny', tmp_path, fold_bn=False)
    with pytest.raises(ConversionError, match=r'layers\.0\.0: weight \(128, 3, 3, 3\) group 1 vs ONNX \(4, 3, 4, 4\)'):
        convert_onnx_to_backbone(path, BACKBONES.build(dict(type='mobilefacenet')))
    with pytest.raises(ConversionError, match=r'patch_embed: weight \(256, 3, 9, 9\) group 1 vs ONNX \(4, 3, 4, 4\)'):
        convert_onnx_to_backbone(path, BACKBONES.build(dict(type='vit_t')))


def test_convert_tool_writes_loadable_checkpoint(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        'convert_tool', osp.join(osp.dirname(__file__), '..', '..', 'tools', 'convert_weights.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    _, path = _torch_style_onnx('_apis_test_tiny', tmp_path, fold_bn=True, bake_normalization=True)
    out = str(tmp_path / 'converted.ckpt')
    assert tool.main([path, '_apis_test_tiny', out, '--embedding-size', '8']) == 0
    assert 'parity on 2 random faces' in capsys.readouterr().out
    names = set(load_checkpoint(out))
    assert names == {f'backbone.{n}' for n, _ in _fresh('_apis_test_tiny').parameters_and_names()}
