"""Shared pieces of the side-by-side benchmarks (``tools/benchmark.py {train,infer} --compare torch``).

Both sides run in one process, interleaved: round r times A once, then B once (A, B, A, B, ...), so a
change in machine load hits both sides alike; each side's figure is the median of its rounds and the
ratio is facekit's throughput over PyTorch's (> 1: facekit faster). Peak RSS per side is measured per
phase: the kernel's high-water mark (VmHWM) is reset (``/proc/self/clear_refs``) before a side is built
and read after its warm-up, minus the resident set before the build: the memory that side's model,
compilation and first steps add at their peak (both frameworks already imported). Not measurable
without Linux's /proc: then reported as None.
"""
import os
import statistics
import time

# facekit backbone -> name in arcface_torch's get_model (tools/benchmarks/torch_reference.py)
TORCH_NAMES = {'iresnet18': 'r18', 'iresnet34': 'r34', 'iresnet50': 'r50', 'iresnet100': 'r100',
               'mobilefacenet': 'mbf', 'vit_t': 'vit_t', 'vit_s': 'vit_s', 'vit_b': 'vit_b', 'vit_l': 'vit_l'}
TORCH_THREADS = 2   # the machine's cores; MindSpore's runtime_num_threads defaults to the same
NO_TORCH = ('--compare torch needs PyTorch, which is not installed (pip install torch; facekit itself never '
            'imports it). Run without --compare to time facekit alone.')


def torch_name(backbone):
    """arcface_torch's name for a facekit backbone; ValueError naming the ones with a PyTorch twin."""
    if backbone not in TORCH_NAMES:
        raise ValueError(f'no PyTorch reference for backbone {backbone!r}; --compare torch knows '
                         f'{", ".join(sorted(TORCH_NAMES))}')
    return TORCH_NAMES[backbone]


def import_torch(threads=TORCH_THREADS):
    """torch with ``threads`` intra-op threads, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return torch


def compare_problem(backbones):
    """Why ``--compare torch`` cannot run for ``backbones``: a message for the user, or None when it can."""
    try:
        for name in backbones:
            torch_name(name)
    except ValueError as e:
        return str(e)
    if import_torch() is None:
        return NO_TORCH
    return None


def interleave(fns, rounds):
    """Call each of ``fns`` ({name: fn}) once per round, in order, ``rounds`` times; {name: [seconds]}."""
    from facekit.utils.progress import progress_bar
    times = {name: [] for name in fns}
    for _ in progress_bar(range(rounds), desc='interleaved rounds', unit='round', leave=False):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def median(values):
    return statistics.median(values)


def throughput(batch, seconds):
    """Samples/s of a batch taking the median of ``seconds``."""
    return batch / median(seconds)


def ratio(ours, theirs):
    """ours / theirs, or None when theirs is missing or zero."""
    return ours / theirs if theirs else None


def fmt_ratio(r):
    return '-' if r is None else f'{r:.2f}x'


def load_average():
    """'1m 5m 15m' load averages, as os.getloadavg() gives them."""
    return ' '.join(f'{x:.2f}' for x in os.getloadavg())


def _status_kb(key):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1])
    raise KeyError(key)


class PeakRSS:
    """``with PeakRSS() as p: ...`` then ``p.growth_mb``: peak resident set inside the block minus the resident
    set at its start (MB), from the kernel's VmHWM reset at entry; None where /proc cannot do that."""

    def __enter__(self):
        self.growth_mb = None
        try:
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')   # reset VmHWM to the current RSS
            self._start = _status_kb('VmRSS')
        except OSError:
            self._start = None
        return self

    def __exit__(self, *exc):
        if self._start is not None:
            self.growth_mb = (_status_kb('VmHWM') - self._start) / 1024.0
        return False


def markdown_table(header, rows):
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
    return '\n'.join(lines)
