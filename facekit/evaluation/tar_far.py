"""TAR at fixed FAR over all pair scores (IJB-B / IJB-C style), and template aggregation.

Pure NumPy. The convention is the one of the IJB tables (insightface ``eval_ijbc.py``):

- the ROC is sklearn's ``roc_curve(labels, scores)`` with its defaults: one point per distinct
  score (tied scores move together), a point dropped when its steps to both neighbours are equal
  (``drop_intermediate=True``), and a first point (0, 0) prepended;
- TAR at FAR f is the TPR of the ROC point whose FPR is closest to f (``|fpr - f|`` minimal).
  The reference reverses the ROC (``np.flipud``, "select largest tpr at same fpr") before taking
  the first minimum, so on equal distances the *last* point in ROC order wins: at an FPR shared
  by a vertical run the run's top (largest TPR), and between two equally close FPRs the larger;
- a FAR below ``1 / num_impostors`` cannot be measured on this pair set: it reports ``'n/a'``.

Templates (IJB): every image feature is a flip-summed embedding; features of the same media
(video) inside a template are averaged, the media features summed and the sum L2-normalized.
Pair score = cosine similarity of the two template features, in float64 as the reference's
(float32 scores would tie pairs that the reference tells apart among 15 million).
"""
import numpy as np

__all__ = ['roc_curve', 'tar_at_far', 'aggregate_templates', 'template_pair_scores',
           'DEFAULT_FARS', 'NOT_AVAILABLE']

DEFAULT_FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
NOT_AVAILABLE = 'n/a'


