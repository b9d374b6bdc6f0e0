"""Evaluation pictures for the test report: genuine vs impostor score histograms with the decision
threshold, and the distribution of raw embedding norms (XNorm).

Both are histograms over shared bins; ``histogram_series`` computes exactly what is drawn.
"""
import numpy as np

from .plotting import pyplot, save_figure

__all__ = ['histogram_series', 'plot_score_histogram', 'plot_norm_histograms']


def histogram_series(groups, bins=60, value_range=None):
    """Counts of each group over one set of bins.

    Args:
        groups: {label: 1-D values}; non-finite values are left out.
        bins: number of equal-width bins.
        value_range: (low, high) of the bins; default the smallest and largest finite value of all
            groups (widened by 0.5 each way when they are equal).
    Returns: ``(edges (bins+1,) float64, {label: counts (bins,) int64})``; values equal to ``high``
    fall into the last bin (``np.histogram``'s rule).
    """
    arrays = {k: np.asarray(v, dtype=np.float64).ravel() for k, v in groups.items()}
    arrays = {k: v[np.isfinite(v)] for k, v in arrays.items()}
    if value_range is None:
        nonempty = [v for v in arrays.values() if v.size]
        if not nonempty:
            raise ValueError('histogram_series: no finite value in any group')
        low = min(float(v.min()) for v in nonempty)
        high = max(float(v.max()) for v in nonempty)
        if low == high:
            low, high = low - 0.5, high + 0.5
    else:
        low, high = (float(x) for x in value_range)
    edges = np.linspace(low, high, int(bins) + 1)
    return edges, {k: np.histogram(v, edges)[0] for k, v in arrays.items()}


def plot_score_histogram(genuine, impostor, threshold, path, title='', xlabel='score',
                         rule='same if score < threshold', threshold_range=None, bins=60, value_range=None):
    """Histogram of genuine and impostor pair scores with the decision threshold; returns ``path``.

    Args:
        genuine, impostor: 1-D scores of same-identity and different-identity pairs.
        threshold: the chosen threshold (a dashed vertical line, its value in the legend).
        path: the .png to write.
        title: figure title (the target's name).
        xlabel: what the score is, with its unit or range.
        rule: how the threshold decides, shown in the legend (e.g. 'same if distance < threshold').
        threshold_range: optional (low, high) shaded behind the line, e.g. the spread of the
            per-fold thresholds.
        bins, value_range: as ``histogram_series``.
    """
    edges, counts = histogram_series({'genuine': genuine, 'impostor': impostor}, bins, value_range)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    width = np.diff(edges)
    n_gen, n_imp = int(counts['genuine'].sum()), int(counts['impostor'].sum())
    ax.bar(edges[:-1], counts['genuine'], width=width, align='edge', color='C2', alpha=0.55,
           label=f'genuine pairs (n={n_gen})')
    ax.bar(edges[:-1], counts['impostor'], width=width, align='edge', color='C3', alpha=0.55,
           label=f'impostor pairs (n={n_imp})')
    if threshold_range is not None and threshold_range[1] > threshold_range[0]:
        ax.axvspan(threshold_range[0], threshold_range[1], color='0.6', alpha=0.25, lw=0,
                   label=f'fold thresholds {threshold_range[0]:.2f}-{threshold_range[1]:.2f}')
    ax.axvline(threshold, color='k', ls='--', lw=1.4, label=f'threshold {threshold:.3f} ({rule})')
    ax.set_xlabel(xlabel)
    ax.set_ylabel('pairs per bin')
    ax.set_title(title)
    ax.grid(True, ls=':', lw=0.5)
    # headroom above the tallest bar, so the legend covers no bar
    ax.set_ylim(0, 1.75 * max(1, int(counts['genuine'].max()), int(counts['impostor'].max())))
    ax.legend(loc='upper center', fontsize=8)
    return save_figure(fig, path)


def plot_norm_histograms(norms, path, title='raw embedding norms of every image and its mirror (XNorm = mean)',
                         bins=60):
    """Distribution of raw embedding L2 norms per target, each mean (XNorm) marked; returns ``path``.

    Args:
        norms: {target: 1-D norms of the raw (un-normalized) embeddings}.
        path: the .png to write.
    """
    edges, counts = histogram_series(norms, bins)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for i, (name, c) in enumerate(counts.items()):
        color = f'C{i % 10}'
        values = np.asarray(norms[name], dtype=np.float64)
        mean = float(np.mean(values[np.isfinite(values)]))
        ax.stairs(c, edges, color=color, lw=1.4, label=f'{name}: XNorm {mean:.3f} (n={int(c.sum())})')
        ax.axvline(mean, color=color, ls='--', lw=1.0)
    ax.set_xlabel('L2 norm of the raw embedding (before normalization)')
    ax.set_ylabel('embeddings per bin')
    ax.set_title(title, fontsize=10)
    ax.grid(True, ls=':', lw=0.5)
    ax.legend(loc='upper right', fontsize=8)
    return save_figure(fig, path)
