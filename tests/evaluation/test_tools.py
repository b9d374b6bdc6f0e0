"""tools/test.py and tools/dist_test.sh end to end with a tiny random-init model and a generated .bin."""
import json
import os
import os.path as osp
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tiny_eval import make_bin, write_config_and_checkpoint

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('tools')
    data = tmp / 'data'
    data.mkdir()
    bin_path = make_bin(data / 'lfw.bin')
    paths = {last: write_config_and_checkpoint(tmp, f'tiny{last}', bin_path, last) for last in (16, 32)}
    return dict(tmp=tmp, data=str(data), bin=bin_path, tiny=paths[16], other=paths[32])


def run_tool(args, timeout=300):
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA='AVX2')
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def expected_by_hand(cfg_path, ckpt, bin_path):
    """Embed with the backbone in this process, decoding and normalizing the images here."""
    import mindspore as ms
    from facekit.config import Config
    from facekit.datasets.verification_bin import load_bin
    from facekit.evaluation import verification_metrics
    from facekit.registry import BACKBONES
    from facekit.utils.checkpoint import load_checkpoint, load_state_into

    backbone = BACKBONES.build(Config.fromfile(cfg_path).model.backbone.to_dict())
    load_state_into(backbone, load_checkpoint(ckpt), prefix='backbone.')
    backbone.set_train(False)
    images, issame = load_bin(bin_path)
    rgb = np.stack([cv2.cvtColor(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                    for b in images]).astype(np.float32)
    x = ((rgb / 255.0 - 0.5) / 0.5).transpose(0, 3, 1, 2)
    raw = backbone(ms.Tensor(np.ascontiguousarray(x))).asnumpy()
    raw_flip = backbone(ms.Tensor(np.ascontiguousarray(x[..., ::-1]))).asnumpy()
    s = raw.astype(np.float64) + raw_flip
    emb = s / np.linalg.norm(s, axis=1, keepdims=True)
    xnorm = np.mean(np.r_[np.linalg.norm(raw, axis=1), np.linalg.norm(raw_flip, axis=1)])
    return verification_metrics(emb[0::2], emb[1::2], issame), xnorm


def single_process_run(setup):
    """Run tools/test.py once per module (lfw present, cfp_fp missing); cached."""
    if 'single' not in setup:
        cfg, ckpt = setup['tiny']
        out = str(setup['tmp'] / 'single.json')
        work = str(setup['tmp'] / 'work')
        proc = run_tool([sys.executable, 'tools/test.py', cfg, ckpt, '--target', 'lfw,cfp_fp', '--data-root',
                         setup['data'], '--out', out, '--work-dir', work, '--roc', '--batch-size', '16'])
        setup['single'] = (proc, out, work)
    return setup['single']


def test_test_py_end_to_end(setup):
    cfg, ckpt = setup['tiny']
    proc, out, work = single_process_run(setup)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the missing target is listed first, with the paths searched, and the other one still runs
    assert proc.stdout.index('MISSING cfp_fp') < proc.stdout.index('evaluating lfw')
    assert osp.join(setup['data'], 'cfp_fp.bin') in proc.stdout
    assert '| lfw ' in proc.stdout and '+-' in proc.stdout
    with open(out) as f:
        payload = json.load(f)
    r = payload['results']['lfw']
    assert payload['missing']['cfp_fp'][0] == osp.join(setup['data'], 'cfp_fp.bin')
    assert r['num_pairs'] == 60 and len(r['fold_accuracies']) == 10
    expected, xnorm = expected_by_hand(cfg, ckpt, setup['bin'])
    assert r['xnorm'] == pytest.approx(xnorm, rel=1e-4)
    assert r['fold_accuracies'] == pytest.approx(expected['fold_accuracies'])
    assert r['auc'] == pytest.approx(expected['auc'], abs=1e-6)
    assert f"{r['accuracy']:1.5f}+-{r['accuracy_std']:1.5f}" in proc.stdout
    assert osp.isfile(osp.join(work, 'roc_lfw.png'))


def test_checkpoint_of_another_backbone_is_refused(setup):
    cfg, _ = setup['tiny']
    _, other_ckpt = setup['other']
    proc = run_tool([sys.executable, 'tools/test.py', cfg, other_ckpt, '--out', str(setup['tmp'] / 'x.json')])
    assert proc.returncode == 1
    assert 'layer4.0.conv1.weight: checkpoint (32, 16, 3, 3) vs model (16, 16, 3, 3)' in proc.stderr
    assert not osp.exists(setup['tmp'] / 'x.json')


def test_all_targets_missing_fails(setup):
    cfg, ckpt = setup['tiny']
    proc = run_tool([sys.executable, 'tools/test.py', cfg, ckpt, '--target', 'agedb_30',
                     '--data-root', str(setup['tmp'] / 'nowhere')])
    assert proc.returncode == 1
    assert 'MISSING agedb_30' in proc.stdout and osp.join(str(setup['tmp'] / 'nowhere'), 'agedb_30.bin') in proc.stdout


@pytest.mark.slow
def test_dist_test_two_processes_match_single(setup):
    cfg, ckpt = setup['tiny']
    single_proc, single_json, _ = single_process_run(setup)
    assert single_proc.returncode == 0, single_proc.stderr[-3000:]
    out = str(setup['tmp'] / 'dist.json')
    env_port = str(21000 + os.getpid() % 10000)
    proc = subprocess.run(['bash', 'tools/dist_test.sh', cfg, ckpt, '2', '--target', 'lfw', '--data-root',
                           setup['data'], '--out', out, '--batch-size', '16'],
                          cwd=ROOT, capture_output=True, text=True, timeout=240,
                          env=dict(os.environ, PORT=env_port, LOG_DIR=str(setup['tmp'] / 'dist_logs')))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    with open(out) as f:
        dist = json.load(f)['results']['lfw']
    with open(single_json) as f:
        single = json.load(f)['results']['lfw']
    for r in (dist, single):
        r.pop('embed_seconds')
    assert dist == single  # bit-identical: same batches, rows summed with zeros
