"""TAR@FAR (IJB closest-FPR convention, largest TPR among equally close points) and template
aggregation on hand-made inputs."""
import numpy as np
import pytest

from facekit.evaluation.tar_far import (NOT_AVAILABLE, aggregate_templates, roc_curve, tar_at_far,
                                        template_pair_scores)


def plain_roc(scores, labels):
    """Distinct thresholds high to low, a point dropped when its two steps are equal, (0,0) first."""
    pts = []
    n_pos, n_neg = sum(labels), len(labels) - sum(labels)
    for t in sorted(set(scores), reverse=True):
        tp = sum(1 for s, y in zip(scores, labels) if s >= t and y)
        fp = sum(1 for s, y in zip(scores, labels) if s >= t and not y)
        pts.append((fp, tp))
    kept = [pts[0]]
    for i in range(1, len(pts) - 1):
        step_in = (pts[i][0] - pts[i - 1][0], pts[i][1] - pts[i - 1][1])
        step_out = (pts[i + 1][0] - pts[i][0], pts[i + 1][1] - pts[i][1])
        if step_in != step_out:
            kept.append(pts[i])
    if len(pts) > 1:
        kept.append(pts[-1])
    kept = [(0, 0)] + kept
    return [fp / n_neg for fp, _ in kept], [tp / n_pos for _, tp in kept]


def plain_tar(scores, labels, far):
    fpr, tpr = plain_roc(scores, labels)
    fpr, tpr = fpr[::-1], tpr[::-1]  # the IJB scripts' np.flipud: "select largest tpr at same fpr"
    best = min((abs(f - far), i) for i, f in enumerate(fpr))  # (distance, index): first of the reversed ROC
    return tpr[best[1]]


