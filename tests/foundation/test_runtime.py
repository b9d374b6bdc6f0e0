import os
import subprocess
import sys

import pytest

from facekit.utils.runtime import resolve_device_target, setup_runtime


def _run(code, env):
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_import_sets_onednn_isa_by_default():
    env = {k: v for k, v in os.environ.items() if k != 'ONEDNN_MAX_CPU_ISA'}
    code = "import os, facekit; print(os.environ.get('ONEDNN_MAX_CPU_ISA'))"
    assert _run(code, env) == 'AVX2'


def test_import_keeps_user_exported_isa():
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA='AVX512_CORE')
    code = "import os, facekit; print(os.environ.get('ONEDNN_MAX_CPU_ISA'))"
    assert _run(code, env) == 'AVX512_CORE'


def test_resolve_device_target():
    assert resolve_device_target('cpu') == 'CPU'
    assert resolve_device_target('Ascend') == 'Ascend'
    # this CI machine has no GPU/NPU, so auto must fall back to CPU
    assert resolve_device_target('auto') == 'CPU'
    with pytest.raises(ValueError, match="device_target must be one of CPU, GPU, Ascend, auto; got 'TPU'"):
        resolve_device_target('TPU')


def test_setup_runtime_mode_and_seed():
    import mindspore as ms
    import numpy as np
    assert setup_runtime('CPU', mode='pynative', seed=7) == 'CPU'
    assert ms.get_context('mode') == ms.PYNATIVE_MODE
    a = np.random.rand(3)
    setup_runtime('CPU', mode='graph', seed=7)
    assert ms.get_context('mode') == ms.GRAPH_MODE
    assert np.array_equal(np.random.rand(3), a)
    with pytest.raises(ValueError, match="mode must be 'graph' or 'pynative'"):
        setup_runtime('CPU', mode='eager')
    ms.set_context(mode=ms.PYNATIVE_MODE)  # MindSpore's default, for the tests that follow
