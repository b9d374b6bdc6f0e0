"""Two msrun CPU workers, data parallel: ranks agree on weights, loss equals one process on the global batch."""
import json
import os
import os.path as osp
import socket
import subprocess
import sys

import numpy as np
import pytest

HERE = osp.dirname(osp.abspath(__file__))
WORKER = osp.join(HERE, 'dist_worker.py')


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _env():
    env = dict(os.environ)
    # msrun starts `python` from PATH: make it this interpreter
    env['PATH'] = osp.dirname(sys.executable) + os.pathsep + env.get('PATH', '')
    return env


@pytest.mark.slow
def test_two_workers_match_one_process_on_the_global_batch(tmp_path):
    msrun = osp.join(osp.dirname(sys.executable), 'msrun')
    out2, out1 = tmp_path / 'two', tmp_path / 'one'
    cmd = [msrun, '--worker_num=2', '--local_worker_num=2', f'--master_port={_free_port()}', '--join=True',
           f'--log_dir={tmp_path / "logs"}', '--cluster_time_out=60', WORKER, str(out2)]
    proc = subprocess.run(cmd, env=_env(), cwd=str(tmp_path), capture_output=True, text=True, timeout=170)
    logs = ''
    for name in ('worker_0.log', 'worker_1.log'):
        path = tmp_path / 'logs' / name
        if path.exists():
            logs += ''.join(ln for ln in path.read_text().splitlines(True) if not ln.startswith('[WARNING]'))[-3000:]
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:] + logs
    single = subprocess.run([sys.executable, WORKER, str(out1)], env=_env(), cwd=str(tmp_path),
                            capture_output=True, text=True, timeout=120)
    assert single.returncode == 0, single.stderr[-3000:]

    r0, r1 = (json.loads((out2 / f'rank{r}.json').read_text()) for r in (0, 1))
    one = json.loads((out1 / 'rank0.json').read_text())
    assert (r0['world'], r1['rank'], one['world']) == (2, 1, 1)
    # both ranks hold identical weights after every step (gradients were averaged)
    np.testing.assert_array_equal(np.array(r0['backbone']), np.array(r1['backbone']))
    np.testing.assert_array_equal(np.array(r0['head']), np.array(r1['head']))
    # a batch-mean loss over 4 + 4 rows equals the loss over the 8-row global batch
    mean_loss = (np.array(r0['losses']) + np.array(r1['losses'])) / 2
    np.testing.assert_allclose(mean_loss, one['losses'], rtol=1e-5, atol=1e-6)
    assert np.abs(np.array(r0['losses']) - r1['losses']).max() > 1e-3   # the ranks did see different rows
    # and after 3 SGD-momentum steps the weights equal the single-process ones
    np.testing.assert_allclose(r0['backbone'], one['backbone'], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r0['head'], one['head'], rtol=1e-5, atol=1e-6)
    # rank 0 wrote the checkpoint; a replicated head needs no per-rank shard file
    files = sorted(os.listdir(out2 / 'work'))
    assert 'epoch_1.ckpt' in files and not any('.rank1.' in f for f in files)


@pytest.mark.slow
def test_two_workers_with_sharded_partialfc(tmp_path):
    """PartialFC sharded over 2 ranks: shard gradients stay local, checkpoints get a rank-1 shard file."""
    msrun = osp.join(osp.dirname(sys.executable), 'msrun')
    out2, out1 = tmp_path / 'two', tmp_path / 'one'
    cmd = [msrun, '--worker_num=2', '--local_worker_num=2', f'--master_port={_free_port()}', '--join=True',
           f'--log_dir={tmp_path / "logs"}', '--cluster_time_out=60', WORKER, str(out2), 'PartialFCHead']
    proc = subprocess.run(cmd, env=_env(), cwd=str(tmp_path), capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    single = subprocess.run([sys.executable, WORKER, str(out1), 'PartialFCHead'], env=_env(), cwd=str(tmp_path),
                            capture_output=True, text=True, timeout=120)
    assert single.returncode == 0, single.stderr[-3000:]
    r0, r1 = (json.loads((out2 / f'rank{r}.json').read_text()) for r in (0, 1))
    one = json.loads((out1 / 'rank0.json').read_text())
    assert r0['sharded'] and r1['class_start'] == 3
    # the cross-rank softmax makes every rank's loss the global-batch loss; before any update it
    # equals the single process's exactly
    assert r0['losses'] == r1['losses']
    assert r0['losses'][0] == pytest.approx(one['losses'][0], rel=1e-5)
    np.testing.assert_array_equal(np.array(r0['backbone']), np.array(r1['backbone']))
    assert np.array(r0['head']).shape == (3, 8) and np.array(r1['head']).shape == (3, 8)   # one shard each
    files = sorted(os.listdir(out2 / 'work'))
    assert 'epoch_1.ckpt' in files and 'epoch_1.rank1.ckpt' in files


@pytest.mark.slow
def test_two_workers_accumulating_two_micro_batches_match_one_process(tmp_path):
    """2 ranks x k=2 micro-batches of 2 rows = one process on the global batch of 8: the gradients are
    summed over micro-batches, divided by k and all-reduced once per optimizer step."""
    msrun = osp.join(osp.dirname(sys.executable), 'msrun')
    out2, out1 = tmp_path / 'two', tmp_path / 'one'
    cmd = [msrun, '--worker_num=2', '--local_worker_num=2', f'--master_port={_free_port()}', '--join=True',
           f'--log_dir={tmp_path / "logs"}', '--cluster_time_out=60', WORKER, str(out2), 'NormFCHead', '2']
    proc = subprocess.run(cmd, env=_env(), cwd=str(tmp_path), capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    single = subprocess.run([sys.executable, WORKER, str(out1)], env=_env(), cwd=str(tmp_path),
                            capture_output=True, text=True, timeout=120)
    assert single.returncode == 0, single.stderr[-3000:]
    r0, r1 = (json.loads((out2 / f'rank{r}.json').read_text()) for r in (0, 1))
    one = json.loads((out1 / 'rank0.json').read_text())
    np.testing.assert_array_equal(np.array(r0['backbone']), np.array(r1['backbone']))
    np.testing.assert_allclose((np.array(r0['losses']) + np.array(r1['losses'])) / 2, one['losses'],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r0['backbone'], one['backbone'], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r0['head'], one['head'], rtol=1e-5, atol=1e-6)
