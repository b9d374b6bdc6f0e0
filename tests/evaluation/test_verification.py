"""verification_metrics against a plainly written protocol, a hand-worked example and edge cases."""
import math

import numpy as np
import pytest
from scipy.interpolate import BSpline

from facekit.evaluation.verification import (_interp_threshold_at_far, equal_error_rate, kfold_splits,
                                             l2_normalize, roc_auc, verification_metrics)


# ---------------------------------------------------------------- plain reference implementation
def plain_folds(n, k):
    """Contiguous folds: sizes n//k, the first n%k one larger (sklearn KFold, no shuffle)."""
    folds, start = [], 0
    for f in range(k):
        size = n // k + (1 if f < n % k else 0)
        folds.append(list(range(start, start + size)))
        start += size
    return folds


def plain_accuracy(dists, same, t):
    correct = 0
    for d, s in zip(dists, same):
        predicted_same = d < t
        if predicted_same == s:
            correct += 1
    return float(correct) / len(dists)


def plain_protocol(e1, e2, issame, k, thresholds):
    """Python loops over folds, thresholds and pairs; first best threshold wins."""
    n = len(issame)
    dist = [float(np.sum((e1[i].astype(np.float64) - e2[i].astype(np.float64)) ** 2)) for i in range(n)]
    accs, thrs = [], []
    for test in plain_folds(n, k) if k > 1 else [list(range(n))]:
        train = [i for i in range(n) if i not in set(test)] if k > 1 else test
        best_acc, best_t = -1.0, None
        for t in thresholds:
            acc = plain_accuracy([dist[i] for i in train], [bool(issame[i]) for i in train], t)
            if acc > best_acc:  # strict: the first maximum is kept
                best_acc, best_t = acc, t
        accs.append(plain_accuracy([dist[i] for i in test], [bool(issame[i]) for i in test], best_t))
        thrs.append(best_t)
    return np.array(accs), np.array(thrs), np.array(dist)


def plain_val(dist, issame, k, thresholds, far_target):
    """VAL@FAR with scipy's degree-1 B-spline (the legacy interp1d 'slinear') for the threshold."""
    vals, fars = [], []
    for test in plain_folds(len(dist), k):
        train = np.array([i for i in range(len(dist)) if i not in set(test)])
        test = np.array(test)
        d_tr, s_tr = dist[train], issame[train]
        far_train = np.array([np.sum((d_tr < t) & ~s_tr) / np.sum(~s_tr) for t in thresholds])
        if far_train.max() >= far_target:
            spline = BSpline.construct_fast(np.r_[far_train[0], far_train, far_train[-1]],
                                            np.asarray(thresholds, dtype=np.float64), 1)
            thr = float(spline(far_target))
        else:
            thr = 0.0
        d_te, s_te = dist[test], issame[test]
        vals.append(np.sum((d_te < thr) & s_te) / np.sum(s_te))
        fars.append(np.sum((d_te < thr) & ~s_te) / np.sum(~s_te))
    return np.mean(vals), np.std(vals), np.mean(fars)


def random_pairs(n, dim, seed, noise=0.8):
    rng = np.random.default_rng(seed)
    issame = rng.random(n) < 0.5
    a = rng.normal(size=(n, dim))
    b = np.where(issame[:, None], a + noise * rng.normal(size=(n, dim)), rng.normal(size=(n, dim)))
    return l2_normalize(a.astype(np.float32)), l2_normalize(b.astype(np.float32)), issame


# ------------------------------------------------------------------------------------- tests
def test_kfold_sizes_match_sklearn_rule():
    splits = kfold_splits(23, 10)
    assert [len(te) for _, te in splits] == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    assert [te.tolist() for _, te in splits] == plain_folds(23, 10)
    for train, test in splits:
        assert sorted(train.tolist() + test.tolist()) == list(range(23))
    (train, test), = kfold_splits(5, 1)
    assert train.tolist() == test.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match='larger than the number of pairs'):
        kfold_splits(3, 10)