# genuine: 0.9, 0.8 (tied with an impostor), 0.7, 0.4; impostors: 0.8, 0.6, 0.5, 0.3
SCORES = np.array([0.9, 0.8, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
LABELS = np.array([1, 0, 1, 1, 0, 0, 1, 0], dtype=bool)


def test_roc_by_hand_with_tie_and_dropped_point():
    fpr, tpr, thr = roc_curve(SCORES, LABELS)
    # thresholds 0.9 (0,1/4), 0.8 tie -> diagonal (1/4,2/4), 0.7 (1/4,3/4),
    # 0.6 (2/4,3/4) dropped (same step as 0.5's), 0.5 (3/4,3/4), 0.4 (3/4,1), 0.3 (1,1)
    assert fpr.tolist() == [0, 0, .25, .25, .75, .75, 1]
    assert tpr.tolist() == [0, .25, .5, .75, .75, 1, 1]
    assert thr[0] == np.inf and thr[1:].tolist() == [0.9, 0.8, 0.7, 0.5, 0.4, 0.3]
    full_fpr, _, _ = roc_curve(SCORES, LABELS, drop_intermediate=False)
    assert full_fpr.tolist() == [0, 0, .25, .25, .5, .75, .75, 1]


def test_tar_at_far_by_hand():
    out = tar_at_far(SCORES, LABELS, fars=(0.1, 0.25, 0.5, 0.7, 1.0))
    assert list(out) == [0.1, 0.25, 0.5, 0.7, 1.0]
    assert out[0.1] == NOT_AVAILABLE       # 0.1 < 1/4 impostors
    assert out[0.25] == 0.75               # fpr .25 at two points: the last (threshold 0.7, larger TPR)
    assert out[0.5] == 1.0                 # .25 and .75 equally close: the last of them, (.75, 1); 0.6 was dropped
    assert out[0.7] == 1.0                 # fpr .75 at two points: the larger TPR
    assert out[1.0] == 1.0


@pytest.mark.parametrize('seed', [0, 1, 2, 3])
def test_tar_at_far_matches_plain_version_with_many_ties(seed):
    rng = np.random.default_rng(seed)
    n = 300
    labels = rng.random(n) < 0.3
    # coarse scores: many ties inside and across classes
    scores = np.round(rng.normal(size=n) + 1.0 * labels, 1)
    fars = (1e-3, 1e-2, 0.02, 0.05, 0.1, 0.3)
    out = tar_at_far(scores, labels, fars)
    n_neg = int((~labels).sum())
    for far in fars:
        if far < 1.0 / n_neg:
            assert out[far] == NOT_AVAILABLE
        else:
            assert out[far] == plain_tar(scores.tolist(), labels.tolist(), far)
    fpr, tpr = plain_roc(scores.tolist(), labels.tolist())
    got_fpr, got_tpr, _ = roc_curve(scores, labels)
    assert got_fpr.tolist() == pytest.approx(fpr) and got_tpr.tolist() == pytest.approx(tpr)


def test_few_impostors_report_na_not_a_number():
    scores = np.array([0.9, 0.1, 0.8, 0.7])
    labels = np.array([True, False, True, True])
    out = tar_at_far(scores, labels, fars=(1e-6, 1e-1, 0.99, 1.0))
    assert out[1e-6] == out[1e-1] == out[0.99] == NOT_AVAILABLE
    assert out[1.0] == 1.0


def test_roc_needs_both_classes():
    with pytest.raises(ValueError, match='both classes'):
        roc_curve([0.1, 0.2], [True, True])


def test_template_media_averaging_by_hand():
    feats = np.array([[1., 0.], [0., 1.], [2., 0.],   # template A: media m1 (2 images), m2
                      [0., 3.],                        # template B
                      [3., 4.], [3., 4.]])             # template C: media m1 twice -> mean = itself
    templates = np.array([10, 10, 10, 20, 30, 30])
    medias = np.array([1, 1, 2, 1, 1, 1])
    tf, ids = aggregate_templates(feats, templates, medias)
    assert ids.tolist() == [10, 20, 30]
    a = np.array([0.5, 0.5]) + np.array([2., 0.])     # media mean + media
    np.testing.assert_allclose(tf[0], a / np.linalg.norm(a), rtol=1e-6)
    np.testing.assert_allclose(tf[1], [0, 1], rtol=1e-6)
    np.testing.assert_allclose(tf[2], [0.6, 0.8], rtol=1e-6)
    s = template_pair_scores(tf, ids, [10, 20], [30, 30])
    np.testing.assert_allclose(s, [(2.5 * 0.6 + 0.5 * 0.8) / np.linalg.norm(a), 0.8], rtol=1e-6)
    # per-image normalization removes the norm as a weight: A becomes (0.5,0.5) + (1,0)
    tf_n, _ = aggregate_templates(feats, templates, medias, normalize_images=True)
    b = np.array([1.5, 0.5])
    np.testing.assert_allclose(tf_n[0], b / np.linalg.norm(b), rtol=1e-6)
    with pytest.raises(KeyError, match='template 99'):
        template_pair_scores(tf, ids, [99], [10])


@pytest.mark.parametrize('chunk_rows', [1, 3, 7, 10 ** 6])
def test_template_aggregation_matches_plain_loop_for_any_chunking(chunk_rows):
    """Runs of up to 9 frames per media and up to 5 media per template, in shuffled row order."""
    rng = np.random.default_rng(0)
    rows = [(t, m) for t in range(12) for m in range(int(rng.integers(1, 6))) for _ in range(int(rng.integers(1, 10)))]
    rows = [rows[k] for k in rng.permutation(len(rows))]
    templates = np.array([100 + 7 * t for t, _ in rows])
    medias = np.array([1000 * t + m for t, m in rows])
    feats = rng.normal(size=(len(rows), 5)).astype(np.float32)
    weights = rng.uniform(0.1, 1.0, len(rows))
    got, ids = aggregate_templates(feats, templates, medias, normalize_images=True, weights=weights,
                                   chunk_rows=chunk_rows)
    assert ids.tolist() == sorted(set(templates.tolist()))
    for k, tid in enumerate(ids):
        total = np.zeros(5)
        for mid in sorted(set(medias[templates == tid].tolist())):
            sel = (templates == tid) & (medias == mid)
            f = feats[sel].astype(np.float64)
            f = f / np.linalg.norm(f, axis=1, keepdims=True) * weights[sel][:, None]
            total += f.mean(axis=0)
        np.testing.assert_allclose(got[k], total / np.linalg.norm(total), rtol=1e-12, atol=1e-12)
