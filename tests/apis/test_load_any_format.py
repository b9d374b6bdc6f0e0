"""Any weights file a user has loads where a facekit checkpoint does: build_backbone, FaceEmbedder,
infer(), tools/test.py, tools/convert_weights.py; detect_format by content, unknown files named."""
import collections
import json
import os
import os.path as osp
import pickle
import subprocess
import sys
import zipfile

import mindspore as ms
import numpy as np
import pytest

import facekit.models  # noqa: F401
from facekit.apis import FaceEmbedder, build_backbone, infer
from facekit.apis.export import export_backbone
from facekit.apis.weight_import import UnknownWeightFormatError, detect_format
from facekit.config import Config
from facekit.registry import BACKBONES, MODELS
from facekit.utils.checkpoint import save_checkpoint

from . import tiny_backbone  # noqa: F401  (registers _apis_test_tiny)
from required import require_module
from tiny_eval import tiny_config

require_module('onnx')
require_module('onnxruntime')

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
X = np.random.default_rng(0).uniform(-1, 1, (4, 3, 112, 112)).astype(np.float32)


def _randomize(net, seed):
    """Random weights and BatchNorm statistics (mean ~N(0, 0.1), var in [0.5, 1.5]), PReLU slopes in [0, 0.5]:
    an importer that drops or swaps any of them changes the embeddings."""
    rng = np.random.default_rng(seed)
    for name, p in net.parameters_and_names():
        if name.endswith('moving_variance'):
            v = rng.uniform(0.5, 1.5, p.shape)
        elif name.endswith(('moving_mean', 'beta')):
            v = rng.normal(0, 0.1, p.shape)
        elif name.endswith('gamma'):
            v = rng.uniform(0.5, 1.5, p.shape)
        elif 'prelu' in name or name.endswith('.w'):
            v = rng.uniform(0, 0.5, p.shape)
        else:
            v = rng.normal(0, (2.0 / max(1, int(np.prod(p.shape[1:])))) ** 0.5, p.shape)
        p.set_data(ms.Tensor(v.astype(np.float32)))
    net.set_train(False)
    return net


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """A tiny config, its FaceRecognizer checkpoint (random backbone + BN statistics) and the ONNX
    facekit's own exporter writes from that backbone."""
    tmp = tmp_path_factory.mktemp('anyfmt')
    cfg = tmp / 'tiny.py'
    cfg.write_text(tiny_config())
    model = MODELS.build(Config.fromfile(str(cfg)).model.to_dict())
    _randomize(model.backbone, seed=1)
    ckpt = save_checkpoint(model, str(tmp / 'tiny.ckpt'))
    onnx_path = export_backbone(model.backbone, tmp / 'tiny', fmt='onnx', batch='dynamic')
    tiny = _randomize(BACKBONES.build(dict(type='_apis_test_tiny', embedding_size=8)), seed=2)
    tiny_ckpt = save_checkpoint(tiny, str(tmp / 'bare_tiny.ckpt'))
    tiny_onnx = export_backbone(tiny, tmp / 'bare_tiny', fmt='onnx', batch='dynamic')
    return dict(tmp=tmp, cfg=str(cfg), ckpt=ckpt, onnx=onnx_path, tiny=tiny, tiny_ckpt=tiny_ckpt,
                tiny_onnx=tiny_onnx)


def _assert_same_embeddings(a, b):
    scale = max(1.0, float(np.abs(b).max()))
    assert np.abs(a - b).max() <= 1e-5 * scale, (np.abs(a - b).max(), scale)


def test_onnx_loads_through_build_backbone_like_the_checkpoint(files):
    from_ckpt = build_backbone(files['cfg'], files['ckpt'])
    from_onnx = build_backbone(files['cfg'], files['onnx'])
    ref = from_ckpt(ms.Tensor(X)).asnumpy()
    assert np.abs(ref).max() > 0.1   # the comparison below is not between near-zero outputs
    _assert_same_embeddings(from_onnx(ms.Tensor(X)).asnumpy(), ref)


def test_load_backbone_weights_reports_the_format(files):
    from facekit.apis import load_backbone_weights
    net = BACKBONES.build(Config.fromfile(files['cfg']).model.backbone.to_dict())
    info = load_backbone_weights(net, files['onnx'])
    assert info['format'] == 'onnx' and tuple(info['input_affine']) == (1.0, 0.0) and info['checked']
    info = load_backbone_weights(net, files['ckpt'])
    assert info['format'] == 'facekit' and info['prefix'] == 'backbone.'


