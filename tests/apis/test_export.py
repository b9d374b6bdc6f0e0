"""Export: ONNX (onnxruntime) and MindIR (mindspore.load + GraphCell) match the framework model."""
import os.path as osp

import numpy as np
import onnx
import pytest

import facekit.models  # noqa: F401
from facekit.apis.export import INPUT_NAME, OUTPUT_NAME, check_parity, export_backbone, run_onnx
from facekit.registry import BACKBONES
from facekit.utils.checkpoint import save_checkpoint

from . import tiny_backbone  # noqa: F401
from .calibration import calibrate_bn


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
    for path, result in check_parity(net, paths, (1, 2)).items():
        for n, (diff, scale) in result.items():
            assert scale > 0.1, f'{name}: degenerate output scale {scale}'
            assert diff < 1e-4, f'{name} {path} batch {n}: max abs diff {diff}'


def test_onnx_names_and_dynamic_batch(tmp_path):
    net = _calibrated('_apis_test_tiny')
    path = export_backbone(net, tmp_path / 'tiny', fmt='onnx', batch='dynamic')
    model = onnx.load(path)
    assert [i.name for i in model.graph.input] == [INPUT_NAME]
    assert [o.name for o in model.graph.output] == [OUTPUT_NAME]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == 'batch'
    # BatchNorm1d exports a Reshape to (batch, C, 1, 1): the batch must not stay baked in.
    for n in (1, 3, 5):
        x = np.random.default_rng(n).uniform(-1, 1, (n, 3, 112, 112)).astype(np.float32)
        assert run_onnx(path, x).shape == (n, 8)
    res = check_parity(net, path, (1, 3))
    assert max(d for d, _ in res.values()) < 1e-5


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
