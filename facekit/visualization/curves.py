"""Training curves from ``metrics.jsonl``: loss, learning rate, gradient norm and evaluation metrics
against iteration.

    records = read_records('work_dirs/run/metrics.jsonl')
    series = curve_series(records)              # the numbers the picture shows
    plot_curves(records, 'work_dirs/run/curves.png')

The record format is ``facekit.engine.visualizer``'s: ``mode`` 'train' lines carry the iteration's
scalars, ``mode`` 'val' lines one scalar summary per evaluation target and ``primary_metric``
({target: key}), which decides the evaluation panels unless ``metrics`` names others.
"""
import json
import os

import numpy as np

from .plotting import pyplot, save_figure

__all__ = ['read_records', 'curve_series', 'plot_curves', 'TRAIN_PANELS']

# (record key, y-axis label) of the training panels, top to bottom
TRAIN_PANELS = (('loss', 'loss (nats)'), ('lr', 'learning rate'), ('grad_norm', 'gradient L2 norm\n(before clipping)'))


def read_records(path):
    """The records of a metrics.jsonl, in file order; ValueError naming the file and line of a bad line."""
    records = []
    with open(path, encoding='utf-8') as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f'{path}:{lineno}: not a JSON object ({e.msg}): {line.strip()[:80]!r}') from None
            if not isinstance(rec, dict) or not isinstance(rec.get('iter'), int):
                raise ValueError(f'{path}:{lineno}: a record must be a JSON object with an integer "iter", '
                                 f'got {line.strip()[:80]!r}')
            records.append(rec)
    return records


