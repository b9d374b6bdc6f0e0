"""Checkpoint writes: no temporary file survives a failed or killed save, the previous checkpoint
stays intact, a full disk is one clear CheckpointWriteError."""
import errno
import os
import os.path as osp
import random
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import mindspore as ms

from facekit.engine.hooks import CheckpointHook
from facekit.utils.checkpoint import (TEMP_NAME, CheckpointWriteError, load_checkpoint, remove_stale_temp_files,
                                      save_checkpoint, temp_path)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _state(mib, seed=0):
    n = int(mib * 2 ** 20 / 4)
    return {'w': np.random.default_rng(seed).normal(size=n).astype(np.float32), 'b': np.arange(5, dtype=np.float32)}


def _temps(folder):
    return sorted(n for n in os.listdir(folder) if TEMP_NAME.match(n))


def _assert_loads_as(path, state):
    params = load_checkpoint(str(path))
    for k, v in state.items():
        np.testing.assert_array_equal(params[k].asnumpy(), v)


class _FullDisk:
    """A file that accepts ``limit`` bytes and then fails like a full disk."""

    def __init__(self, f, limit):
        self.f, self.left = f, limit

    def write(self, data):
        if len(data) > self.left:
            self.f.write(bytes(data)[:self.left])
            self.f.flush()
            self.left = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.left -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.fixture
def full_disk_after(monkeypatch):
    """Make MindSpore's checkpoint writer hit ENOSPC after ``limit`` bytes (partial file on disk)."""
    from mindspore.train import serialization
    if hasattr(serialization, '_ensure_ckpt_fs_initialized'):
        serialization._ensure_ckpt_fs_initialized()
    real = serialization._ckpt_fs.create

    def arm(limit):
        monkeypatch.setattr(serialization._ckpt_fs, 'create', lambda name, *a: _FullDisk(real(name, *a), limit))
    return arm


def test_enospc_mid_write_leaves_no_temp_file_and_names_everything(tmp_path, full_disk_after):
    good = _state(1.0, seed=1)
    save_checkpoint(good, tmp_path / 'iter_4.ckpt')
    save_checkpoint(good, tmp_path / 'iter_8.ckpt')              # an older file at the destination
    full_disk_after(300_000)
    with pytest.raises(CheckpointWriteError) as e:
        save_checkpoint(_state(2.0, seed=2), tmp_path / 'iter_8.ckpt', last_good=str(tmp_path / 'iter_4.ckpt'))
    err = e.value
    assert isinstance(err, OSError) and err.errno == errno.ENOSPC
    msg = str(err)
    assert '\n' not in msg
    assert str(tmp_path / 'iter_8.ckpt') in msg and 'no space left' in msg
    assert 'needs 2.0 MiB' in msg and re.search(r'[0-9.]+ MiB free in ' + re.escape(str(tmp_path)), msg)
    assert 'last good checkpoint: ' + str(tmp_path / 'iter_4.ckpt') in msg
    assert 'previous' in msg and 'untouched' in msg
    assert _temps(tmp_path) == []
    _assert_loads_as(tmp_path / 'iter_4.ckpt', good)
    _assert_loads_as(tmp_path / 'iter_8.ckpt', good)


def test_any_failure_mid_write_removes_the_temp_file(tmp_path, monkeypatch):
    from mindspore.train import serialization
    save_checkpoint(_state(0.1), tmp_path / 'iter_1.ckpt')
    real = serialization._write_parameter_bytes_data
    calls = []

    def boom(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError('injected failure after one tensor')
        return real(*a, **kw)
    monkeypatch.setattr(serialization, '_write_parameter_bytes_data', boom)
    with pytest.raises(RuntimeError, match='injected'):
        save_checkpoint({'a': ms.Tensor(np.ones(1000, np.float32)), 'b': ms.Tensor(np.ones(9, np.float32))},
                        tmp_path / 'iter_2.ckpt')
    assert len(calls) == 2 and _temps(tmp_path) == [] and not osp.exists(tmp_path / 'iter_2.ckpt')
    _assert_loads_as(tmp_path / 'iter_1.ckpt', _state(0.1))


def test_training_state_enospc_names_the_last_good_checkpoint(tmp_path, full_disk_after):
    """Through the runner: the message names the newest checkpoint on disk (last_checkpoint)."""
    import importlib.util
    from facekit.engine import Runner
    from facekit.engine.lr_schedules import PolyLR
    from facekit.engine.optim import SGD
    if 'engine_tiny' not in sys.modules:    # MindSpore's graph parser looks the module up by name
        spec = importlib.util.spec_from_file_location('engine_tiny',
                                                      osp.join(ROOT, 'tests', 'engine', 'engine_tiny.py'))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules['engine_tiny'] = module
    tiny = sys.modules['engine_tiny']
    ms.set_context(mode=ms.GRAPH_MODE)
    net = tiny.TinyRecognizer()
    r = Runner(net, tiny.ArrayLoader(), SGD(net, lr=0.1), PolyLR(0.1, 8), 1, str(tmp_path), max_iters=3,
               hooks=[dict(type='CheckpointHook', interval=2, by_epoch=False)])
    r.train()
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith('.ckpt')) == ['iter_2.ckpt', 'iter_3.ckpt']
    full_disk_after(200)
    with pytest.raises(CheckpointWriteError) as e:
        r.save_checkpoint(str(tmp_path / 'iter_4.ckpt'))
    r.close()
    assert 'cannot write checkpoint ' + str(tmp_path / 'iter_4.ckpt') in str(e.value)
    assert 'last good checkpoint: ' + str(tmp_path / 'iter_3.ckpt') in str(e.value)
    assert _temps(tmp_path) == [] and open(tmp_path / 'last_checkpoint').read() == 'iter_3.ckpt'