def test_face_embedder_and_infer_take_onnx(files):
    faces = np.random.default_rng(3).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    a = FaceEmbedder(files['cfg'], files['onnx'], device_target='CPU', flip=True).embed(faces)
    b = FaceEmbedder(files['cfg'], files['ckpt'], device_target='CPU', flip=True).embed(faces)
    _assert_same_embeddings(a, b)
    nchw = faces.transpose(0, 3, 1, 2)
    raw_onnx = infer(nchw, backbone='_apis_test_tiny', num_features=8, pretrained=files['tiny_onnx'],
                     device_target='CPU')
    raw_ckpt = infer(nchw, backbone='_apis_test_tiny', num_features=8, pretrained=files['tiny_ckpt'],
                     device_target='CPU')
    assert np.abs(raw_ckpt).max() > 0.1
    _assert_same_embeddings(raw_onnx, raw_ckpt)


def test_facekit_checkpoint_keeps_its_strict_rules(files, tmp_path):
    from facekit.utils.checkpoint import CheckpointMismatchError
    other = tmp_path / 'wide.py'
    other.write_text(tiny_config(last_width=32))
    with pytest.raises(CheckpointMismatchError, match='layer4.0.conv1.weight: checkpoint'):
        build_backbone(str(other), files['ckpt'])


# ---- detect_format on each format's bytes -------------------------------------------------------------

def _torch_legacy_stream():
    """The head of a legacy (pre-zip) torch.save file, written with plain pickle: the magic number,
    the protocol version, the system info, then the object (an OrderedDict here; torch's has tensors)."""
    parts = [0x1950a86a20f9469cfc6c, 1001, dict(protocol_version=1001, little_endian=True,
                                               type_sizes=dict(short=2, int=4, long=4)),
             collections.OrderedDict([('conv1.weight', [0.0] * 4)]), ['0']]
    return b''.join(pickle.dumps(p, protocol=2) for p in parts)


def test_detect_format_by_content(files, tmp_path):
    # The extension does not decide: the files below are named .bin (MindSpore's own reader insists on
    # .ckpt for its checkpoints, so that one keeps its extension).
    def named(data, name):
        path = tmp_path / (name if '.' in name else f'{name}.bin')
        path.write_bytes(data)
        return str(path)

    read = lambda p: open(p, 'rb').read()  # noqa: E731
    assert detect_format(named(read(files['ckpt']), 'recognizer.ckpt')) == 'facekit'
    assert detect_format(named(read(files['tiny_ckpt']), 'bare.ckpt')) == 'facekit'
    assert detect_format(named(read(files['onnx']), 'model_onnx')) == 'onnx'
    # torch.save's zip layout: <name>/data.pkl, <name>/data/<key>, <name>/version
    zpath = tmp_path / 'zip_pth.bin'
    with zipfile.ZipFile(zpath, 'w') as z:
        z.writestr('archive/data.pkl', pickle.dumps(collections.OrderedDict([('conv1.weight', 0)]), protocol=2))
        z.writestr('archive/data/0', np.zeros(4, np.float32).tobytes())
        z.writestr('archive/version', '3\n')
    assert detect_format(zpath) == 'pytorch'
    assert detect_format(named(_torch_legacy_stream(), 'legacy_pth')) == 'pytorch'
    other_zip = tmp_path / 'other.zip'
    with zipfile.ZipFile(other_zip, 'w') as z:
        z.writestr('readme.txt', 'hello')
    with pytest.raises(UnknownWeightFormatError, match='other.zip.*without data.pkl'):
        detect_format(other_zip)
    garbage = named(b'GIF89a' + bytes(range(200)), 'garbage')
    with pytest.raises(UnknownWeightFormatError, match=f"{garbage}.*known formats.*ONNX"):
        detect_format(garbage)
    empty = named(b'', 'empty')
    with pytest.raises(UnknownWeightFormatError, match=f'{empty} is empty'):
        detect_format(empty)
    with pytest.raises(FileNotFoundError, match='nowhere.pth'):
        detect_format(tmp_path / 'nowhere.pth')


