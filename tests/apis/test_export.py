"""Export: ONNX (onnxruntime) and MindIR (mindspore.load + GraphCell) match the framework model.

Every difference is computed here from the two runtimes' raw outputs on the same input (the
MindSpore cell in eval mode, an onnxruntime session, a loaded MindIR graph), never taken from
facekit's own parity function; that function is itself checked against such a difference.
"""
import os.path as osp

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

import facekit.models  # noqa: F401
from facekit.apis.export import INPUT_NAME, OUTPUT_NAME, check_parity, export_backbone
from facekit.registry import BACKBONES
from facekit.utils.checkpoint import save_checkpoint
from required import require_module

from . import tiny_backbone  # noqa: F401
from .calibration import calibrate_bn

onnx = require_module('onnx')
ort = require_module('onnxruntime')


def framework(net, x):
    net.set_train(False)
    return net(ms.Tensor(x)).asnumpy()


def onnxruntime_output(path, x):
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    return session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]


def mindir_output(path, x):
    return nn.GraphCell(ms.load(str(path)))(ms.Tensor(x)).asnumpy()


def batch(n, seed=1):
    return np.random.default_rng(seed).uniform(-1, 1, (n, 3, 112, 112)).astype(np.float32)


def _calibrated(name):
    net = BACKBONES.build(dict(type=name))
    x = np.random.default_rng(0).uniform(-1, 1, (8, 3, 112, 112)).astype(np.float32)
    return calibrate_bn(net, x)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['iresnet18', 'mobilefacenet', 'vit_t'])
def test_onnx_and_mindir_parity(name, tmp_path):
    net = _calibrated(name)
    paths = [export_backbone(net, tmp_path / name, fmt=fmt, batch='dynamic') for fmt in ('onnx', 'mindir')]
    ops = [n.op_type for n in onnx.load(paths[0]).graph.node]
    if name != 'vit_t':  # facekit's relu(x) - w*relu(-x) PReLU is exported as one PRelu node
        assert 'PRelu' in ops and 'Neg' not in ops
    for n in (1, 2):
        x = batch(n, seed=n)
        ref = framework(net, x)
        assert np.abs(ref).max() > 0.1, f'{name}: degenerate output scale {np.abs(ref).max()}'
        for path, run in zip(paths, (onnxruntime_output, mindir_output)):
            np.testing.assert_allclose(run(path, x), ref, rtol=1e-4, atol=1e-4, err_msg=f'{name} {path} batch {n}')


def test_onnx_names_and_dynamic_batch(tmp_path):
    net = _calibrated('_apis_test_tiny')
    path = export_backbone(net, tmp_path / 'tiny', fmt='onnx', batch='dynamic')
    model = onnx.load(path)
    assert [i.name for i in model.graph.input] == [INPUT_NAME]
    assert [o.name for o in model.graph.output] == [OUTPUT_NAME]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == 'batch'
    # BatchNorm1d exports a Reshape to (batch, C, 1, 1): the batch must not stay baked in.
    for n in (1, 3, 5):
        x = batch(n, seed=n)
        out = onnxruntime_output(path, x)
        assert out.shape == (n, 8)
        np.testing.assert_allclose(out, framework(net, x), rtol=1e-5, atol=1e-5)


def test_check_parity_reports_the_real_difference(tmp_path):
    """facekit's check_parity on a file whose weights were changed after export reports the difference
    the two runtimes really show (so a parity check comparing the reference with itself fails here)."""
    net = _calibrated('_apis_test_tiny')
    path = export_backbone(net, tmp_path / 'tiny', fmt='onnx', batch='dynamic')
    model = onnx.load(path)
    conv = next(i for i in model.graph.initializer if len(i.dims) == 4)
    w = onnx.numpy_helper.to_array(conv).copy()
    w[0] += 0.05
    conv.CopyFrom(onnx.numpy_helper.from_array(w, conv.name))
    bad = str(tmp_path / 'perturbed.onnx')
    onnx.save(model, bad)
    rng = np.random.default_rng(0)   # check_parity's documented seed: one uniform(-1, 1) batch per size, in order
    for n, x in [(n, rng.uniform(-1, 1, (n, 3, 112, 112)).astype(np.float32)) for n in (1, 2)]:
        ref = framework(net, x)
        real = float(np.abs(onnxruntime_output(bad, x) - ref).max())
        assert real > 1e-2                                         # the perturbation shows
        diff, scale = check_parity(net, bad, (1, 2))[n]
        assert diff == pytest.approx(real, rel=1e-5, abs=1e-6)
        assert scale == pytest.approx(float(np.abs(ref).max()), rel=1e-6)
    assert max(d for d, _ in check_parity(net, path, (1, 2)).values()) < 1e-5   # the untouched file agrees


def test_export_tool_static_batch_and_fp16(tmp_path, capsys):
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'export_tool', osp.join(osp.dirname(__file__), '..', '..', 'tools', 'export.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    net = _calibrated('_apis_test_tiny')
    ckpt = str(tmp_path / 'tiny.ckpt')
    save_checkpoint({f'backbone.{n}': p for n, p in net.parameters_and_names()}, ckpt)
    cfg = tmp_path / 'cfg.py'
    cfg.write_text("model = dict(type='FaceRecognizer', backbone=dict(type='_apis_test_tiny', embedding_size=8))\n")
    assert tool.main([str(cfg), ckpt, '--format', 'onnx', '--batch', '3', '--out', str(tmp_path / 's')]) == 0
    model = onnx.load(str(tmp_path / 's.onnx'))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 3
    assert tool.main([str(cfg), ckpt, '--format', 'mindir', '--fp16', '--out', str(tmp_path / 'h')]) == 0
    out = capsys.readouterr().out
    assert 'wrote' in out and 'h.mindir' in out and 'parity batch 2' in out