def roc_curve(scores, labels, drop_intermediate=True):
    """ROC of "same if score >= t" over all distinct scores, as sklearn's ``roc_curve``.

    Args:
        scores: (N,) similarity, higher = more likely genuine.
        labels: (N,) bool or 0/1, True for genuine pairs.
        drop_intermediate: drop a point whose step from the previous point equals its step to
            the next one (equal second differences, sklearn's default).
    Returns: ``fpr, tpr, thresholds`` float64 arrays; the first point is (0, 0) at threshold +inf.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    if scores.shape != labels.shape:
        raise ValueError(f'scores and labels differ in length: {scores.size} vs {labels.size}')
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f'an ROC needs both classes; got {n_pos} genuine and {n_neg} impostor pairs')
    if not np.all(np.isfinite(scores)):
        raise ValueError('scores contain NaN or inf')
    order = np.argsort(scores, kind='mergesort')[::-1]
    s, y = scores[order], labels[order]
    last_of_run = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tps = np.cumsum(y, dtype=np.int64)[last_of_run]
    fps = (last_of_run + 1) - tps
    thr = s[last_of_run]
    if drop_intermediate and fps.size > 2:
        keep = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
        fps, tps, thr = fps[keep], tps[keep], thr[keep]
    fps = np.r_[0, fps]
    tps = np.r_[0, tps]
    thr = np.r_[np.inf, thr]
    return fps / float(n_neg), tps / float(n_pos), thr


def tar_at_far(scores, labels, fars=DEFAULT_FARS):
    """TAR at each FAR by the closest-FPR rule of the IJB tables.

    Args:
        scores: (N,) similarity, higher = more likely genuine.
        labels: (N,) bool, True for genuine pairs.
        fars: FAR targets.
    Returns: dict ``{far: tar}`` in the order of ``fars``; ``tar`` is a float in [0, 1], or
    ``'n/a'`` when ``far < 1 / num_impostors`` (the pair set has too few impostors to measure it).
    """
    fpr, tpr, _ = roc_curve(scores, labels)
    last = fpr.size - 1
    n_neg = int(np.sum(~np.asarray(labels).astype(bool)))
    out = {}
    for far in fars:
        far = float(far)
        if n_neg == 0 or far < 1.0 / n_neg:
            out[far] = NOT_AVAILABLE
            continue
        # the reference's min() over (diff, index) of the reversed ROC: the last of equal distances
        out[far] = float(tpr[last - int(np.argmin(np.abs(fpr[::-1] - far)))])
    return out


def aggregate_templates(features, templates, medias, normalize_images=False, weights=None, chunk_rows=65536):
    """Template features from image features (IJB protocol, the reference's ``image2template_feature``).

    Args:
        features: (N, E) per-image features (flip-summed raw embeddings), any float dtype; read in
            chunks of rows, so a float32 (470k, 512) array is not copied whole to float64.
        templates: (N,) template id of each image.
        medias: (N,) media (photo or video) id of each image.
        normalize_images: L2-normalize each image feature first (drops the norm as quality cue;
            the IJB reference keeps it, ``use_norm_score=True``).
        weights: optional (N,) per-image weight (detector face score), applied after normalization.
        chunk_rows: about this many image rows are converted to float64 at a time.
    Returns: ``(template_features (T, E) float64 L2-normalized, unique_templates (T,) sorted)``;
    images of one media in a template are averaged, the media features of a template summed, the
    sum L2-normalized.
    """
    features = np.asarray(features)
    templates = np.asarray(templates)
    medias = np.asarray(medias)
    if features.ndim != 2 or not (features.shape[0] == templates.shape[0] == medias.shape[0]):
        raise ValueError(f'features {features.shape}, templates ({templates.shape[0]}) and medias '
                         f'({medias.shape[0]}) must have one row per image')
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64).ravel()
        if weights.shape[0] != features.shape[0]:
            raise ValueError(f'weights ({weights.shape[0]}) must have one entry per image ({features.shape[0]})')
    unique_templates, t_index = np.unique(templates, return_inverse=True)
    # (template, media) groups, sorted by template then media id; images sorted by group
    tm = np.stack([t_index.ravel(), np.unique(medias, return_inverse=True)[1].ravel()], axis=1)
    groups, g_index, g_count = np.unique(tm, axis=0, return_inverse=True, return_counts=True)
    order = np.argsort(g_index.ravel(), kind='stable')
    starts = np.r_[0, np.cumsum(g_count)[:-1]]
    media_mean = np.zeros((groups.shape[0], features.shape[1]), dtype=np.float64)
    k0 = 0
    while k0 < groups.shape[0]:
        # whole groups, about chunk_rows images (at least one group)
        k1 = max(k0 + 1, int(np.searchsorted(starts, starts[k0] + chunk_rows, side='right')))
        k1 = min(k1, groups.shape[0])
        lo, hi = starts[k0], starts[k1 - 1] + g_count[k1 - 1]
        rows = order[lo:hi]
        f = features[rows].astype(np.float64)
        if normalize_images:
            f /= np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
        if weights is not None:
            f *= weights[rows][:, None]
        media_mean[k0:k1] = _sum_runs(f, starts[k0:k1] - lo, g_count[k0:k1]) / g_count[k0:k1, None]
        k0 = k1
    # media groups are sorted by template: each template's media form one run
    _, t_start, t_count = np.unique(groups[:, 0], return_index=True, return_counts=True)
    out = _sum_runs(media_mean, t_start, t_count)
    norms = np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out / norms, unique_templates


def _sum_runs(values, starts, counts):
    """Row sums of consecutive runs ``values[starts[k]:starts[k] + counts[k]]``, added first row to
    last (the reference's order); one vectorized step per position in the longest run
    (``np.add.reduceat`` over 2-D rows measured 16 s per 100k images)."""
    out = values[starts]  # fancy indexing: a new array
    for j in range(1, int(counts.max())):
        more = np.flatnonzero(counts > j)
        out[more] += values[starts[more] + j]
    return out


def template_pair_scores(template_features, unique_templates, t1, t2, chunk=16384):
    """Cosine score of each template pair. (T, E) normalized features; t1, t2 (P,) ids -> (P,) float64."""
    ids = np.asarray(unique_templates)
    sort = np.argsort(ids, kind='stable')
    sorted_ids = ids[sort]
    index = []
    for column in (np.asarray(t1), np.asarray(t2)):
        pos = np.clip(np.searchsorted(sorted_ids, column), 0, sorted_ids.size - 1)
        unknown = np.flatnonzero(sorted_ids[pos] != column)
        if unknown.size:
            raise KeyError(f'template {column[unknown[0]].item()!r} of the pair list has no image in the face list')
        index.append(sort[pos])
    i1, i2 = index
    scores = np.empty(i1.size, dtype=np.float64)
    for s in range(0, i1.size, chunk):
        scores[s:s + chunk] = np.einsum('ij,ij->i', template_features[i1[s:s + chunk]],
                                        template_features[i2[s:s + chunk]])
    return scores
