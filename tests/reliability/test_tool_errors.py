"""Every tool answers a user's mistake with one line on stderr (``error: ...`` or ``config error: ...``)
naming the file or key, a non-zero exit and no traceback; ``--debug`` shows the traceback."""
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY = """
model = dict(type='FaceRecognizer',
             backbone=dict(type='VisionTransformer', patch_size=28, embed_dim=16, depth=1, num_heads=2,
                           embedding_size=8),
             head=dict(type='NormFCHead', embedding_size=8, num_classes=4), loss=dict(type='ArcFaceLoss'))
runtime = dict(device_target='CPU', mode='pynative')
test_evaluators = [dict(type='VerificationEvaluator', name='syn', num_pairs=20, nfolds=2, batch_size=8,
                        dataset=dict(type='SyntheticIdentities', num_classes=4, images_per_class=4,
                                     identity_offset=1000))]
"""


def run(tool, *args):
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_v='3')   # GLOG_v=3: no MindSpore start-up warnings
    return subprocess.run([sys.executable, osp.join(ROOT, 'tools', tool)] + [str(a) for a in args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=180)


def assert_one_line(proc, *named, code=None):
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    if code is not None:
        assert proc.returncode == code, proc.stderr
    assert 'Traceback' not in proc.stderr, proc.stderr
    assert len(err) == 1 and (err[0].startswith('error: ') or err[0].startswith('config error: ')), proc.stderr
    for word in named:
        assert str(word) in err[0], err[0]
    return err[0]


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    import cv2
    d = tmp_path_factory.mktemp('tool_errors')
    (d / 'tiny.py').write_text(TINY + f"work_dir = {str(d / 'wd')!r}\n")
    (d / 'empty.ckpt').write_bytes(b'')
    (d / 'garbage.ckpt').write_bytes(np.random.default_rng(0).bytes(4096))
    (d / 'corrupt.jpg').write_bytes(b'\xff\xd8\xff' + b'not really a jpeg' * 10)
    cv2.imwrite(str(d / 'face.png'), np.random.default_rng(1).integers(0, 255, (112, 112, 3), dtype=np.uint8))
    return d


@pytest.mark.parametrize('name, code', [('empty.ckpt', 1), ('garbage.ckpt', 1), ('missing.ckpt', 2)])
def test_test_py_bad_checkpoint(files, name, code):
    # a missing load_from is a config problem (status 2); an unreadable file is a bad input (status 1)
    assert_one_line(run('test.py', files / 'tiny.py', files / name), files / name, code=code)


@pytest.mark.parametrize('name', ['empty.ckpt', 'garbage.ckpt'])
def test_infer_py_bad_checkpoint(files, name):
    assert_one_line(run('infer.py', files / 'tiny.py', files / name, files / 'face.png'), files / name, code=1)


@pytest.mark.parametrize('name', ['missing.png', 'corrupt.jpg'])
def test_infer_py_bad_image(files, name):
    import facekit  # noqa: F401
    from facekit.config import Config
    from facekit.registry import MODELS
    from facekit.utils.checkpoint import save_checkpoint
    ckpt = files / 'ok.ckpt'
    if not ckpt.exists():
        save_checkpoint(MODELS.build(Config.fromfile(str(files / 'tiny.py')).model.to_dict()), str(ckpt))
    assert_one_line(run('infer.py', files / 'tiny.py', ckpt, files / name), files / name, code=1)


def test_debug_shows_the_traceback(files):
    proc = run('test.py', files / 'tiny.py', files / 'garbage.ckpt', '--debug')
    assert proc.returncode != 0 and 'Traceback' in proc.stderr


@pytest.mark.parametrize('opts, named', [
    (['optimzer=dict(lr=10.)'], ["'optimzer'", "'optimizer'"]),
    (['runtime.chekpoint_interval=100'], ["'runtime.chekpoint_interval'", "'checkpoint_interval'"]),
    (['optimizer.lr=abc'], ["'optimizer.lr'", "'abc'"]),
    (['model.backbone.depth=two'], ["'model.backbone.depth'", "'two'"]),
])
def test_train_py_config_mistakes(tmp_path, opts, named):
    proc = run('train.py', 'configs/arcface/vit_synthetic_cpu.py', '--work-dir', tmp_path, '--cfg-options', *opts)
    line = assert_one_line(proc, *named, code=2)
    assert line.startswith('config error: ') and not osp.exists(tmp_path / 'train.log')


def test_train_py_malformed_cfg_option(tmp_path):
    proc = run('train.py', 'configs/arcface/vit_synthetic_cpu.py', '--work-dir', tmp_path,
               '--cfg-options', 'runtime.clip_prefixes=[backbone.,head.')
    assert_one_line(proc, 'runtime.clip_prefixes', '[backbone.,head.', code=2)


@pytest.mark.slow
def test_missing_config_file(tmp_path):
    for tool in ('train.py', 'test.py'):
        args = [tmp_path / 'nope.py'] + ([tmp_path / 'x.ckpt'] if tool == 'test.py' else [])
        assert_one_line(run(tool, *args), tmp_path / 'nope.py', code=2)


@pytest.mark.slow
def test_export_and_convert_bad_inputs(files, tmp_path):
    assert_one_line(run('export.py', files / 'tiny.py', files / 'garbage.ckpt', '--out', tmp_path / 'x'),
                    files / 'garbage.ckpt')
    assert_one_line(run('convert_weights.py', tmp_path / 'missing.onnx', 'iresnet18', tmp_path / 'o.ckpt'),
                    'missing.onnx')


@pytest.mark.parametrize('tool, args, named', [
    ('rec2jpg.py', ['--rec', '{bad_rec}', '--output', '{tmp}/jpg'], 'train'),
    ('rec2mindrecord.py', ['--rec', '{tmp}/none', '--output', '{tmp}/x.mindrecord'], 'none'),
    ('folder2rec.py', ['--root', '{tmp}/none', '--output', '{tmp}/o'], 'none'),
    ('make_bin.py', ['--floor', '{tmp}/none.bin'], 'none.bin'),
])
def test_dataset_converters_bad_inputs(tmp_path, tool, args, named):
    bad_rec = tmp_path / 'rec'
    bad_rec.mkdir()
    (bad_rec / 'train.rec').write_bytes(b'\x00' * 64)
    (bad_rec / 'train.idx').write_text('0\t0\n1\t999\n')
    args = [a.format(bad_rec=bad_rec, tmp=tmp_path) for a in args]
    assert_one_line(run(osp.join('dataset_converters', tool), *args), named)


def test_usage_errors_are_one_line():
    assert_one_line(run('infer.py', 'a', 'b', 'c', '--batch-size', 'x'), '--batch-size', code=2)


def test_infer_py_config_typo_is_named(files):
    (files / 'typo.py').write_text((files / 'tiny.py').read_text().replace('depth=1,', 'dept=1,'))
    line = assert_one_line(run('infer.py', files / 'typo.py', files / 'garbage.ckpt', files / 'face.png'),
                           "'model.backbone.dept'", "'depth'", code=2)
    assert line.startswith('config error: ')
