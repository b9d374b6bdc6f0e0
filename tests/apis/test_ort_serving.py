"""Serving through onnxruntime gives the MindSpore path's results: FaceEmbedder, tools/infer.py, tools/test.py.

Reduced iresnet / mobilefacenet / ViT backbones with random weights and calibrated BatchNorm
statistics (embeddings of order 1). Every expected number is computed here with the MindSpore
backbone cell and NumPy (normalize, flip, L2), not taken from the embedder under test.
"""
import json
import os
import os.path as osp
import subprocess
import sys

import cv2
import mindspore as ms
import numpy as np
import pytest

import facekit.models  # noqa: F401
from facekit.apis import FaceEmbedder
from facekit.apis.export import export_backbone
from facekit.registry import BACKBONES
from facekit.utils.checkpoint import save_checkpoint
from required import require_module

from .calibration import calibrate_bn

require_module('onnx')
require_module('onnxruntime')

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOL = 1e-4
BACKBONE_CFGS = {
    'iresnet': dict(type='IResNet', layers=(1, 1, 1, 1), widths=(8, 8, 16, 16), stem_channels=8, embedding_size=16),
    'mobilefacenet': dict(type='MobileFaceNet', embedding_size=16, blocks=(1, 1, 1, 1), scale=1),
    'vit': dict(type='vit_t', embed_dim=32, depth=2, num_heads=4, embedding_size=16),
}


def _faces(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 112, 112, 3), dtype=np.uint8)


def _normalized(faces_rgb):
    return np.ascontiguousarray(((faces_rgb.astype(np.float32) / 255.0 - 0.5) / 0.5).transpose(0, 3, 1, 2))


def _expected(net, faces_rgb, flip):
    """Normalized embeddings computed with the MindSpore cell: raw (+ raw of the mirrored image), then L2."""
    x = _normalized(faces_rgb)
    raw = net(ms.Tensor(x)).asnumpy().astype(np.float64)
    if flip:
        raw = raw + net(ms.Tensor(np.ascontiguousarray(x[..., ::-1]))).asnumpy()
    return raw / np.linalg.norm(raw, axis=1, keepdims=True)


@pytest.fixture(scope='module', params=sorted(BACKBONE_CFGS))
def model(request, tmp_path_factory):
    """(backbone cfg, checkpoint path, calibrated MindSpore cell, cache dir) per reduced family."""
    cfg = BACKBONE_CFGS[request.param]
    net = BACKBONES.build(dict(cfg))
    calibrate_bn(net, _normalized(_faces(8, seed=7)))
    net.set_train(False)
    tmp = tmp_path_factory.mktemp(request.param)
    ckpt = save_checkpoint(net, str(tmp / f'{request.param}.ckpt'))
    return cfg, ckpt, net, str(tmp / 'cache')


def test_embed_compare_verify_match_mindspore(model):
    cfg, ckpt, net, cache = model
    ort_emb = FaceEmbedder(cfg, ckpt, backend='onnxruntime', batch_size=4, cache_dir=cache)
    ms_emb = FaceEmbedder(cfg, ckpt, batch_size=4)
    assert ort_emb.onnx_path.startswith(cache)
    a, b = _faces(5, seed=1), _faces(5, seed=2)
    for flip in (False, True):
        expected = _expected(net, a, flip)
        got = ort_emb.embed(a, flip=flip)
        assert np.abs(got - expected).max() < TOL, flip
        assert np.abs(got - ms_emb.embed(a, flip=flip)).max() < TOL, flip
    # the flip test changes these embeddings, so a path that skipped it could not pass the loop above
    assert np.abs(_expected(net, a, True) - _expected(net, a, False)).max() > 100 * TOL
    feats, norms = ort_emb.embed(a, return_norms=True)
    raw = net(ms.Tensor(_normalized(a))).asnumpy()
    assert np.abs(norms - np.linalg.norm(raw, axis=1)).max() < TOL * max(1.0, float(norms.max()))
    sims_expected = np.sum(_expected(net, a, True) * _expected(net, b, True), axis=1)
    sims = ort_emb.compare(list(a), list(b), flip=True)
    assert np.abs(sims - sims_expected).max() < TOL
    ordered = np.sort(sims_expected)
    threshold = float(ordered[1] + ordered[2]) / 2   # away from every similarity: no float32 ties
    same, sims2 = ort_emb.verify(list(a), list(b), threshold, flip=True)
    assert np.array_equal(same, sims_expected >= threshold) and np.allclose(sims2, sims)
    single = ort_emb.compare(a[0], b[0])
    assert isinstance(single, float) and abs(single - float(np.sum(_expected(net, a[:1], False)
                                                                     * _expected(net, b[:1], False)))) < TOL


