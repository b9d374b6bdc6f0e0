"""tools/dist_train.sh with 2 msrun workers: when rank 1 raises at iteration 2, the launcher exits
non-zero soon and names rank 1 and its error (MindSpore's own summary names a timed-out node)."""
import os
import os.path as osp
import subprocess
import sys
import time

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
HERE = osp.dirname(osp.abspath(__file__))


@pytest.mark.slow
def test_worker_failure_names_the_rank_and_exits_soon(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=os.pathsep.join([ROOT, HERE]),
               MSRUN_LOG_DIR=str(tmp_path / 'logs'))
    env.pop('MS_NODE_TIMEOUT', None)
    t0 = time.time()
    proc = subprocess.run(['bash', osp.join(ROOT, 'tools', 'dist_train.sh'),
                           osp.join(HERE, 'launcher_fault_cfg.py'), '2', '--work-dir', str(tmp_path / 'wd')],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    wall = time.time() - t0
    assert proc.returncode != 0
    assert 'rank 1 failed: RuntimeError: planted fault on rank 1 at iteration 2' in proc.stderr, proc.stderr[-3000:]
    assert 'rank 0 failed' not in proc.stderr  # rank 0 was killed by msrun, it raised nothing
    # from the fault to the exit: MindSpore's default node timeout alone is 30 s
    died = os.path.getmtime(tmp_path / 'logs' / 'worker_1.log')
    assert time.time() - died < 25, f'launcher exited {time.time() - died:.0f} s after rank 1 died (run {wall:.0f} s)'
