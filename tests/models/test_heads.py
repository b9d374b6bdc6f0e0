"""Heads: normalized FC, sub-centre, softmax, and PartialFC (sampling, sharding, equality with the full softmax)."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

import facekit  # noqa: F401
from facekit.models.heads import PartialFCHead, shard_range
from facekit.models.losses.cross_entropy import row_max, sum_exp, target_logit
from facekit.registry import HEADS, LOSSES


def np_normalize(x):
    return x / np.sqrt((x * x).sum(axis=1, keepdims=True))


def test_norm_fc_head_is_clamped_cosine():
    head = HEADS.build(dict(type='NormFCHead', embedding_size=8, num_classes=5))
    emb = np.random.RandomState(0).randn(4, 8).astype(np.float32)
    labels = np.array([0, 4, 2, 2], np.int32)
    cos, out_labels = head(Tensor(emb), Tensor(labels))
    w = head.weight.asnumpy()
    np.testing.assert_allclose(cos.asnumpy(), np_normalize(emb) @ np_normalize(w).T, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out_labels.asnumpy(), labels)
    # identical directions give exactly 1 after the clamp, not 1 + rounding
    same, _ = head(Tensor(w[:2] * 3.0), Tensor(labels[:2]))
    assert same.asnumpy().max() <= 1.0
    assert np.diag(same.asnumpy()[:, :2]) == pytest.approx([1.0, 1.0], abs=1e-6)


def test_subcenter_takes_best_of_k_centres():
    head = HEADS.build(dict(type='SubCenterArcFace', embedding_size=6, num_classes=4, k=3))
    emb = np.random.RandomState(1).randn(5, 6).astype(np.float32)
    cos, _ = head(Tensor(emb), Tensor(np.zeros(5, np.int32)))
    full = np_normalize(emb) @ np_normalize(head.weight.asnumpy()).T  # (5, 12)
    np.testing.assert_allclose(cos.asnumpy(), full.reshape(5, 4, 3).max(axis=2), rtol=1e-5, atol=1e-6)


def test_softmax_head_is_affine():
    head = HEADS.build(dict(type='SoftmaxHead', embedding_size=6, num_classes=3))
    emb = np.random.RandomState(2).randn(4, 6).astype(np.float32)
    logits, _ = head(Tensor(emb), Tensor(np.zeros(4, np.int32)))
    expected = emb @ head.fc.weight.asnumpy().T + head.fc.bias.asnumpy()
    np.testing.assert_allclose(logits.asnumpy(), expected, rtol=1e-5, atol=1e-6)


def test_shard_range_splits_classes_like_the_reference():
    # num_local = C // W + (rank < C % W), consecutive ranges covering all classes
    ranges = [shard_range(10, r, 4) for r in range(4)]
    assert ranges == [(0, 3), (3, 3), (6, 2), (8, 2)]
    with pytest.raises(ValueError, match='rank 4'):
        shard_range(10, 4, 4)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_partial_fc_sampled_set_contains_every_positive(seed):
    ms.set_seed(seed)
    rng = np.random.RandomState(seed)
    head = PartialFCHead(embedding_size=4, num_classes=200, sample_rate=0.3, rank=1, world_size=2)
    assert (head.class_start, head.num_local, head.num_sample) == (100, 100, 30)
    labels = rng.randint(0, 200, size=16).astype(np.int32)
    local, valid = head.local_labels(Tensor(labels))
    index, remapped = head.sample(local, valid)
    index, remapped = index.asnumpy(), remapped.asnumpy()
    assert index.shape == (30,)                       # int(0.3 * 100): the positives (<= 16) fit
    assert np.all(np.diff(index) > 0)                 # sorted, distinct
    own = (labels >= 100) & (labels < 200)
    assert set(labels[own] - 100) <= set(index.tolist())
    np.testing.assert_array_equal(index[remapped[own]], labels[own] - 100)  # labels remapped into the set
    assert np.all(remapped[~own] == -1)


def test_partial_fc_grows_the_set_when_positives_would_not_fit():
    head = PartialFCHead(embedding_size=4, num_classes=20, sample_rate=0.25)
    labels = np.arange(12, dtype=np.int32)            # 12 distinct positives > int(0.25 * 20) = 5
    local, valid = head.local_labels(Tensor(labels))
    index, remapped = head.sample(local, valid)
    assert index.shape == (12,)
    np.testing.assert_array_equal(index.asnumpy()[remapped.asnumpy()], labels)


def _copy_weight(dst, src_rows):
    dst.weight.set_data(Tensor(src_rows.astype(np.float32)))


def test_partial_fc_rate_one_equals_norm_fc_plus_ce():
    rng = np.random.RandomState(3)
    emb = Tensor(rng.randn(6, 8).astype(np.float32))
    labels = Tensor(np.array([0, 9, 4, 4, 1, 9], np.int32))
    full = HEADS.build(dict(type='NormFCHead', embedding_size=8, num_classes=10))
    pfc = HEADS.build(dict(type='PartialFCHead', embedding_size=8, num_classes=10, sample_rate=1.0))
    _copy_weight(pfc, full.weight.asnumpy())
    loss = LOSSES.build(dict(type='ArcFaceLoss'))
    a = float(loss(*full(emb, labels)).asnumpy())
    b = float(loss(*pfc(emb, labels)).asnumpy())
    assert b == pytest.approx(a, abs=1e-5)


@pytest.mark.parametrize('loss_type', ['ArcFaceLoss', 'CosFaceLoss'])
def test_two_simulated_ranks_equal_single_rank(loss_type):
    rng = np.random.RandomState(4)
    C, E = 11, 8                                        # 11 classes: shards of 6 and 5
    emb = Tensor(rng.randn(8, E).astype(np.float32))    # the already-gathered global batch
    labels = Tensor(np.array([0, 10, 5, 6, 3, 7, 10, 1], np.int32))
    single = PartialFCHead(embedding_size=E, num_classes=C, sample_rate=1.0)
    w = single.weight.asnumpy()
    loss = LOSSES.build(dict(type=loss_type))
    expected = float(loss(*single(emb, labels)).asnumpy())

    pieces = []
    for rank in range(2):
        head = PartialFCHead(embedding_size=E, num_classes=C, sample_rate=1.0, rank=rank, world_size=2)
        _copy_weight(head, w[head.class_start:head.class_start + head.num_local])
        cos, local = head(emb, labels)
        pieces.append((loss.margin_logits(cos, local), local))
    shift = np.maximum(*[row_max(z).asnumpy() for z, _ in pieces])      # all-reduce MAX
    total = sum(sum_exp(z, Tensor(shift)).asnumpy() for z, _ in pieces)  # all-reduce SUM
    target = sum(target_logit(z, y).asnumpy() for z, y in pieces)       # all-reduce SUM
    combined = float(np.mean(np.log(total) + shift - target))
    assert combined == pytest.approx(expected, abs=1e-5)


def test_sampled_logits_are_columns_of_the_full_cosine_matrix():
    ms.set_seed(5)
    rng = np.random.RandomState(5)
    emb = rng.randn(6, 8).astype(np.float32)
    labels = np.array([2, 17, 30, 2, 39, 11], np.int32)
    head = PartialFCHead(embedding_size=8, num_classes=40, sample_rate=0.25)
    cos, remapped = head(Tensor(emb), Tensor(labels))
    cos, remapped = cos.asnumpy(), remapped.asnumpy()
    full = np.clip(np_normalize(emb) @ np_normalize(head.weight.asnumpy()).T, -1, 1)
    assert cos.shape == (6, 10)
    # each kept column is one distinct class centre's column; the target columns are the labels'
    match = [int(np.argmin(np.abs(full - cos[:, [j]]).sum(0))) for j in range(10)]
    np.testing.assert_allclose(cos, full[:, match], atol=1e-5)
    assert len(set(match)) == 10
    np.testing.assert_array_equal(np.array(match)[remapped], labels)


def test_gradient_reaches_only_sampled_rows():
    ms.set_seed(6)
    head = PartialFCHead(embedding_size=8, num_classes=50, sample_rate=0.2)
    loss = LOSSES.build(dict(type='ArcFaceLoss'))
    emb = Tensor(np.random.RandomState(6).randn(4, 8).astype(np.float32))
    labels = np.array([3, 3, 41, 17], np.int32)

    def forward(e, y):
        return loss(*head(e, y))

    grads = ms.grad(forward, grad_position=None, weights=head.weight)(emb, Tensor(labels)).asnumpy()
    touched = np.flatnonzero(np.abs(grads).sum(axis=1) > 0)
    assert len(touched) == 10                          # int(0.2 * 50)
    assert {3, 41, 17} <= set(touched.tolist())


@pytest.fixture
def dist_state():
    """Set facekit.utils.dist's rank/world for one test, restored afterwards."""
    from facekit.utils import dist
    old = (dist.get_rank(), dist.get_world_size())
    yield dist.set_dist_state
    dist.set_dist_state(*old)


