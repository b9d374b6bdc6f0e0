"""Per-op-type profiles of one train step: MindSpore's profiler and, beside it, PyTorch's.

``python tools/benchmark.py train --backbone vit_t --profile DIR [--compare torch]`` runs the warm-up
steps, then ``--steps`` steps under ``mindspore.Profiler(output_path=DIR)`` and reads its op-type
table (``FRAMEWORK/cpu_op_type_info_0.csv``: op type, calls, total ms); with ``--compare torch`` the
PyTorch step runs the same number of steps under ``torch.profiler`` (CPU activity, self time per
aten op). Both tables are printed per step: ms/step, share of the summed op time, calls/step. Op
times are what the kernels report, so they exclude the framework's dispatch between ops; the share
column is the part to compare across runs taken at different machine loads.
"""
import csv
import glob
import os.path as osp


def read_mindspore_op_types(out_dir):
    """[(op_type, total_ms, calls)] from the newest ``cpu_op_type_info_0.csv`` under ``out_dir``."""
    files = sorted(glob.glob(osp.join(out_dir, '**', 'cpu_op_type_info_*.csv'), recursive=True), key=osp.getmtime)
    if not files:
        raise FileNotFoundError(f'no cpu_op_type_info_*.csv under {out_dir}: did mindspore.Profiler.analyse() run?')
    rows = []
    with open(files[-1], newline='') as f:
        for rec in csv.DictReader(f):
            rows.append((rec['op_type'], float(rec['total_compute_time']), int(rec['type_occurrences'])))
    return rows


def profile_mindspore(step, steps, out_dir):
    """Run ``step()`` ``steps`` times under mindspore.Profiler; [(op_type, total_ms, calls)]."""
    import mindspore as ms
    prof = ms.Profiler(output_path=out_dir)
    for _ in range(steps):
        step()
    prof.stop()
    prof.analyse()
    return read_mindspore_op_types(out_dir)


def profile_torch(torch, step, steps):
    """Run ``step()`` ``steps`` times under torch.profiler (CPU); [(aten op, self ms, calls)]."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    return [(e.key, e.self_cpu_time_total / 1000.0, int(e.count)) for e in prof.key_averages()
            if e.self_cpu_time_total > 0]


def per_step_table(rows, steps, top=12):
    """Markdown rows: op, ms/step, share of summed op time, calls/step; largest first, ``top`` rows."""
    total = sum(ms for _, ms, _ in rows) or 1.0
    rows = sorted(rows, key=lambda r: -r[1])[:top]
    lines = ['| op type | ms/step | share | calls/step |', '|---|---|---|---|']
    for name, ms, calls in rows:
        lines.append(f'| {name} | {ms / steps:.1f} | {100.0 * ms / total:.1f}% | {calls / steps:g} |')
    lines.append(f'| (all ops) | {total / steps:.1f} | 100% | |')
    return '\n'.join(lines)