@pytest.mark.parametrize('n,seed', [(317, 0), (120, 1), (61, 2)])
def test_matches_plain_protocol_exactly(n, seed):
    e1, e2, issame = random_pairs(n, 16, seed)
    thresholds = np.arange(0, 4, 0.01)
    accs, thrs, _ = plain_protocol(e1, e2, issame, 10, thresholds)
    r = verification_metrics(e1, e2, issame, nfolds=10)
    assert r['fold_accuracies'] == accs.tolist()
    assert r['fold_thresholds'] == thrs.tolist()
    assert r['accuracy'] == np.mean(accs)
    assert r['accuracy_std'] == np.std(accs)
    assert r['best_threshold'] == np.mean(thrs)
    assert 0.5 < r['accuracy'] < 1.0  # a non-trivial case: the threshold choice matters


def test_val_far_matches_spline_reference():
    e1, e2, issame = random_pairs(400, 8, 3, noise=1.0)
    _, _, dist = plain_protocol(e1, e2, issame, 10, [0.0])
    thresholds = np.arange(0, 4, 0.001)
    for far_target in (1e-3, 0.05, 0.2):
        val, val_std, far = plain_val(dist, issame, 10, thresholds, far_target)
        r = verification_metrics(e1, e2, issame, far_target=far_target)
        assert r['val'] == pytest.approx(val, abs=1e-12)
        assert r['val_std'] == pytest.approx(val_std, abs=1e-12)
        assert r['far'] == pytest.approx(far, abs=1e-12)
    # a target that a larger FAR does reach gives a positive VAL in this separable-ish set
    assert verification_metrics(e1, e2, issame, far_target=0.2)['val'] > 0.2


def test_threshold_interpolation_equals_scipy_linear_bspline():
    rng = np.random.default_rng(7)
    for trial in range(500):
        n = int(rng.integers(3, 25))
        far = np.sort(rng.integers(0, 5, n) / 4.0) if trial % 2 else np.sort(rng.random(n).round(2))
        far[0] = 0.0
        thr = np.arange(n) * 0.01
        for z in list(np.unique(far)) + list(rng.random(2) * far.max()):
            expected = float(BSpline.construct_fast(np.r_[far[0], far, far[-1]], thr, 1)(z))
            assert _interp_threshold_at_far(far, thr, z) == pytest.approx(expected, abs=1e-12)


def test_hand_worked_example_with_ties_and_first_max():
    # 1-d embeddings against 0: squared distances 0.04, 0.25, 1.0 | 0.25, 0.64, 1.44 (0.25 and 1.0 exact)
    e1 = np.array([[0.2], [0.5], [1.0], [0.5], [0.8], [1.2]])
    e2 = np.zeros_like(e1)
    issame = np.array([True, False, True, True, False, False])
    thresholds = [0.0, 0.25, 0.5, 1.0, 1.5]
    # fold 0 (pairs 0-2) trains on pairs 3-5: accuracies 2/3 2/3 1 2/3 1/3 -> t=0.5;
    #   on pairs 0-2 at 0.5: 0.04 same (right), 0.25 same (wrong), 1.0 not same (wrong) -> 1/3.
    # fold 1 trains on pairs 0-2: 1/3 2/3 1/3 1/3 2/3 -> first maximum t=0.25 (not 1.5);
    #   on pairs 3-5 at 0.25: 0.25 is not < 0.25 (wrong), 0.64 and 1.44 right -> 2/3
    #   (t=1.5 would have scored 1/3).
    r = verification_metrics(e1, e2, issame, nfolds=2, thresholds=thresholds, far_target=0.5,
                             val_thresholds=thresholds)
    assert r['fold_thresholds'] == [0.5, 0.25]
    assert r['fold_accuracies'] == [1 / 3, 2 / 3]
    assert r['accuracy'] == pytest.approx(0.5)
    assert r['accuracy_std'] == pytest.approx(1 / 6)
    assert r['best_threshold'] == pytest.approx(0.375)
    # AUC: genuine distances 0.04, 0.25, 1.0 vs impostor 0.25, 0.64, 1.44 -> (3 + 2.5 + 1) / 9
    assert r['auc'] == pytest.approx(6.5 / 9)
    # exact ROC: (0,0) (0,1/3) (1/3,2/3) ... ; FAR = FRR = 1/3 at the tie of 0.25
    assert r['eer'] == pytest.approx(1 / 3)
    # VAL@FAR=0.5 on fold 0: train FAR (pairs 3-5, two impostors) over the thresholds is
    # 0, 0, 0, .5, 1 -> first FAR above .5 is at index 4: interpolate between (.5, 1.0) and (1, 1.5)
    # -> threshold 1.0; test pairs 0-2 at 1.0: genuine 0.04 accepted, 1.0 not -> VAL 1/2, FAR 1 (0.25 < 1.0).
    # fold 1: train (pairs 0-2, one impostor at 0.25): FAR 0, 0, 1, 1, 1 -> between (0, .25) and (1, .5)
    # -> threshold 0.375; test pairs 3-5: genuine 0.25 accepted -> VAL 1, impostors rejected -> FAR 0.
    assert r['val'] == pytest.approx(0.75)
    assert r['val_std'] == pytest.approx(0.25)
    assert r['far'] == pytest.approx(0.5)