def test_from_onnx_serves_the_exported_file(model):
    cfg, ckpt, net, cache = model
    path = FaceEmbedder(cfg, ckpt, backend='onnxruntime', cache_dir=cache).onnx_path
    emb = FaceEmbedder.from_onnx(path, batch_size=3, flip=True)
    faces = _faces(4, seed=3)
    assert np.abs(emb.embed(faces) - _expected(net, faces, True)).max() < TOL
    assert emb.image_size == 112 and 'onnxruntime' in repr(emb)


def test_export_is_cached_and_refreshed_when_the_checkpoint_changes(model, tmp_path):
    cfg, ckpt, net, _ = model
    cache = str(tmp_path / 'cache')
    first = FaceEmbedder(cfg, ckpt, backend='onnxruntime', cache_dir=cache).onnx_path
    stamp = os.stat(first).st_mtime_ns
    assert FaceEmbedder(cfg, ckpt, backend='onnxruntime', cache_dir=cache).onnx_path == first
    assert os.stat(first).st_mtime_ns == stamp and os.listdir(cache) == [osp.basename(first)]
    copy = save_checkpoint(net, str(tmp_path / 'copy.ckpt'))
    assert FaceEmbedder(cfg, copy, backend='onnxruntime', cache_dir=cache).onnx_path != first


def test_static_batch_export_is_padded(tmp_path):
    cfg = BACKBONE_CFGS['iresnet']
    net = calibrate_bn(BACKBONES.build(dict(cfg)), _normalized(_faces(8, seed=7)))
    net.set_train(False)
    path = export_backbone(net, tmp_path / 'static', fmt='onnx', batch=4)
    faces = _faces(6, seed=4)   # one full batch of 4 and one of 2 padded to 4
    got = FaceEmbedder.from_onnx(path, batch_size=64).embed(faces)
    assert np.abs(got - _expected(net, faces, False)).max() < TOL


def test_errors_name_the_problem(model, tmp_path):
    cfg, ckpt, _, cache = model
    with pytest.raises(ValueError, match='backend must be one of mindspore, onnxruntime'):
        FaceEmbedder(cfg, ckpt, backend='tensorrt')
    with pytest.raises(ValueError, match='not an ONNX model: pass the config too'):
        FaceEmbedder.from_onnx(ckpt)
    path = FaceEmbedder(cfg, ckpt, backend='onnxruntime', cache_dir=cache).onnx_path
    with pytest.raises(ValueError, match='gives 16-d embeddings, the config .* embedding_size=32'):
        FaceEmbedder(dict(cfg, embedding_size=32), path, backend='onnxruntime')


