"""Device, execution mode and seeding: the one place that configures MindSpore's context."""
import os
import random

import numpy as np

_VALID_TARGETS = ('CPU', 'GPU', 'Ascend', 'auto')


def available_device_targets():
    """Device targets this MindSpore build can run on, best first (e.g. ``['GPU', 'CPU']``)."""
    import mindspore as ms
    found = []
    # Probing Ascend loads its plugin, which prints a failure on machines without the
    # CANN toolkit; only probe where the toolkit is installed.
    has_cann = 'ASCEND_HOME_PATH' in os.environ or os.path.isdir('/usr/local/Ascend')
    for target in (('Ascend', 'GPU') if has_cann else ('GPU',)):
        try:
            if ms.hal.is_available(target):
                found.append(target)
        except Exception:  # a backend plugin that fails to load means the target is not usable
            continue
    found.append('CPU')
    return found


def resolve_device_target(device_target='auto'):
    """Map ``'auto'`` (or a case variant of a real target) to the target to use."""
    if device_target is None:
        device_target = 'auto'
    canonical = {t.lower(): t for t in _VALID_TARGETS}
    key = str(device_target).lower()
    if key not in canonical:
        raise ValueError(f"device_target must be one of {', '.join(_VALID_TARGETS)}; got {device_target!r}")
    target = canonical[key]
    if target == 'auto':
        return available_device_targets()[0]
    return target


def set_seed(seed):
    """Seed Python, NumPy and MindSpore's global RNG."""
    import mindspore as ms
    random.seed(seed)
    np.random.seed(seed)
    ms.set_seed(seed)


def setup_runtime(device_target='auto', mode='graph', seed=None, device_id=None):
    """Configure MindSpore: device target, graph/pynative mode, seed.

    Args:
        device_target: 'CPU' | 'GPU' | 'Ascend' | 'auto' (first available of Ascend, GPU, CPU).
        mode: 'graph' (compiled, default) or 'pynative' (eager, for debugging).
        seed: global seed, or None to leave RNGs alone.
        device_id: accelerator index; default from $DEVICE_ID or 0.
    Returns: the resolved device target string.
    """
    os.environ.setdefault('ONEDNN_MAX_CPU_ISA', 'AVX2')
    import mindspore as ms
    target = resolve_device_target(device_target)
    modes = {'graph': ms.GRAPH_MODE, 'pynative': ms.PYNATIVE_MODE}
    if str(mode).lower() not in modes:
        raise ValueError(f"mode must be 'graph' or 'pynative'; got {mode!r}")
    ms.set_context(mode=modes[str(mode).lower()])
    if device_id is None:
        device_id = int(os.environ.get('DEVICE_ID', 0))
    try:
        if target == 'CPU':
            ms.set_device('CPU')
        else:
            ms.set_device(target, device_id)
    except RuntimeError as e:
        # MindSpore fixes the device once a kernel has run; re-selecting the same one is fine.
        if ms.get_context('device_target') != target:
            raise RuntimeError(f'cannot switch MindSpore to {target}: it already ran on '
                               f"{ms.get_context('device_target')} in this process ({e})") from e
    if seed is not None:
        set_seed(seed)
    return target
