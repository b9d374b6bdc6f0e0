"""Results as text tables (terminaltables), JSON files and ROC plots (matplotlib, Agg backend)."""
import json
import math
import os
import os.path as osp

import numpy as np

__all__ = ['format_mean_std', 'format_value', 'verification_table', 'tar_far_table', 'to_jsonable',
           'write_json', 'plot_roc', 'summary_only']

# keys holding per-threshold curves: kept in memory and for plots, left out of tables
CURVE_KEYS = ('tpr', 'fpr', 'thresholds')


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


def _table(rows, title=None):
    from terminaltables import AsciiTable
    table = AsciiTable(rows, title)
    table.inner_row_border = False
    return table.table


def verification_table(results, title='verification (10-fold)'):
    """One row per target of ``{name: VerificationEvaluator result}``; returns the table as text.

    Columns: Accuracy-Flip (mean+-std, the reference table's number), Accuracy (no flip),
    best threshold (mean over folds), XNorm, VAL@FAR, AUC, EER.
    """
    header = ['target', 'Accuracy-Flip', 'Accuracy', 'threshold', 'XNorm', 'VAL@FAR', 'AUC', 'EER']
    rows = [header]
    for name, r in results.items():
        flip = format_mean_std(r['accuracy'], r['accuracy_std']) if r.get('flip', True) else 'n/a'
        noflip = format_mean_std(r['accuracy_noflip'], r['accuracy_noflip_std'])
        val = f"{format_mean_std(r['val'], r['val_std'])} @ {r['far']:.5f}"
        rows.append([name, flip, noflip, format_value(r['best_threshold'], 3), format_value(r['xnorm'], 3),
                     val, format_value(r['auc']), format_value(r['eer'])])
    return _table(rows, title)


def tar_far_table(results, title='TAR @ FAR'):
    """One row per target of ``{name: {'tar_at_far': {far: tar}}}``; TAR in percent as the IJB tables."""
    fars = []
    for r in results.values():
        for far in r['tar_at_far']:
            if float(far) not in fars:
                fars.append(float(far))
    fars.sort()
    rows = [['target'] + [f'{f:.0e}' for f in fars]]
    for name, r in results.items():
        by_far = {float(k): v for k, v in r['tar_at_far'].items()}
        cells = []
        for f in fars:
            v = by_far.get(f, 'n/a')
            cells.append(v if isinstance(v, str) else f'{100.0 * v:.2f}')
        rows.append([name] + cells)
    return _table(rows, title)


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
    """A result dict without its per-threshold curves (for logs and compact JSON)."""
    return {k: v for k, v in result.items() if k not in CURVE_KEYS}


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
