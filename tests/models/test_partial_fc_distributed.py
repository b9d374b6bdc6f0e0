"""A real 2-rank PartialFC step on CPU (msrun over loopback) equals the single-rank step."""
import json
import os
import socket
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

import facekit  # noqa: F401
from facekit.models.heads import PartialFCHead
from facekit.registry import LOSSES

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from dist_partial_fc_worker import B, E, C, HeadAndLoss, problem  # noqa: E402
sys.path.insert(0, os.path.dirname(HERE))
from required import msrun_path  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_rank_partial_fc_matches_single_rank(tmp_path):
    msrun = msrun_path()
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', ''),
               PYTHONPATH=os.path.dirname(os.path.dirname(HERE)) + os.pathsep + os.environ.get('PYTHONPATH', ''))
    cmd = [msrun, '--worker_num=2', '--local_worker_num=2', f'--master_port={free_port()}', '--join=True',
           f'--log_dir={tmp_path / "logs"}', os.path.join(HERE, 'dist_partial_fc_worker.py'), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        logs = ''.join(open(tmp_path / 'logs' / f).read()[-3000:] for f in os.listdir(tmp_path / 'logs'))
        pytest.fail(f'msrun failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{logs}')
    ranks = [json.load(open(tmp_path / f'rank{r}.json')) for r in range(2)]
    assert all(r['distributed'] for r in ranks)
    assert [(r['start'], r['num_local']) for r in ranks] == [(0, 6), (6, 5)]

    weight, emb, labels = problem(2)
    head = PartialFCHead(embedding_size=E, num_classes=C, sample_rate=1.0)
    head.weight.set_data(Tensor(weight))
    net = HeadAndLoss(head, LOSSES.build(dict(type='ArcFaceLoss')))
    value, (g_emb, g_w) = ms.value_and_grad(net, 0, net.trainable_params())(Tensor(emb), Tensor(labels))
    for rank, r in enumerate(ranks):
        assert r['loss'] == pytest.approx(float(value.asnumpy()), rel=1e-6)
        np.testing.assert_allclose(r['g_emb'], g_emb.asnumpy()[rank * B:(rank + 1) * B], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(r['g_w'], g_w[0].asnumpy()[r['start']:r['start'] + r['num_local']],
                                   rtol=1e-4, atol=1e-6)