_WRITER = textwrap.dedent('''
    import sys
    import numpy as np
    from facekit.utils.checkpoint import save_checkpoint
    w = np.random.default_rng(0).normal(size=int(sys.argv[2]) * 2 ** 18).astype(np.float32)
    print('ready', flush=True)
    while True:
        save_checkpoint({'w': w}, sys.argv[1])
''')


class _StartUp:
    """What CheckpointHook.before_run needs from a runner starting in ``work_dir``."""
    rank, iter = 0, 0

    def __init__(self, work_dir):
        self.work_dir = str(work_dir)
        self.run_started_at = time.time()
        self.lines = []

    def log(self, msg):
        self.lines.append(msg)


@pytest.mark.slow
def test_kill_9_during_saves_leaves_previous_checkpoint_and_start_up_removes_temp_files(tmp_path):
    good = _state(0.5, seed=3)
    save_checkpoint(good, tmp_path / 'iter_1.ckpt')
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    rng = random.Random(0)
    seen_temp = 0
    for trial in range(4):
        proc = subprocess.Popen([sys.executable, '-c', _WRITER, str(tmp_path / 'iter_2.ckpt'), '48'],
                                stdout=subprocess.PIPE, env=env)
        assert proc.stdout.readline().strip() == b'ready'
        time.sleep(rng.uniform(0.05, 0.6))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        seen_temp += bool(_temps(tmp_path))
        _assert_loads_as(tmp_path / 'iter_1.ckpt', good)
        if osp.exists(tmp_path / 'iter_2.ckpt'):     # atomic: complete or absent
            assert load_checkpoint(str(tmp_path / 'iter_2.ckpt'))['w'].shape == (48 * 2 ** 18,)
        start = _StartUp(tmp_path)
        CheckpointHook().before_run(start)
        assert _temps(tmp_path) == [], f'trial {trial}: {os.listdir(tmp_path)}'
        assert all('temporary file of an interrupted checkpoint write' in ln for ln in start.lines)
    assert seen_temp > 0, 'no kill landed inside a write; the test would prove nothing'


def test_stale_temp_cleanup_spares_live_writers_and_other_files(tmp_path):
    sleeper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    try:
        started = time.time() - 5
        dead = temp_path(tmp_path / 'iter_3.ckpt', pid=2 ** 22 + 7)      # above pid_max: never alive
        live_fresh = temp_path(tmp_path / 'iter_4.ckpt', pid=sleeper.pid)
        live_old = temp_path(tmp_path / 'iter_5.ckpt', pid=sleeper.pid)[:-len('.ckpt')] + '.tmp'
        mine = temp_path(tmp_path / 'iter_6.ckpt')
        marker = str(tmp_path / f'.last_checkpoint.tmp-{2 ** 22 + 7}')
        keep = [str(tmp_path / n) for n in ('notes.tmp', '.iter_3.ckpt.tmp-x.ckpt', 'iter_3.ckpt.tmp-1.ckpt')]
        for p in [dead, live_fresh, live_old, mine, marker] + keep:
            open(p, 'wb').close()
        os.utime(live_old, (started - 100, started - 100))
        removed = remove_stale_temp_files(str(tmp_path), started)
        assert sorted(removed) == sorted([dead, live_old, mine, marker])
        assert sorted(os.listdir(tmp_path)) == sorted(osp.basename(p) for p in [live_fresh] + keep)
    finally:
        sleeper.kill()
        sleeper.wait()


def _can_mount_tmpfs(where):
    if not hasattr(os, 'geteuid') or os.geteuid() != 0:
        return 'not root: mounting a 1 MiB tmpfs needs root'
    proc = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', str(where)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        return f'mount -t tmpfs not permitted here: {proc.stderr.strip() or proc.returncode}'
    return None


def test_real_enospc_on_a_1mib_tmpfs(tmp_path):
    where = tmp_path / 'small'
    where.mkdir()
    why = _can_mount_tmpfs(where)
    if why:
        pytest.skip(why)
    try:
        good = _state(0.25, seed=4)
        save_checkpoint(good, where / 'iter_1.ckpt')
        with pytest.raises(CheckpointWriteError) as e:
            save_checkpoint(_state(2.0), where / 'iter_2.ckpt', last_good=str(where / 'iter_1.ckpt'))
        assert e.value.errno == errno.ENOSPC and 'needs 2.0 MiB' in str(e.value)
        assert 'last good checkpoint: ' + str(where / 'iter_1.ckpt') in str(e.value)
        assert sorted(os.listdir(where)) == ['iter_1.ckpt']
        _assert_loads_as(where / 'iter_1.ckpt', good)
    finally:
        subprocess.run(['umount', str(where)], check=False)
