"""Results as text tables (terminaltables), JSON files and ROC plots (matplotlib, Agg backend).

``report(evaluators, results)`` is the one entry point for tables: each evaluator class renders
its own (``BaseEvaluator.table``); nothing here looks at which keys a result has."""
import json
import math
import os
import os.path as osp

import numpy as np

__all__ = ['format_mean_std', 'format_value', 'ascii_table', 'report', 'to_jsonable', 'write_json', 'plot_roc',
           'summary_only', 'without_samples', 'SAMPLES_KEY']

# keys holding per-threshold curves: kept in memory and for plots, left out of tables
CURVE_KEYS = ('tpr', 'fpr', 'thresholds')
# key of a result's per-pair / per-image arrays (VerificationEvaluator: distances, issame, norms):
# kept in memory for the report's figures, left out of tables and result JSON
SAMPLES_KEY = 'samples'


def format_mean_std(mean, std, digits=5):
    """``0.99817+-0.00229``: the reference table's format ('%1.5f+-%1.5f')."""
    return f'{mean:1.{digits}f}+-{std:1.{digits}f}'


def format_value(value, digits=5):
    """A float with ``digits`` decimals; 'n/a' strings and None pass through as 'n/a'."""
    if value is None or isinstance(value, str):
        return 'n/a' if value is None else value
    if isinstance(value, float) and math.isnan(value):
        return 'nan'
    return f'{value:.{digits}f}'


def ascii_table(rows, title=None):
    """``rows`` (a header row, then data rows of strings) as a terminaltables ASCII table."""
    from terminaltables import AsciiTable
    table = AsciiTable(rows, title)
    table.inner_row_border = False
    return table.table


def report(evaluators, results, title=None):
    """All results as text: one table per evaluator class, in the order the classes first appear.

    Args:
        evaluators: evaluator objects (``BaseEvaluator`` subclasses or plain objects with
            ``name`` and ``evaluate``, see ``as_evaluator``); those without a result are skipped.
        results: ``{evaluator name: result dict}`` as ``evaluate_all`` returns it.
        title: appended to each table's title, e.g. ``'after 500 iterations'``.
    Raises ValueError for a result whose name no evaluator has (nothing would know its table).
    """
    from .base import as_evaluator  # late: base imports this module's formatting helpers
    evaluators = [as_evaluator(ev) for ev in evaluators]
    unknown = [name for name in results if name not in {ev.name for ev in evaluators}]
    if unknown:
        raise ValueError(f'results {unknown} belong to none of the evaluators '
                         f'{[ev.name for ev in evaluators]}')
    groups = {}  # (table class, title) -> {name: result}, insertion-ordered
    for ev in evaluators:
        if ev.name in results:
            groups.setdefault((type(ev), ev.kind_title()), {})[ev.name] = results[ev.name]
    tables = [cls.table(group, title=f'{kind} {title}' if title else kind)
              for (cls, kind), group in groups.items()]
    return '\n'.join(tables)


def to_jsonable(obj):
    """Numpy scalars/arrays to Python, dict keys to str, NaN/inf to None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if math.isfinite(value) else None
    return obj


def summary_only(result):
    """A result dict without its per-threshold curves and per-sample arrays (for logs and compact JSON)."""
    return {k: v for k, v in result.items() if k not in CURVE_KEYS and k != SAMPLES_KEY}


def without_samples(result):
    """A result dict without its per-sample arrays (``SAMPLES_KEY``), e.g. before writing it as JSON."""
    return {k: v for k, v in result.items() if k != SAMPLES_KEY}


def write_json(results, path):
    """Write ``results`` to ``path`` as indented strict JSON (atomic: temp file, then rename)."""
    path = str(path)
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(to_jsonable(results), f, indent=2, allow_nan=False)
        f.write('\n')
    os.replace(tmp, path)
    return path


def plot_roc(curves, path, title='ROC'):
    """Save ROC curves as a PNG.

    Args:
        curves: ``{label: (fpr, tpr)}`` arrays in [0, 1].
        path: output .png path.
    The FAR axis is logarithmic (down to the smallest non-zero FAR plotted), as in IJB plots.
    """
    import matplotlib
    matplotlib.use('Agg', force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    smallest = 1.0
    for label, (fpr, tpr) in curves.items():
        fpr = np.asarray(fpr, dtype=np.float64)
        tpr = np.asarray(tpr, dtype=np.float64)
        order = np.argsort(fpr, kind='mergesort')
        fpr, tpr = fpr[order], tpr[order]
        positive = fpr > 0
        if positive.any():
            smallest = min(smallest, float(fpr[positive].min()))
        ax.plot(np.where(positive, fpr, np.nan), tpr, lw=1.5, label=label)
    ax.set_xscale('log')
    ax.set_xlim(max(smallest, 1e-6), 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel('False Accept Rate')
    ax.set_ylabel('True Accept Rate')
    ax.set_title(title)
    ax.grid(True, which='both', ls=':', lw=0.5)
    ax.legend(loc='lower right')
    os.makedirs(osp.dirname(osp.abspath(str(path))), exist_ok=True)
    fig.tight_layout()
    fig.savefig(str(path))
    plt.close(fig)
    return str(path)
