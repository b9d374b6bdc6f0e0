"""arcface_torch ``backbone.pth`` -> facekit: restricted unpickling and embedding parity.

The PyTorch side (tools/benchmarks/torch_reference.py, a transcription of arcface_torch's backbones with
its module names) runs in a subprocess: it writes the .pth files as ``torch.save`` does (zip and
legacy layouts, ``module.`` prefixed) and its own eval-mode embeddings; this process converts the
files with facekit (which never imports torch) and compares embeddings.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from facekit.apis.pth_import import (PthConversionError, UnsafeFileError, convert_pth_to_backbone,
                                     load_pth_state_dict)
from facekit.datasets import verification_bin
from required import require_module

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
require_module('torch')    # the PyTorch side of the parity test (the test extra pins it)

TORCH_REFERENCE_DIR = os.path.join(ROOT, 'tools', 'benchmarks')   # torch_reference.py


def _torch_side(code, cwd):
    env = dict(os.environ, PYTHONPATH=ROOT)
    res = subprocess.run([sys.executable, '-c', code], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]


def _write_references(out_dir, names):
    calls = '\n'.join(f'write_reference({n!r}, {str(out_dir)!r}, layouts={layouts!r})' for n, layouts in names)
    head = f'import sys\nsys.path.insert(0, {TORCH_REFERENCE_DIR!r})\nfrom torch_reference import write_reference\n'
    _torch_side(head + calls, out_dir)


# arcface_torch name -> (facekit backbone, layouts written). Every model is read in both layouts; the
# DDP prefix is tried in one layout each (the prefix is handled after unpickling, layout-independent).
FAST = {'r18': ('iresnet18', ('zip', 'legacy', 'ddp_zip')),
        'mbf': ('mobilefacenet', ('zip', 'legacy', 'ddp_legacy')),
        'vit_t': ('vit_t', ('zip', 'legacy', 'ddp_zip'))}
SLOW = {'r50': ('iresnet50', ('zip', 'legacy', 'ddp_legacy'))}


@pytest.fixture(scope='module')
def references(tmp_path_factory):
    out = tmp_path_factory.mktemp('arcface_torch')
    _write_references(out, [(n, layouts) for n, (_, layouts) in FAST.items()])
    return out


def _build(backbone_name):
    import facekit.models  # noqa: F401  (fill BACKBONES)
    from facekit.registry import BACKBONES
    net = BACKBONES.build(dict(type=backbone_name))
    net.set_train(False)
    return net


def _facekit_embeddings(net, params, x):
    import mindspore as ms
    for name, p in net.parameters_and_names():
        assert params[name].shape == tuple(p.shape), name
        p.set_data(ms.Tensor(params[name]))
    return net(ms.Tensor(x)).asnumpy()


def _check_parity(ref_dir, torch_name, backbone_name, layouts):
    x = np.load(ref_dir / f'{torch_name}_input.npy')
    want = np.load(ref_dir / f'{torch_name}_emb.npy')
    results = {}
    net = _build(backbone_name)
    for layout in layouts:
        params, info = convert_pth_to_backbone(ref_dir / f'{torch_name}_{layout}.pth', backbone_name)
        assert info['format'] == 'pytorch' and info['layout'] == layout.replace('ddp_', '')
        assert 'names and shapes' in info['checked']
        got = _facekit_embeddings(net, params, x)
        diff = float(np.abs(got - want).max())
        cos = np.sum(got * want, 1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
        results[layout] = (diff, float(cos.min()))
        assert diff <= 1e-3 * max(1.0, float(np.abs(want).max())), (layout, diff, np.abs(want).max())
        assert cos.min() >= 0.99999, (layout, cos)
    print(f'{torch_name} -> {backbone_name}: max|emb| {np.abs(want).max():.3g}; (max abs diff, min cosine) '
          f'per layout {results}')


@pytest.mark.parametrize('torch_name', sorted(FAST))
def test_embedding_parity(references, torch_name):
    backbone_name, layouts = FAST[torch_name]
    _check_parity(references, torch_name, backbone_name, layouts)


@pytest.mark.slow
def test_embedding_parity_r50(tmp_path):
    backbone_name, layouts = SLOW['r50']
    _write_references(tmp_path, [('r50', layouts)])
    _check_parity(tmp_path, 'r50', backbone_name, layouts)


def test_tensor_layouts_dtypes_and_views(tmp_path):
    """Offsets into a shared storage, transposed strides, fp16/bf16/int64, in both layouts, against torch."""
    _torch_side(
        'import collections, numpy as np, torch\n'
        'g = torch.Generator().manual_seed(0)\n'
        'base = torch.randn(6, 5, generator=g)\n'
        'sd = collections.OrderedDict(plain=torch.randn(3, 4, generator=g), transposed=base.t(),\n'
        '    sliced=base[2:, 1:4], row=base[4], half=torch.randn(4, 3, generator=g).half().t(),\n'
        '    bf16=torch.randn(7, generator=g).bfloat16(), counter=torch.tensor(17), scalar=torch.tensor(2.5))\n'
        'torch.save(sd, "zip.pth")\n'
        'torch.save(sd, "legacy.pth", _use_new_zipfile_serialization=False)\n'
        'np.savez("want.npz", **{k: (v.float() if v.dtype == torch.bfloat16 else v).numpy() for k, v in sd.items()})\n',
        tmp_path)
    want = np.load(tmp_path / 'want.npz')
    for layout in ('zip', 'legacy'):
        state, got_layout = load_pth_state_dict(tmp_path / f'{layout}.pth')
        assert got_layout == layout
        assert list(state) == ['plain', 'transposed', 'sliced', 'row', 'half', 'bf16', 'counter', 'scalar']
        for k in state:
            assert state[k].shape == want[k].shape, (layout, k)
            assert state[k].dtype == want[k].dtype, (layout, k, state[k].dtype, want[k].dtype)
            np.testing.assert_array_equal(state[k], want[k], err_msg=f'{layout} {k}')


_HOSTILE = '''
import builtins, os, pickle, torch
marker = {marker!r}
class Shell:
    def __reduce__(self):
        return (os.system, ('touch ' + marker,))
class Eval:
    def __reduce__(self):
        return (builtins.eval, ('open(%r, "w").close()' % marker,))
for name, obj in (('system', Shell()), ('eval', Eval())):
    state = {{'conv1.weight': torch.zeros(2), 'payload': obj}}
    torch.save(state, name + '_zip.pth')
    torch.save(state, name + '_legacy.pth', _use_new_zipfile_serialization=False)
    with open(name + '_plain.pkl', 'wb') as f:
        pickle.dump(obj, f, protocol=2)
'''


def test_hostile_pth_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / 'pwned'
    _torch_side(_HOSTILE.format(marker=str(marker)), tmp_path)
    assert not marker.exists()          # writing the files ran nothing
    assert UnsafeFileError is verification_bin.UnsafeFileError
    named = {'system': ('posix.system', 'nt.system', 'os.system'), 'eval': ('builtins.eval', '__builtin__.eval')}
    for payload, globals_ in named.items():
        for layout in ('zip', 'legacy', 'plain'):
            path = tmp_path / (f'{payload}_{layout}.pth' if layout != 'plain' else f'{payload}_plain.pkl')
            with pytest.raises(UnsafeFileError) as err:
                convert_pth_to_backbone(path, 'iresnet18')
            assert any(g in str(err.value) for g in globals_), str(err.value)
            assert not marker.exists(), f'{path.name} executed its payload'


def test_wrong_backbone_names_the_leftovers(references):
    with pytest.raises(PthConversionError) as err:
        convert_pth_to_backbone(references / 'mbf_zip.pth', 'iresnet18')
    msg = str(err.value)
    assert 'map to no IResNet parameter' in msg and 'layers.0.layers.0.weight(128, 3, 3, 3)' in msg
    assert 'parameters are not in the file' in msg and 'conv1.weight' in msg


def test_extra_tensor_is_named(tmp_path, references):
    _torch_side(
        'import torch\n'
        f'sd = torch.load({str(references / "r18_zip.pth")!r})\n'
        'sd["head.weight"] = torch.zeros(3, 4)\n'
        'torch.save(sd, "extra.pth")\n', tmp_path)
    with pytest.raises(PthConversionError, match=r'1 source tensors map to no IResNet parameter: head\.weight\(3, 4\)'):
        convert_pth_to_backbone(tmp_path / 'extra.pth', 'iresnet18')


def test_runtime_never_imports_torch(references):
    code = ('import sys\nfrom facekit.apis.weight_import import import_weights\n'
            f'params, info = import_weights({str(references / "mbf_zip.pth")!r}, "mobilefacenet")\n'
            'assert info["format"] == "pytorch" and len(params) == 283, info\n'
            'assert "torch" not in sys.modules, "facekit imported torch"\n')
    res = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
