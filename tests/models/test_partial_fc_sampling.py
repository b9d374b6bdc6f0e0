"""PartialFC at sample rate < 1: the loss over exactly the kept classes, and what "sampled" means.

The kept class set is read back from what the head returns: each returned cosine column equals
one column of the NumPy cosine matrix against all centres, which names the class (random centres
in 8 dimensions: columns of different classes differ by far more than float error).
"""
import json
import math
import os
import socket
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

import facekit  # noqa: F401
from facekit.models.heads import PartialFCHead
from facekit.registry import LOSSES

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from dist_partial_fc_sampling_worker import HeadLossOutputs, problem  # noqa: E402
import dist_partial_fc_sampling_worker as worker  # noqa: E402
from required import msrun_path  # noqa: E402

S, M = 64.0, 0.5


def np_cosine(emb, weight):
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    w = weight / np.linalg.norm(weight, axis=1, keepdims=True)
    return np.clip(e @ w.T, -1, 1)


def np_arcface_loss(cos, targets):
    """Mean ArcFace cross-entropy of (B, K) cosines, (B,) target columns, worked in float64.

    Target logit s*cos(theta + m) = s*(c cos m - sqrt(1 - c^2) sin m), and the reference fallback
    s*(c - m sin m) where c <= cos(pi - m).
    """
    cos = cos.astype(np.float64)
    rows = np.arange(len(targets))
    c = np.clip(cos[rows, targets], -1 + 1e-7, 1 - 1e-7)
    phi = np.where(c > math.cos(math.pi - M), c * math.cos(M) - np.sqrt(1 - c * c) * math.sin(M),
                   c - M * math.sin(M))
    logits = S * cos
    logits[rows, targets] = S * phi
    top = logits.max(axis=1)
    lse = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
    return float(np.mean(lse - logits[rows, targets]))


def kept_classes(cosine, full, start=0):
    """Global ids of the returned cosine columns (B, k), identified against the NumPy (B, C_local) cosines."""
    diff = np.abs(cosine[:, :, None] - full[:, None, :]).max(axis=0)   # (k, C_local)
    ids = diff.argmin(axis=1)
    best = diff[np.arange(len(ids)), ids]
    assert best.max() < 1e-5, f'a returned column matches no class centre (closest {best.max():.3g})'
    second = np.sort(diff, axis=1)[:, 1]
    assert second.min() > 1e-3, 'two centres are too alike to tell the kept set apart'
    return ids + start


def test_loss_is_the_softmax_over_exactly_the_kept_classes():
    C, E = 40, 8
    rng = np.random.RandomState(0)
    weight = rng.randn(C, E).astype(np.float32)
    emb = rng.randn(6, E).astype(np.float32)
    labels = np.array([3, 17, 17, 22, 39, 0], np.int32)
    head = PartialFCHead(embedding_size=E, num_classes=C, sample_rate=0.25)
    head.weight.set_data(Tensor(weight))
    net = HeadLossOutputs(head, LOSSES.build(dict(type='ArcFaceLoss', s=S, m=M)))
    full = np_cosine(emb, weight)
    seen = set()
    for _ in range(3):
        loss, cosine, local = (t.asnumpy() for t in net(Tensor(emb), Tensor(labels)))
        kept = kept_classes(cosine, full)
        assert cosine.shape == (6, 10) and len(set(kept)) == 10          # int(0.25 * 40) distinct classes
        assert list(kept) == sorted(kept)
        np.testing.assert_array_equal(kept[local], labels)                # labels remapped into the kept set
        np.testing.assert_allclose(cosine, full[:, kept], atol=1e-6)
        expected = np_arcface_loss(full[:, kept], np.searchsorted(kept, labels))
        assert float(loss) == pytest.approx(expected, rel=2e-5)
        # ... and not the full softmax: leaving out 30 classes changes the loss.
        assert abs(np_arcface_loss(full, labels) - expected) > 1e-3
        seen.add(tuple(kept))
    assert len(seen) > 1


