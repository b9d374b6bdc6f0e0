"""tools/test.py options through the command line: --no-flip, --nfolds, --cfg-options.

Expected numbers come from embeddings computed in this test (the checkpoint's backbone on images
decoded and normalized here) and facekit.evaluation.verification_metrics, the pure-NumPy protocol.
"""
import json
import os
import os.path as osp
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tiny_eval import make_bin, write_config_and_checkpoint

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('options')
    bin_path = make_bin(tmp / 'lfw.bin')
    cfg, ckpt = write_config_and_checkpoint(tmp, 'tiny', bin_path)
    return dict(tmp=tmp, cfg=cfg, ckpt=ckpt, bin=bin_path)


def run_test_py(setup, name, *args):
    out = str(setup['tmp'] / f'{name}.json')
    proc = subprocess.run([sys.executable, 'tools/test.py', setup['cfg'], setup['ckpt'], '--out', out,
                           '--work-dir', str(setup['tmp'] / 'work')] + list(args),
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, ONEDNN_MAX_CPU_ISA='AVX2'))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    with open(out) as f:
        return proc.stdout, json.load(f)['results']


def embeddings(setup, flip):
    """(pair embeddings 1, 2, issame): the checkpoint's backbone in this process, flip-summed if asked."""
    import mindspore as ms
    from facekit.config import Config
    from facekit.datasets.verification_bin import load_bin
    from facekit.registry import BACKBONES
    from facekit.utils.checkpoint import load_checkpoint, load_state_into

    backbone = BACKBONES.build(Config.fromfile(setup['cfg']).model.backbone.to_dict())
    load_state_into(backbone, load_checkpoint(setup['ckpt']), prefix='backbone.')
    backbone.set_train(False)
    images, issame = load_bin(setup['bin'])
    rgb = np.stack([cv2.cvtColor(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                    for b in images]).astype(np.float32)
    x = ((rgb / 255.0 - 0.5) / 0.5).transpose(0, 3, 1, 2)
    s = backbone(ms.Tensor(np.ascontiguousarray(x))).asnumpy().astype(np.float64)
    if flip:
        s = s + backbone(ms.Tensor(np.ascontiguousarray(x[..., ::-1]))).asnumpy()
    emb = s / np.linalg.norm(s, axis=1, keepdims=True)
    return emb[0::2], emb[1::2], issame


def reported(stdout, name, kind):
    return re.search(rf'\[{name}\]{kind}: ([0-9.]+\+-[0-9.]+)', stdout).group(1)


def test_no_flip_embeds_the_original_images_only(setup):
    from facekit.evaluation import verification_metrics
    stdout, results = run_test_py(setup, 'noflip', '--target', 'lfw', '--data-root', osp.dirname(setup['bin']),
                                  '--no-flip')
    r = results['lfw']
    assert r['flip'] is False and r['nfolds'] == 10
    expected = verification_metrics(*embeddings(setup, flip=False))
    assert r['fold_accuracies'] == pytest.approx(expected['fold_accuracies'])
    assert r['accuracy'] == r['accuracy_noflip']
    assert re.search(r'\[lfw\]Accuracy-Flip: n/a \(no flip test\)', stdout), stdout
    assert reported(stdout, 'lfw', 'Accuracy') is not None
    # the flip-summed protocol gives different distances on these pairs: the option changed something
    flipped = verification_metrics(*embeddings(setup, flip=True))
    assert not np.allclose(flipped['fold_thresholds'], expected['fold_thresholds']) \
        or flipped['auc'] != pytest.approx(expected['auc'], abs=1e-9)


def test_nfolds_5_changes_the_protocol(setup):
    from facekit.evaluation import verification_metrics
    _, results = run_test_py(setup, 'nfolds5', '--target', 'lfw', '--data-root', osp.dirname(setup['bin']),
                             '--nfolds', '5')
    r = results['lfw']
    assert r['nfolds'] == 5 and len(r['fold_accuracies']) == 5 and len(r['fold_thresholds']) == 5
    emb1, emb2, issame = embeddings(setup, flip=True)
    expected = verification_metrics(emb1, emb2, issame, nfolds=5)
    assert r['fold_accuracies'] == pytest.approx(expected['fold_accuracies'])
    assert r['fold_thresholds'] == pytest.approx(expected['fold_thresholds'])
    assert r['accuracy'] == pytest.approx(expected['accuracy'])
    # 5 folds of 12 pairs: every fold accuracy is a multiple of 1/12
    np.testing.assert_allclose(np.array(r['fold_accuracies']) * 12, np.round(np.array(r['fold_accuracies']) * 12),
                               atol=1e-9)


def test_cfg_options_override_the_evaluator(setup):
    # No --target: the config's evaluator runs, renamed and without flip through --cfg-options.
    stdout, results = run_test_py(setup, 'cfgopts', '--cfg-options', 'val_evaluators.0.name=renamed_lfw',
                                  'val_evaluators.0.flip=False', 'val_evaluators.0.nfolds=4')
    assert list(results) == ['renamed_lfw']
    assert 'evaluating renamed_lfw' in stdout and '[renamed_lfw]XNorm' in stdout
    r = results['renamed_lfw']
    assert r['flip'] is False and r['nfolds'] == 4
    from facekit.evaluation import verification_metrics
    expected = verification_metrics(*embeddings(setup, flip=False), nfolds=4)
    assert r['fold_accuracies'] == pytest.approx(expected['fold_accuracies'])