def test_detect_format_on_files_torch_writes(files, tmp_path):
    """Files written by torch.save itself (zip and legacy), in a subprocess: torch never enters facekit."""
    require_module('torch')
    code = ('import collections, sys, torch\n'
            'sd = collections.OrderedDict([("conv1.weight", torch.ones(2, 3)), ("bn1.num_batches_tracked", '
            'torch.tensor(7))])\n'
            'torch.save(sd, sys.argv[1])\n'
            'torch.save(sd, sys.argv[2], _use_new_zipfile_serialization=False)\n')
    zip_path, legacy_path = tmp_path / 'backbone.pth', tmp_path / 'legacy.pth'
    subprocess.run([sys.executable, '-c', code, str(zip_path), str(legacy_path)], check=True, timeout=120)
    assert zipfile.is_zipfile(zip_path) and not zipfile.is_zipfile(legacy_path)
    assert detect_format(zip_path) == 'pytorch'
    assert detect_format(legacy_path) == 'pytorch'


# ---- .pth through build_backbone (needs the pth importer) ------------------------------------------

def test_pth_loads_through_build_backbone(tmp_path):
    """arcface_torch's own iresnet18, saved with torch.save, embeds like facekit's iresnet18 loaded from it."""
    require_module('torch')
    ref = osp.join(ROOT, 'tools', 'benchmarks', 'torch_reference.py')
    # The torch side in a subprocess (torch and MindSpore each bundle oneDNN/OpenMP).
    code = f"""
import importlib.util, sys, numpy as np, torch
spec = importlib.util.spec_from_file_location('ref', {ref!r}); ref = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ref)
torch.manual_seed(0)
net = ref.get_model('r18')
g = torch.Generator().manual_seed(1)
for name, b in net.named_buffers():
    if name.endswith('running_mean'): b.copy_(torch.randn(b.shape, generator=g) * 0.1)
    if name.endswith('running_var'): b.copy_(torch.rand(b.shape, generator=g) + 0.5)
net.eval()
torch.save(net.state_dict(), sys.argv[1])
x = torch.from_numpy(np.load(sys.argv[2]))
with torch.no_grad(): np.save(sys.argv[3], net(x).numpy())
"""
    np.save(tmp_path / 'x.npy', X[:2])
    subprocess.run([sys.executable, '-c', code, str(tmp_path / 'backbone.pth'), str(tmp_path / 'x.npy'),
                    str(tmp_path / 'ref.npy')], check=True, timeout=300)
    net = build_backbone(dict(type='iresnet18'), str(tmp_path / 'backbone.pth'))
    ours, ref_out = net(ms.Tensor(X[:2])).asnumpy(), np.load(tmp_path / 'ref.npy')
    assert np.abs(ours - ref_out).max() <= 1e-3 * max(1.0, float(np.abs(ref_out).max()))


# ---- the tools -----------------------------------------------------------------------------------------