def test_sampling_statistics_over_many_steps():
    """Positives always kept; each negative kept at rate 6/36; the kept set changes between steps.

    40 classes, rate 0.25 -> 10 kept; 4 positives -> 6 of the 36 negatives per step, so each
    negative's count over N = 200 steps is Binomial(200, 1/6): mean 33.3, sd 5.27. The bound
    |count - mean| <= 5 sd (26.4) fails for a uniform sampler with probability < 36 * 6e-7 (two-sided
    normal tail at 5 sd per class, union over classes). Sampling 'the first 6 negatives' gives
    counts 200 and 0. Two consecutive uniform draws are identical with probability 1/C(36,6) ~ 5e-7.
    """
    C, E, N = 40, 8, 200
    rng = np.random.RandomState(1)
    weight = rng.randn(C, E).astype(np.float32)
    emb = rng.randn(4, E).astype(np.float32)
    labels = np.array([5, 12, 30, 31], np.int32)
    head = PartialFCHead(embedding_size=E, num_classes=C, sample_rate=0.25)
    head.weight.set_data(Tensor(weight))
    full = np_cosine(emb, weight)
    counts = np.zeros(C, int)
    previous, changes = None, 0
    for _ in range(N):
        cosine, _ = head(Tensor(emb), Tensor(labels))
        kept = kept_classes(cosine.asnumpy(), full)
        counts[kept] += 1
        if previous is not None and set(kept) != previous:
            changes += 1
        previous = set(kept)
    negatives = np.setdiff1d(np.arange(C), labels)
    assert (counts[labels] == N).all(), f'positives dropped: {counts[labels]}'
    assert counts[negatives].sum() == 6 * N
    mean, sd = N * 6 / 36, math.sqrt(N * (1 / 6) * (5 / 6))
    far = negatives[np.abs(counts[negatives] - mean) > 5 * sd]
    assert far.size == 0, f'negatives kept far from {mean:.0f}/{N} steps: {dict(zip(far, counts[far]))}'
    assert changes == N - 1


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_at_rate_half_equal_numpy_over_the_union_of_kept_classes(tmp_path):
    """2 msrun workers, 40 classes, rate 0.5: each rank keeps 10 of its 20 centres; both ranks' loss is
    the NumPy ArcFace softmax over the 20 kept classes of both ranks (global batch of 4)."""
    msrun = msrun_path()
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', ''),
               PYTHONPATH=os.path.dirname(os.path.dirname(HERE)) + os.pathsep + os.environ.get('PYTHONPATH', ''))
    cmd = [msrun, '--worker_num=2', '--local_worker_num=2', f'--master_port={_free_port()}', '--join=True',
           f'--log_dir={tmp_path / "logs"}', '--cluster_time_out=60',
           os.path.join(HERE, 'dist_partial_fc_sampling_worker.py'), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=240)
    if proc.returncode != 0:
        logs = ''.join(open(tmp_path / 'logs' / f).read()[-3000:] for f in os.listdir(tmp_path / 'logs'))
        pytest.fail(f'msrun failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{logs}')
    ranks = [json.load(open(tmp_path / f'rank{r}.json')) for r in range(2)]
    assert all(r['distributed'] and r['world'] == 2 for r in ranks)
    assert [(r['start'], r['num_local']) for r in ranks] == [(0, 20), (20, 20)]

    weight, emb, labels = problem()
    full = np_cosine(emb, weight)
    kept = []
    for r in ranks:
        cosine, local = np.array(r['cosine']), np.array(r['local'])
        ids = kept_classes(cosine, full[:, r['start']:r['start'] + r['num_local']], r['start'])
        assert cosine.shape == (2 * worker.B, 10) and len(set(ids)) == 10     # sampled: 10 of 20
        mine = (labels >= r['start']) & (labels < r['start'] + r['num_local'])
        np.testing.assert_array_equal(ids[local[mine]], labels[mine])        # own positives kept and remapped
        assert (local[~mine] == -1).all()
        kept.append(ids)
    union = np.concatenate(kept)
    assert len(set(union)) == 20
    union.sort()
    expected = np_arcface_loss(full[:, union], np.searchsorted(union, labels))
    for r in ranks:
        assert r['loss'] == pytest.approx(expected, rel=2e-5)
