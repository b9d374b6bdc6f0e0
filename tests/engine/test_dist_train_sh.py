"""tools/dist_train.sh itself: 2 CPU workers through msrun train the demo config cut down to 4 iterations."""
import os
import os.path as osp
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from required import msrun_path  # noqa: E402

# 10 identities x 8 images = 80 samples; batch 8 per rank.
OPTS = ['train_cfg.max_iters=4', 'train_cfg.max_epochs=1', 'train_cfg.raw_pixel_floor=False',
        'train_dataloader.batch_size=8', 'train_dataloader.num_workers=1', 'train_dataloader.dataset.num_classes=10',
        'train_dataloader.dataset.images_per_class=8', 'model.head.num_classes=10', 'model.backbone.depth=1',
        'model.backbone.embed_dim=32', 'val_evaluators=[]', 'runtime.log_interval=2']


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_dist_train_sh_two_cpu_workers(tmp_path):
    msrun_path()
    work, logs = tmp_path / 'work', tmp_path / 'logs'
    env = dict(os.environ, PYTHON=sys.executable, MASTER_PORT=str(_free_port()), MSRUN_LOG_DIR=str(logs),
               CLUSTER_TIME_OUT='90')
    proc = subprocess.run(['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), 'configs/arcface/vit_synthetic_cpu.py', '2',
                           '--work-dir', str(work), '--cfg-options'] + OPTS,
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    worker_logs = {r: (logs / f'worker_{r}.log') for r in (0, 1)}
    text = {r: p.read_text() if p.exists() else '' for r, p in worker_logs.items()}
    tail = proc.stdout[-2000:] + proc.stderr[-2000:] + ''.join(
        ''.join(ln for ln in t.splitlines(True) if not ln.startswith(('[INFO]', '[WARNING]')))[-2000:]
        for t in text.values())
    assert proc.returncode == 0, tail
    # both ranks were started by msrun and neither failed
    assert all(text.values()), f'a worker log is missing or empty: {[str(p) for p in worker_logs.values()]}'
    for t in text.values():
        assert 'Traceback' not in t and '[ERROR]' not in t, tail

    log = (work / 'train.log').read_text()
    # a world of 2: the global batch is 2 x 8, so the 80 samples make 5 iterations per epoch (10 on one rank)
    assert re.search(r'training: 4 iterations \(1 epochs x 5\), batch 8 x 2 rank\(s\)', log), log
    losses = [float(v) for v in re.findall(r'loss: ([0-9.]+)', log)]
    assert len(losses) == 2 and all(np.isfinite(losses)) and all(v > 0 for v in losses), log
    assert 'training finished' in log and 'training finished' in text[0]   # rank 0 logs, as train.log does
    # rank 0 wrote the checkpoint of the last iteration; it loads and holds finite weights
    assert (work / 'last_checkpoint').read_text() == 'iter_4.ckpt'
    from facekit.utils.checkpoint import load_checkpoint
    params = load_checkpoint(str(work / 'iter_4.ckpt'))
    assert any(k.startswith('backbone.') for k in params) and any(k.startswith('head.') for k in params)
    assert all(np.isfinite(np.asarray(v, np.float64)).all() for v in params.values()
               if np.asarray(v).dtype.kind == 'f')
    assert not any('rank1' in f for f in os.listdir(work))   # a replicated head: no per-rank shard file