def _run(tool, *args, timeout=300):
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_v='3', ONEDNN_MAX_CPU_ISA='AVX2')
    return subprocess.run([sys.executable, osp.join(ROOT, 'tools', tool)] + [str(a) for a in args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


def test_test_py_evaluates_an_onnx_file(files):
    """tools/test.py CONFIG model.onnx --target lfw: the numbers the facekit checkpoint gives."""
    from facekit.datasets import SyntheticIdentities, make_verification_bin
    from facekit.datasets.verification_bin import load_bin
    from facekit.evaluation import verification_metrics
    from facekit.apis.images import normalize_batch
    import cv2
    data = files['tmp'] / 'data'
    data.mkdir(exist_ok=True)
    bin_path = str(data / 'lfw.bin')
    make_verification_bin(SyntheticIdentities(num_classes=10, images_per_class=4, seed=0, identity_offset=5000),
                          60, 0, path=bin_path)
    out = str(files['tmp'] / 'onnx_eval.json')
    proc = _run('test.py', files['cfg'], files['onnx'], '--target', 'lfw', '--data-root', data, '--out', out,
                '--work-dir', files['tmp'] / 'work', '--batch-size', '16')
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out) as f:
        r = json.load(f)['results']['lfw']
    # Expected: the facekit checkpoint's embeddings (flip test) through the protocol, computed here.
    images, issame = load_bin(bin_path)
    rgb = [cv2.cvtColor(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
           for b in images]
    emb = FaceEmbedder(files['cfg'], files['ckpt'], device_target='CPU', flip=True).embed_batch(normalize_batch(rgb))
    expected = verification_metrics(emb[0::2], emb[1::2], issame)
    assert r['num_pairs'] == 60
    assert r['fold_accuracies'] == pytest.approx(expected['fold_accuracies'])


def test_convert_weights_refuses_an_unknown_file_in_one_line(tmp_path):
    bad = tmp_path / 'weights.pth'
    bad.write_bytes(b'<html>not a model</html>')
    proc = _run('convert_weights.py', bad, 'iresnet18', tmp_path / 'out.ckpt', timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith('error: '), proc.stderr
    for word in (str(bad), 'known formats', 'facekit', 'mindface', 'PyTorch', 'ONNX'):
        assert word in lines[0], lines[0]
    assert not osp.exists(tmp_path / 'out.ckpt')


def test_convert_weights_from_onnx_checks_parity_and_loads(files, tmp_path):
    out = tmp_path / 'backbone_only.ckpt'
    proc = _run('convert_weights.py', files['onnx'], files['cfg'], out, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '(onnx)' in proc.stdout and 'checked: ' in proc.stdout and 'parity on 2 random faces' in proc.stdout
    _assert_same_embeddings(build_backbone(files['cfg'], str(out))(ms.Tensor(X)).asnumpy(),
                            build_backbone(files['cfg'], files['ckpt'])(ms.Tensor(X)).asnumpy())


def test_converted_parameters_are_loaded_and_checked(files, monkeypatch):
    """Whatever an importer returns is what the backbone holds, and NaN in it is refused with the file named
    (a stand-in importer: the pth/mindface ones return such dicts without touching the backbone)."""
    import facekit.apis.weight_import as wi
    from facekit.apis import load_backbone_weights
    from facekit.utils.checkpoint import NonFiniteCheckpointError
    source = _randomize(BACKBONES.build(dict(type='_apis_test_tiny', embedding_size=8)), seed=5)
    params = {n: p.asnumpy() for n, p in source.parameters_and_names()}
    monkeypatch.setattr(wi, 'detect_format', lambda path: 'pytorch')
    monkeypatch.setattr(wi, 'import_weights', lambda path, backbone, input_size=112: (
        dict(params), dict(format='pytorch', checked='names and shapes')))
    net = BACKBONES.build(dict(type='_apis_test_tiny', embedding_size=8))
    info = load_backbone_weights(net, 'backbone.pth')
    assert info == dict(format='pytorch', checked='names and shapes', prefix='')
    for name, p in net.parameters_and_names():
        np.testing.assert_array_equal(p.asnumpy(), params[name])
    params['fc.weight'] = np.full_like(params['fc.weight'], np.nan)
    with pytest.raises(NonFiniteCheckpointError, match=r'backbone\.pth.*fc\.weight'):
        load_backbone_weights(net, 'backbone.pth')


def test_docs_name_checkpoints_facekit_writes_and_hold_the_reference_table():
    """README/docs name only checkpoint files a run writes (epoch_<max_epochs>.ckpt of that config, never
    latest.ckpt); model_zoo.md holds the 14 reference rows and commands whose tools, configs and backbones exist."""
    import glob
    import re
    docs = [osp.join(ROOT, 'README.md')] + sorted(glob.glob(osp.join(ROOT, 'docs', '*.md')))
    for path in docs:
        text = open(path, encoding='utf-8').read()
        assert 'latest.ckpt' not in text, path
        for cfg, n in re.findall(r'work_dirs/(\w+)/epoch_(\d+)\.ckpt', text):
            max_epochs = Config.fromfile(osp.join(ROOT, 'configs', 'arcface', f'{cfg}.py')).train_cfg.max_epochs
            assert int(n) == max_epochs, (path, cfg, n, max_epochs)
    zoo = open(osp.join(ROOT, 'docs', 'model_zoo.md'), encoding='utf-8').read()
    rows = re.findall(r'^\| (CASIA-WebFace|MS1MV2) \| (\S+) \|(?: \d\.\d{5}\+-\d\.\d{5} \|){5}$', zoo, re.M)
    assert len(rows) == 14
    for train_set, backbone in rows:
        name = {'mobilefacenet-0.45g': 'mbf'}.get(backbone, backbone)
        assert osp.isfile(osp.join(ROOT, 'configs', 'arcface', f"{name}_{'casia' if 'CASIA' in train_set else 'ms1mv2'}.py"))
    for tool, src, target in re.findall(r'^python (tools/\w+\.py) (\S+) (\S+)', zoo, re.M):
        assert osp.isfile(osp.join(ROOT, tool)), tool
        if tool.endswith('convert_weights.py'):
            assert target in BACKBONES, target
        else:
            assert osp.isfile(osp.join(ROOT, src)), src