@pytest.mark.parametrize('cfg', [dict(type='NormFCHead'), dict(type='SubCenterArcFace', k=2),
                                 dict(type='SoftmaxHead'), dict(type='PartialFCHead')])
def test_unsharded_heads_keep_the_base_defaults(cfg):
    from facekit.models.heads import BaseHead
    from facekit.models.losses import SoftmaxCrossEntropy
    head = HEADS.build(dict(cfg, embedding_size=4, num_classes=5))
    assert isinstance(head, BaseHead)
    assert (head.embedding_size, head.num_classes) == (4, 5)
    assert head.is_sharded is False
    assert head.shard_slice() == (0, 5)
    # PartialFC names its centre weight even on one rank: a checkpoint written by several ranks
    # re-assembles into it when the run resumes on one
    per_class = ('weight',) if cfg['type'] == 'PartialFCHead' else ()
    assert tuple(head.sharded_param_names()) == per_class
    ce = head.cross_entropy_cell()
    assert isinstance(ce, SoftmaxCrossEntropy) and not ce.distributed
    x = Tensor(np.arange(6, dtype=np.float32).reshape(3, 2))
    np.testing.assert_array_equal(head.gather_rows(x).asnumpy(), x.asnumpy())
    local, valid = head.local_labels(Tensor(np.array([0, 4, 5, -1], np.int32)))
    np.testing.assert_array_equal(local.asnumpy(), [0, 4, -1, -1])
    np.testing.assert_array_equal(valid.asnumpy(), [True, True, False, False])
    assert not any(p.layerwise_parallel for p in head.get_parameters())


