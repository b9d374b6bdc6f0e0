"""The 10-fold pair-verification protocol (lfw, cfp_fp, agedb_30, calfw, cplfw ...).

Pure NumPy: nothing here knows about models or images. The protocol is the one behind the
reference tables (insightface ``eval/verification.py``):

- distance: squared Euclidean between L2-normalized embeddings, in [0, 4];
- a pair is predicted "same" when ``dist < threshold`` (strict);
- thresholds ``np.arange(0, 4, 0.01)``;
- folds: KFold without shuffle, contiguous blocks, the first ``n % k`` folds one pair longer;
- per fold: the threshold with the best accuracy on the other ``k-1`` folds (the first one on
  ties, as ``np.argmax``) scores the held-out fold; accuracy = (TP + TN) / pairs in the fold;
- reported: mean and population std (``np.std``, ddof 0) of the ``k`` fold accuracies;
- VAL@FAR: thresholds ``np.arange(0, 4, 0.001)``; per fold the threshold where the training
  folds' FAR equals the target is found by piecewise-linear interpolation of threshold over
  FAR (scipy's old ``interp1d(kind='slinear')`` semantics, see ``_interp_threshold_at_far``),
  or 0.0 when no threshold reaches the target; VAL and FAR are then measured on the held-out fold.

AUC and EER are extras that the insightface script does not report; they are computed
exactly from all pair distances (no folds, no threshold grid).
"""
import numpy as np

__all__ = ['kfold_splits', 'pair_distances', 'counts_below', 'verification_metrics',
           'exact_roc', 'roc_auc', 'equal_error_rate', 'l2_normalize', 'DEFAULT_THRESHOLDS',
           'VAL_THRESHOLDS']

DEFAULT_THRESHOLDS = np.arange(0, 4, 0.01)
VAL_THRESHOLDS = np.arange(0, 4, 0.001)


def l2_normalize(x, eps=1e-12):
    """Row-wise x / ||x||, by hand (no ops.L2Normalize). (N, E) -> (N, E), same dtype.

    A zero row stays zero (its norm is clamped at ``eps``), as sklearn.preprocessing.normalize does.
    """
    x = np.asarray(x)
    norms = np.sqrt(np.sum(np.square(x, dtype=np.float64), axis=1, keepdims=True))
    return (x / np.maximum(norms, eps)).astype(x.dtype, copy=False)