def _number(value):
    """A record value as float; None (JSON null for NaN/inf) and non-numbers as NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return float('nan')
    return float(value)


def curve_series(records, metrics=None):
    """The series the curves picture draws, from metrics.jsonl records.

    Args:
        records: dicts as ``read_records`` returns them.
        metrics: evaluation summary keys to draw (e.g. ``['accuracy', 'xnorm']``); None = each
            target's ``primary_metric``.
    Returns: dict with
        ``train``: {key: (iterations, values)} float64 arrays for each key of ``TRAIN_PANELS`` the
            records hold (null as NaN);
        ``skipped``: iterations at which the run's skipped-step count rose;
        ``epoch_ends``: iterations after which an epoch ended (where ``epoch`` rises);
        ``val``: {metric key: {target: (iterations, values, stds or None)}}, stds from the summary's
            ``<key>_std`` when present.
    """
    train = [r for r in records if r.get('mode') == 'train']
    evals = [r for r in records if r.get('mode') == 'val']
    out = dict(train={}, skipped=np.zeros(0), epoch_ends=np.zeros(0), val={})
    if train:
        iters = np.array([r['iter'] for r in train], dtype=np.float64)
        for key, _ in TRAIN_PANELS:
            if any(key in r for r in train):
                out['train'][key] = (iters, np.array([_number(r.get(key)) for r in train]))
        skipped = np.array([_number(r.get('skipped_steps')) for r in train])
        rose = np.r_[skipped[0] > 0, np.diff(skipped) > 0] if len(skipped) else np.zeros(0, bool)
        out['skipped'] = iters[rose]
        epochs = np.array([_number(r.get('epoch')) for r in train])
        out['epoch_ends'] = iters[np.r_[False, np.diff(epochs) > 0]] if len(epochs) else np.zeros(0)
    wanted = {}
    for r in evals:
        targets = [t for t, v in r.items() if isinstance(v, dict) and t != 'primary_metric']
        for t in targets:
            keys = metrics if metrics is not None else [(r.get('primary_metric') or {}).get(t)]
            for key in keys:
                if key is not None and key in r[t]:
                    wanted.setdefault(key, {}).setdefault(t, []).append(r)
    for key, by_target in wanted.items():
        out['val'][key] = {}
        for t, recs in by_target.items():
            iters = np.array([r['iter'] for r in recs], dtype=np.float64)
            values = np.array([_number(r[t].get(key)) for r in recs])
            stds = None
            if all(f'{key}_std' in r[t] for r in recs):
                stds = np.array([_number(r[t][f'{key}_std']) for r in recs])
            out['val'][key][t] = (iters, values, stds)
    return out


def _moving_mean(values, window):
    """Mean over the trailing ``window`` finite values (NaN where none), same length as ``values``."""
    finite = np.isfinite(values)
    v = np.where(finite, values, 0.0)
    csum = np.cumsum(np.r_[0.0, v])
    ccount = np.cumsum(np.r_[0, finite.astype(np.int64)])
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - window, 0)
    count = ccount[idx] - ccount[lo]
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(count > 0, (csum[idx] - csum[lo]) / np.maximum(count, 1), np.nan)


def plot_curves(source, path, metrics=None, title=None):
    """Draw the training curves as a PNG; returns ``path``.

    Args:
        source: a metrics.jsonl path or a list of its records.
        path: the .png to write.
        metrics: evaluation summary keys to draw (None: each target's primary metric).
        title: figure title (default: the metrics file's folder name).
    Panels, sharing the iteration axis: loss (each record, and its moving mean when there are more
    than 40 records; x marks steps skipped for non-finite values), learning rate, gradient norm
    (log scale when it spans more than two decades), then one panel per evaluation metric with a
    line per target (a +-std band where the summary has ``<key>_std``). Dotted verticals mark epoch ends.
    """
    if isinstance(source, (str, os.PathLike)):
        records = read_records(source)
        title = title or os.path.basename(os.path.dirname(os.path.abspath(source)))
    else:
        records = list(source)
    s = curve_series(records, metrics)
    panels = [(k, label) for k, label in TRAIN_PANELS
              if k in s['train'] and np.isfinite(s['train'][k][1]).any()]
    panels += [(key, None) for key in s['val']]
    if not panels:
        raise ValueError(f'{source if isinstance(source, (str, os.PathLike)) else "records"}: nothing to plot '
                         '(no training record with a finite value and no evaluation record)')
    plt = pyplot()
    fig, axes = plt.subplots(len(panels), 1, figsize=(7.5, 0.6 + 1.9 * len(panels)), sharex=True, squeeze=False)
    axes = axes[:, 0]
    for ax, (key, label) in zip(axes, panels):
        if label is not None:
            iters, values = s['train'][key]
            if key == 'loss':
                many = len(values) > 40
                ax.plot(iters, values, lw=0.8, alpha=0.4 if many else 1.0, color='C0',
                        label='per record' if many else 'loss')
                if many:
                    window = max(2, len(values) // 40)
                    ax.plot(iters, _moving_mean(values, window), lw=1.8, color='C0',
                            label=f'moving mean ({window} records)')
                if len(s['skipped']):
                    ax.plot(s['skipped'], np.full(len(s['skipped']), 0.03), 'x', color='C3', ms=5,
                            transform=ax.get_xaxis_transform(), label='skipped step (non-finite)')
                ax.legend(loc='upper right', fontsize=8)
            else:
                ax.plot(iters, values, lw=1.2, color='C1' if key == 'lr' else 'C2')
                finite = values[np.isfinite(values) & (values > 0)]
                if key == 'grad_norm' and finite.size and finite.max() > 100 * finite.min():
                    ax.set_yscale('log')
                if key == 'lr':
                    ax.ticklabel_format(axis='y', style='sci', scilimits=(-3, 3))
            ax.set_ylabel(label)
        else:
            for i, (target, (iters, values, stds)) in enumerate(s['val'][key].items()):
                color = f'C{i % 10}'
                ax.plot(iters, values, 'o-', ms=4, lw=1.2, color=color, label=target)
                if stds is not None:
                    ax.fill_between(iters, values - stds, values + stds, color=color, alpha=0.2, lw=0)
            ax.set_ylabel(key)
            ax.set_title(f'evaluation: {key}' + (' (band: +-1 std over folds)' if any(
                v[2] is not None for v in s['val'][key].values()) else ''), fontsize=9)
            ax.legend(loc='best', fontsize=8)
        for x in s['epoch_ends'] if len(s['epoch_ends']) <= 60 else ():
            ax.axvline(x, color='0.75', lw=0.6, ls=':', zorder=0)
        ax.grid(True, ls=':', lw=0.5)
    axes[-1].set_xlabel('iteration' + (' (dotted lines: epoch ends)' if 0 < len(s['epoch_ends']) <= 60 else ''))
    fig.suptitle(title or 'training curves', fontsize=11)
    return save_figure(fig, path)