def _tool(args, timeout=300, **env):
    env = dict(os.environ, PYTHONPATH=ROOT, ONEDNN_MAX_CPU_ISA='AVX2', **env)
    return subprocess.run([sys.executable] + [str(a) for a in args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope='module')
def tiny_export(tmp_path_factory):
    """A tiny IResNet experiment config (lfw .bin evaluator), its calibrated checkpoint and ONNX export."""
    from facekit.datasets import SyntheticIdentities, make_verification_bin
    tmp = tmp_path_factory.mktemp('tools')
    bin_path = str(tmp / 'lfw.bin')
    make_verification_bin(SyntheticIdentities(num_classes=10, images_per_class=4, seed=0, identity_offset=5000),
                          60, 0, path=bin_path)
    cfg_path = tmp / 'tiny.py'
    cfg_path.write_text(
        f"model = dict(type='FaceRecognizer', backbone={BACKBONE_CFGS['iresnet']!r},\n"
        "             head=dict(type='NormFCHead', embedding_size=16, num_classes=10), loss=dict(type='ArcFaceLoss'))\n"
        "runtime = dict(device_target='CPU', mode='graph')\n"
        f"val_evaluators = [dict(type='VerificationEvaluator', bin_path={bin_path!r}, name='lfw', batch_size=32)]\n")
    net = calibrate_bn(BACKBONES.build(dict(BACKBONE_CFGS['iresnet'])), _normalized(_faces(8, seed=7)))
    net.set_train(False)
    ckpt = save_checkpoint(net, str(tmp / 'tiny.ckpt'))
    onnx_path = export_backbone(net, tmp / 'tiny', fmt='onnx')
    return dict(tmp=tmp, cfg=str(cfg_path), ckpt=ckpt, onnx=onnx_path, net=net, bin=bin_path)


def test_infer_tool_with_onnxruntime(tiny_export):
    t, tmp = tiny_export, tiny_export['tmp']
    faces = _faces(2, seed=5)
    for i, face in enumerate(faces):
        cv2.imwrite(str(tmp / f'face{i}.png'), cv2.cvtColor(face, cv2.COLOR_RGB2BGR))  # lossless
    npy = tmp / 'feats.npy'
    proc = _tool(['tools/infer.py', t['cfg'], t['onnx'], tmp / 'face0.png', tmp / 'face1.png', '--backend',
                  'onnxruntime', '--flip', '--threshold', '0.5', '--save-npy', npy])
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = _expected(t['net'], faces, True)
    assert np.abs(np.load(npy) - expected).max() < TOL
    sim = float(expected[0] @ expected[1])
    assert f'cosine similarity {sim:.4f}' in proc.stdout
    assert f"{'same' if sim >= 0.5 else 'different'} person at threshold 0.5" in proc.stdout


@pytest.mark.slow  # three tools/test.py runs
def test_test_tool_with_onnxruntime_matches_mindspore(tiny_export):
    t, tmp = tiny_export, tiny_export['tmp']
    results = {}
    for name, extra in (('ms_onnx_weights', []), ('ort_onnx', ['--backend', 'onnxruntime']),
                        ('ort_ckpt', ['--backend', 'onnxruntime', '--cfg-options', 'test_cfg.batch_size=7'])):
        weights = t['ckpt'] if name == 'ort_ckpt' else t['onnx']
        out = str(tmp / f'{name}.json')
        proc = _tool(['tools/test.py', t['cfg'], weights, '--out', out, '--work-dir', tmp / 'work'] + extra,
                     FACEKIT_CACHE=str(tmp / 'cache'))
        assert proc.returncode == 0, (name, proc.stderr[-3000:])
        with open(out) as f:
            results[name] = json.load(f)['results']['lfw']
    assert 'exported' in proc.stdout and str(tmp / 'cache') in proc.stdout   # the .ckpt went through the cache
    # expected from the MindSpore cell on the decoded .bin images, flip test on (the default)
    from facekit.datasets.verification_bin import load_bin
    from facekit.evaluation import verification_metrics
    images, issame = load_bin(t['bin'])
    rgb = np.stack([cv2.cvtColor(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                    for b in images])
    emb = _expected(t['net'], rgb, True)
    expected = verification_metrics(emb[0::2], emb[1::2], issame)
    for name, r in results.items():
        assert r['auc'] == pytest.approx(expected['auc'], abs=1e-6), name
        assert r['fold_accuracies'] == pytest.approx(expected['fold_accuracies']), name
    assert results['ort_onnx']['xnorm'] == pytest.approx(results['ms_onnx_weights']['xnorm'], rel=1e-4)