def test_partial_fc_shard_api_names_the_rows_it_holds():
    heads = [PartialFCHead(embedding_size=4, num_classes=11, rank=r, world_size=2) for r in range(2)]
    assert [h.shard_slice() for h in heads] == [(0, 6), (6, 5)]
    for h in heads:
        start, n = h.shard_slice()
        assert h.is_sharded and tuple(h.sharded_param_names()) == ('weight',)
        assert h.weight.shape == (n, 4)
        # its own rows differ per rank: data-parallel gradient averaging must skip them
        assert h.weight.layerwise_parallel
        assert h.parameters_dict()['weight'] is h.weight   # the name the checkpoint code resolves
        local, _ = h.local_labels(Tensor(np.array([0, 5, 6, 10], np.int32)))
        np.testing.assert_array_equal(local.asnumpy(), [g - start if start <= g < start + n else -1
                                                        for g in (0, 5, 6, 10)])


def test_partial_fc_reads_rank_and_world_from_utils_dist(dist_state):
    dist_state(1, 2)
    head = PartialFCHead(embedding_size=4, num_classes=11)
    assert (head.rank, head.world_size, head.shard_slice(), head.distributed) == (1, 2, (6, 5), True)
    assert head.cross_entropy_cell().distributed
    explicit = PartialFCHead(embedding_size=4, num_classes=11, rank=0, world_size=2)
    assert explicit.shard_slice() == (0, 6)
    with pytest.raises(ValueError, match='world_size=3'):
        PartialFCHead(embedding_size=4, num_classes=11, world_size=3)
    dist_state(0, 1)
    simulated = PartialFCHead(embedding_size=4, num_classes=11, rank=1, world_size=2)
    assert simulated.is_sharded and not simulated.distributed