def kfold_splits(n, nfolds):
    """Contiguous folds without shuffle, as sklearn ``KFold(n_splits=nfolds, shuffle=False)``.

    Returns a list of ``(train_idx, test_idx)`` int arrays. Fold sizes are ``n // nfolds``, the
    first ``n % nfolds`` folds one larger. ``nfolds == 1`` trains and tests on everything (the
    reference's ``LFold`` fallback).
    """
    n, nfolds = int(n), int(nfolds)
    if nfolds < 1:
        raise ValueError(f'nfolds must be >= 1, got {nfolds}')
    indices = np.arange(n)
    if nfolds == 1:
        return [(indices, indices)]
    if nfolds > n:
        raise ValueError(f'nfolds={nfolds} is larger than the number of pairs ({n})')
    sizes = np.full(nfolds, n // nfolds, dtype=np.int64)
    sizes[:n % nfolds] += 1
    splits, start = [], 0
    for size in sizes:
        stop = start + int(size)
        test = indices[start:stop]
        train = np.concatenate([indices[:start], indices[stop:]])
        splits.append((train, test))
        start = stop
    return splits


def pair_distances(emb1, emb2, chunk=4096):
    """Squared Euclidean distance per pair, computed in float64. (N, E), (N, E) -> (N,) float64.

    Works in chunks so float32 inputs are never copied to float64 as a whole.
    """
    emb1, emb2 = np.asarray(emb1), np.asarray(emb2)
    if emb1.shape != emb2.shape or emb1.ndim != 2:
        raise ValueError(f'emb1 and emb2 must both be (N, E) with equal shapes; got {emb1.shape} and {emb2.shape}')
    out = np.empty(emb1.shape[0], dtype=np.float64)
    for s in range(0, emb1.shape[0], chunk):
        d = emb1[s:s + chunk].astype(np.float64) - emb2[s:s + chunk].astype(np.float64)
        out[s:s + chunk] = np.sum(np.square(d), axis=1)
    return out


def counts_below(dist, issame, thresholds):
    """For each threshold t: TP, FP, TN, FN of the rule "same if dist < t". Integer arrays (T,).

    Exact counting by binary search over sorted distances (the count of d < t is
    ``searchsorted(sorted_d, t, side='left')``), so equal to an explicit loop over pairs.
    """
    dist = np.asarray(dist, dtype=np.float64)
    issame = np.asarray(issame, dtype=bool)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    pos = np.sort(dist[issame])
    neg = np.sort(dist[~issame])
    tp = np.searchsorted(pos, thresholds, side='left')
    fp = np.searchsorted(neg, thresholds, side='left')
    fn = pos.size - tp
    tn = neg.size - fp
    return tp, fp, tn, fn


def _accuracy(tp, tn, n):
    """(TP + TN) / n as float64, the reference's ``float(tp + tn) / dist.size``."""
    return (tp + tn).astype(np.float64) / float(n)


def _rate(num, den):
    """num / den with 0 where den == 0 (the reference's tpr/fpr convention for the ROC grid)."""
    num = np.asarray(num, dtype=np.float64)
    if den == 0:
        return np.zeros_like(num)
    return num / float(den)


def _interp_threshold_at_far(far, thresholds, target):
    """Threshold where a non-decreasing FAR curve reaches ``target``, by linear interpolation.

    Reproduces scipy's legacy ``interp1d(far, thresholds, kind='slinear')(target)`` (a
    degree-1 B-spline with knots ``[far[0], far..., far[-1]]``) that the reference relies on;
    current scipy refuses the duplicated FAR values, so the rule is written out here:
    take the first index ``p >= 1`` with ``far[p] > target`` (or the last index when none) and
    interpolate between points ``p-1`` and ``p``. When ``target`` equals a run of equal FAR
    values this gives the threshold of the run's last point; a zero-length segment gives 0.0
    (the B-spline basis vanishes there).
    """
    far = np.asarray(far, dtype=np.float64)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    n = far.size
    if n < 2:
        raise ValueError('need at least two thresholds to interpolate')
    above = np.nonzero(far[1:] > target)[0]
    p = int(above[0]) + 1 if above.size else n - 1
    x0, x1 = far[p - 1], far[p]
    if x1 == x0:
        return 0.0
    w = (target - x0) / (x1 - x0)
    return float(thresholds[p - 1] * (1.0 - w) + thresholds[p] * w)


def _val_far(dist, issame, threshold):
    """VAL (TAR) and FAR of "same if dist < threshold"; NaN where the pair set lacks that class."""
    predict = dist < threshold
    n_same = int(np.sum(issame))
    n_diff = int(np.sum(~issame))
    ta = int(np.sum(predict & issame))
    fa = int(np.sum(predict & ~issame))
    val = ta / n_same if n_same else float('nan')
    far = fa / n_diff if n_diff else float('nan')
    return val, far


def exact_roc(scores, labels):
    """ROC over every distinct score: (fpr, tpr) arrays starting at (0, 0) and ending at (1, 1).

    ``scores``: (N,) higher means "more likely same"; ``labels``: (N,) bool. Tied scores move
    together (a diagonal step), so no operating point splits a tie. Needs both classes.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f'an ROC needs both classes; got {n_pos} positive and {n_neg} negative pairs')
    order = np.argsort(-scores, kind='mergesort')
    s, y = scores[order], labels[order]
    last_of_run = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tps = np.cumsum(y)[last_of_run]
    fps = (last_of_run + 1) - tps
    fpr = np.r_[0.0, fps / n_neg]
    tpr = np.r_[0.0, tps / n_pos]
    return fpr, tpr


def roc_auc(scores, labels):
    """Area under the ROC = P(score of a random positive > a random negative) + 0.5 P(tie)."""
    fpr, tpr = exact_roc(scores, labels)
    return float(np.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2.0))


def equal_error_rate(scores, labels):
    """The FAR where FAR == FRR (1 - TAR) on the piecewise-linear exact ROC."""
    fpr, tpr = exact_roc(scores, labels)
    g = fpr + tpr - 1.0  # FAR - FRR: -1 at (0,0), +1 at (1,1), non-decreasing
    i = int(np.nonzero(g >= 0)[0][0])
    if g[i] == 0 or i == 0:
        return float(fpr[i])
    w = -g[i - 1] / (g[i] - g[i - 1])
    return float(fpr[i - 1] + w * (fpr[i] - fpr[i - 1]))


def verification_metrics(emb1, emb2, issame, nfolds=10, thresholds=None, far_target=1e-3,
                         val_thresholds=None):
    """Run the 10-fold verification protocol on pair embeddings.

    Args:
        emb1, emb2: (N, E) float embeddings of the two images of each pair, already
            L2-normalized by the caller (flip-summed first when flip test is on).
        issame: (N,) bool, True for a genuine (same identity) pair.
        nfolds: number of contiguous folds (10 in the reference protocol).
        thresholds: distance thresholds for the accuracy scan; default ``np.arange(0, 4, 0.01)``.
        far_target: the FAR of the reported VAL (TAR); default 1e-3.
        val_thresholds: thresholds for VAL@FAR; default ``np.arange(0, 4, 0.001)``.
    Returns: dict with
        ``accuracy`` (mean of fold accuracies), ``accuracy_std`` (population std),
        ``fold_accuracies`` (list), ``best_threshold`` (mean of the per-fold thresholds),
        ``fold_thresholds`` (list), ``val``/``val_std``/``far`` (VAL@far_target over folds,
        NaN where a fold lacks genuine or impostor pairs), ``auc``/``eer`` (exact, all pairs;
        NaN with one class only), ``tpr``/``fpr`` (fold-averaged ROC on the threshold grid,
        lists of length T), ``thresholds`` (list), ``num_pairs``, ``nfolds``.
    """
    issame = np.asarray(issame, dtype=bool)
    dist = pair_distances(emb1, emb2)
    if issame.shape != dist.shape:
        raise ValueError(f'issame has shape {issame.shape} but there are {dist.shape[0]} pairs')
    thresholds = DEFAULT_THRESHOLDS if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    val_thresholds = VAL_THRESHOLDS if val_thresholds is None else np.asarray(val_thresholds, dtype=np.float64)
    splits = kfold_splits(dist.size, nfolds)

    fold_acc = np.zeros(len(splits))
    fold_thr = np.zeros(len(splits))
    tprs = np.zeros((len(splits), thresholds.size))
    fprs = np.zeros((len(splits), thresholds.size))
    vals = np.zeros(len(splits))
    fars = np.zeros(len(splits))
    for k, (train, test) in enumerate(splits):
        tp, _, tn, _ = counts_below(dist[train], issame[train], thresholds)
        best = int(np.argmax(_accuracy(tp, tn, train.size)))
        fold_thr[k] = thresholds[best]

        tp, fp, tn, fn = counts_below(dist[test], issame[test], thresholds)
        tprs[k] = _rate(tp, int(tp[0] + fn[0]))
        fprs[k] = _rate(fp, int(fp[0] + tn[0]))
        fold_acc[k] = _accuracy(tp[best:best + 1], tn[best:best + 1], test.size)[0]

        vals[k], fars[k] = _fold_val(dist, issame, train, test, val_thresholds, far_target)

    both_classes = issame.any() and (~issame).any()
    scores = -dist
    return dict(
        accuracy=float(np.mean(fold_acc)),
        accuracy_std=float(np.std(fold_acc)),
        fold_accuracies=fold_acc.tolist(),
        best_threshold=float(np.mean(fold_thr)),
        fold_thresholds=fold_thr.tolist(),
        val=float(np.mean(vals)),
        val_std=float(np.std(vals)),
        far=float(np.mean(fars)),
        far_target=float(far_target),
        auc=roc_auc(scores, issame) if both_classes else float('nan'),
        eer=equal_error_rate(scores, issame) if both_classes else float('nan'),
        tpr=np.mean(tprs, 0).tolist(),
        fpr=np.mean(fprs, 0).tolist(),
        thresholds=thresholds.tolist(),
        num_pairs=int(dist.size),
        nfolds=int(nfolds),
    )


def _fold_val(dist, issame, train, test, thresholds, far_target):
    """VAL and FAR on ``test`` at the threshold where the ``train`` FAR reaches ``far_target``."""
    n_diff = int(np.sum(~issame[train]))
    if n_diff == 0:
        return float('nan'), float('nan')
    _, fp, _, _ = counts_below(dist[train], issame[train], thresholds)
    far_train = fp / float(n_diff)
    if np.max(far_train) >= far_target:
        threshold = _interp_threshold_at_far(far_train, thresholds, far_target)
    else:
        threshold = 0.0
    return _val_far(dist[test], issame[test], threshold)