def test_all_same_and_all_different():
    rng = np.random.default_rng(5)
    e1 = l2_normalize(rng.normal(size=(40, 4)).astype(np.float32))
    e2 = l2_normalize(rng.normal(size=(40, 4)).astype(np.float32))
    thresholds = np.arange(0, 4, 0.01)
    for flag in (True, False):
        issame = np.full(40, flag)
        accs, thrs, _ = plain_protocol(e1, e2, issame, 10, thresholds)
        r = verification_metrics(e1, e2, issame)
        assert r['fold_accuracies'] == accs.tolist()
        assert r['fold_thresholds'] == thrs.tolist()
        assert math.isnan(r['auc']) and math.isnan(r['eer'])
        assert math.isnan(r['val'])  # VAL or FAR has no denominator with one class
        if not flag:
            assert r['fold_thresholds'] == [0.0] * 10 and r['accuracy'] == 1.0


def test_identical_embeddings_distance_zero_tie():
    # every distance is exactly 0.0 = the first threshold; 0 < 0 is false, so t=0 rejects all
    e = l2_normalize(np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32))
    issame = np.array([True, False] * 10)
    r = verification_metrics(e, e.copy(), issame, nfolds=2)
    accs, thrs, _ = plain_protocol(e, e.copy(), issame, 2, np.arange(0, 4, 0.01))
    assert r['fold_accuracies'] == accs.tolist() == [0.5, 0.5]
    assert r['fold_thresholds'] == [0.0, 0.0]
    assert r['auc'] == 0.5 and r['eer'] == 0.5


def test_perfect_separation():
    e1, e2, issame = random_pairs(200, 8, 9, noise=0.05)
    r = verification_metrics(e1, e2, issame)
    assert r['accuracy'] == 1.0 and r['accuracy_std'] == 0.0
    assert r['auc'] == 1.0 and r['eer'] == 0.0


def test_auc_eer_helpers_by_hand():
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    labels = np.array([True, False, True, False])
    assert roc_auc(scores, labels) == pytest.approx(0.75)  # 3 of 4 genuine/impostor orderings right
    # ROC (0,0) (0,.5) (.5,.5) (.5,1) (1,1): FAR == FRR = 0.5 on the flat segment's end
    assert equal_error_rate(scores, labels) == pytest.approx(0.5)


def test_roc_grid_is_fold_mean_of_test_rates():
    e1, e2, issame = random_pairs(100, 8, 11)
    r = verification_metrics(e1, e2, issame, nfolds=5)
    _, _, dist = plain_protocol(e1, e2, issame, 5, [0.0])
    t_index = 150  # threshold 1.5
    tprs, fprs = [], []
    for test in plain_folds(100, 5):
        d, s = dist[test], issame[test]
        tprs.append(np.sum((d < 1.5) & s) / np.sum(s))
        fprs.append(np.sum((d < 1.5) & ~s) / np.sum(~s))
    assert r['tpr'][t_index] == pytest.approx(np.mean(tprs), abs=1e-12)
    assert r['fpr'][t_index] == pytest.approx(np.mean(fprs), abs=1e-12)
    assert r['fpr'][0] == 0.0 and len(r['tpr']) == 400


def test_shape_errors_are_specific():
    with pytest.raises(ValueError, match=r'equal shapes'):
        verification_metrics(np.zeros((4, 3)), np.zeros((4, 2)), np.ones(4, bool))
    with pytest.raises(ValueError, match='issame has shape'):
        verification_metrics(np.zeros((4, 3)), np.zeros((4, 3)), np.ones(5, bool), nfolds=2)
