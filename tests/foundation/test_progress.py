"""utils.progress decides where a bar is drawn: only on a terminal, never under CI."""
import io
import os
import os.path as osp
import subprocess
import sys

import pytest

from facekit.utils.progress import progress_bar, progress_enabled

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize('ci, expected', [(None, True), ('', True), ('false', True), ('0', True),
                                          ('true', False), ('1', False), ('yes', False)])
def test_terminal_shows_a_bar_unless_ci(ci, expected):
    env = {} if ci is None else {'CI': ci}
    assert progress_enabled(FakeTerminal(), env) is expected


def test_no_terminal_no_bar():
    assert progress_enabled(io.StringIO(), {}) is False
    with open(os.devnull, 'w') as f:
        assert progress_enabled(f, {}) is False


def test_bar_writes_only_to_a_terminal(monkeypatch):
    monkeypatch.delenv('CI', raising=False)
    piped, tty = io.StringIO(), FakeTerminal()
    assert list(progress_bar(range(5), desc='work', stream=piped)) == list(range(5))
    assert piped.getvalue() == ''
    assert list(progress_bar(range(5), desc='work', stream=tty)) == list(range(5))
    assert 'work' in tty.getvalue() and '5/5' in tty.getvalue()
    # the caller's own switch (a tool's --no-progress) wins over a terminal
    quiet = FakeTerminal()
    list(progress_bar(range(5), desc='work', stream=quiet, enabled=False))
    assert quiet.getvalue() == ''


def test_a_tool_with_captured_stderr_prints_no_bar(tmp_path):
    """make_bin encodes and decodes pairs under bars; captured (not a terminal) it writes none."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    env.pop('CI', None)
    out = tmp_path / 'pairs.bin'
    proc = subprocess.run([sys.executable, 'tools/dataset_converters/make_bin.py', '--synthetic', '--num-classes', '6',
                           '--images-per-class', '3', '--num-pairs', '20', '--output', str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.is_file() and 'raw-pixel floor' in proc.stdout
    assert '\r' not in proc.stderr and 'pair/s' not in proc.stderr and 'img/s' not in proc.stderr
