"""VerificationEvaluator / TarFarEvaluator with NumPy embed functions: decoding, normalization,
flip combination, XNorm, batching, sharding, and the registry."""
import os.path as osp
import threading

import cv2
import numpy as np
import pytest

from facekit.datasets.verification_bin import save_bin
from facekit.evaluation import (DistInfo, TarFarEvaluator, VerificationEvaluator,
                                batch_plan, verification_metrics, xnorm)
from facekit.registry import EVALUATORS


def encode(img_rgb):
    ok, buf = cv2.imencode('.png', cv2.cvtColor(img_rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def make_images(n, seed):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(112, 112, 3), dtype=np.uint8) for _ in range(n)]


W = np.random.default_rng(123).normal(size=(3 * 112 * 112, 6)).astype(np.float32)


def linear_embed(batch):
    """Not mirror-symmetric, so flip test changes the result; batch-size independent."""
    assert batch.dtype == np.float32 and batch.shape[1:] == (3, 112, 112)
    return batch.reshape(batch.shape[0], -1) @ W


@pytest.fixture()
def bin_file(tmp_path):
    images = make_images(2 * 23, 0)
    issame = np.random.default_rng(1).random(23) < 0.5
    path = str(tmp_path / 'tiny.bin')
    save_bin(path, [encode(im) for im in images], issame)
    return path, images, issame


def test_batch_plan_constant_shape_and_coverage():
    plan = batch_plan(10, 4)
    assert plan == [(0, 4, 0), (4, 8, 4), (6, 10, 8)]
    assert batch_plan(3, 8) == [(0, 3, 0)]
    covered = [i for start, stop, keep in batch_plan(103, 16) for i in range(keep, stop)]
    assert covered == list(range(103))


def test_embeddings_flip_sum_and_xnorm_by_hand(bin_file):
    path, images, issame = bin_file
    ev = VerificationEvaluator(bin_path=path, nfolds=5, batch_size=8)
    assert ev.name == 'tiny'
    raw, raw_flip = ev.embed(linear_embed)
    # by hand: RGB, CHW, (x/255-0.5)/0.5, mirrored along the width for the flip
    x = np.stack(images).astype(np.float32).transpose(0, 3, 1, 2)
    x = (x / 255.0 - 0.5) / 0.5
    np.testing.assert_allclose(raw, linear_embed(x), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(raw_flip, linear_embed(np.ascontiguousarray(x[..., ::-1])), rtol=1e-5, atol=1e-3)
    assert raw.dtype == np.float32 and raw_flip.dtype == np.float32

    result = ev.evaluate(linear_embed)
    summed = raw.astype(np.float64) + raw_flip
    emb = summed / np.linalg.norm(summed, axis=1, keepdims=True)
    expected = verification_metrics(emb[0::2], emb[1::2], issame, nfolds=5)
    assert result['fold_accuracies'] == expected['fold_accuracies']
    plain = raw / np.linalg.norm(raw.astype(np.float64), axis=1, keepdims=True)
    expected_noflip = verification_metrics(plain[0::2], plain[1::2], issame, nfolds=5)
    assert result['accuracy_noflip'] == expected_noflip['accuracy']
    # XNorm: mean over the 2N original and 2N mirrored raw embeddings, each on its own
    norms = np.r_[np.linalg.norm(raw, axis=1), np.linalg.norm(raw_flip, axis=1)]
    assert result['xnorm'] == pytest.approx(norms.mean(), rel=1e-6)
    assert result['num_images'] == 46 and result['name'] == 'tiny'


def test_no_flip_uses_plain_embeddings(bin_file):
    path, _, issame = bin_file
    ev = VerificationEvaluator(bin_path=path, nfolds=5, flip=False, batch_size=64)
    raw, raw_flip = ev.embed(linear_embed)
    assert raw_flip is None
    r = ev.evaluate(linear_embed)
    assert r['accuracy'] == r['accuracy_noflip']
    assert r['xnorm'] == pytest.approx(xnorm(raw))


def test_batch_size_does_not_change_results(bin_file):
    path, _, _ = bin_file
    a = VerificationEvaluator(bin_path=path, nfolds=5, batch_size=5).evaluate(linear_embed)
    b = VerificationEvaluator(bin_path=path, nfolds=5, batch_size=64).evaluate(linear_embed)
    assert a['fold_accuracies'] == b['fold_accuracies']
    assert a['xnorm'] == pytest.approx(b['xnorm'], rel=1e-6)


def _run_ranks(world, fn):
    """Run fn(dist) in `world` threads whose all_reduce_sum meets at a barrier."""
    barrier = threading.Barrier(world)
    slots = [None] * world
    results = [None] * world
    errors = []

    def make_dist(rank):
        def all_reduce_sum(x):
            slots[rank] = np.array(x, dtype=np.float32)
            barrier.wait()
            total = np.sum(np.stack(slots), axis=0, dtype=np.float32)
            barrier.wait()
            return total
        return DistInfo(rank, world, all_reduce_sum)

    def worker(rank):
        try:
            results[rank] = fn(make_dist(rank))
        except Exception as e:  # surface thread failures in the test
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


@pytest.mark.parametrize('world,batch', [(2, 8), (3, 16), (4, 64)])
def test_sharded_embedding_is_identical_to_single_process(bin_file, world, batch):
    path, _, _ = bin_file
    ev = VerificationEvaluator(bin_path=path, nfolds=5, batch_size=batch)
    single = ev.embed(linear_embed)
    calls = []

    def counting_embed(x):
        calls.append(x.shape[0])
        return linear_embed(x)

    per_rank = _run_ranks(world, lambda d: ev.embed(counting_embed, dist=d))
    for raw, raw_flip in per_rank:  # every rank ends with the full, bit-identical arrays
        assert np.array_equal(raw, single[0]) and np.array_equal(raw_flip, single[1])
    assert len(calls) == 2 * len(batch_plan(46, batch))  # each batch embedded once over all ranks


def test_dataset_source_and_registry():
    from facekit.datasets import SyntheticIdentities
    ds = SyntheticIdentities(num_classes=6, images_per_class=3, seed=0, identity_offset=1000)
    ev = EVALUATORS.build(dict(type='VerificationEvaluator', dataset=ds, num_pairs=20, nfolds=2,
                               name='synthetic', batch_size=16))
    r = ev.evaluate(linear_embed)
    assert r['num_pairs'] == 20 and r['name'] == 'synthetic' and len(r['fold_accuracies']) == 2
    assert 'VerificationEvaluator' in EVALUATORS and 'TarFarEvaluator' in EVALUATORS


def test_missing_bin_and_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.bin'):
        VerificationEvaluator(bin_path=str(tmp_path / 'nope.bin')).load()
    with pytest.raises(ValueError, match='exactly one of bin_path= or dataset='):
        VerificationEvaluator()


def test_cell_with_extract_is_used():
    import mindspore as ms
    from mindspore import nn, ops

    class Toy(nn.Cell):
        def __init__(self):
            super().__init__()
            self.w = ms.Parameter(ms.Tensor(W))

        def construct(self, img, label):
            return ops.reduce_sum(self.extract(img))

        def extract(self, img):
            return ops.matmul(img.reshape(img.shape[0], -1), self.w)

    from facekit.evaluation import as_embed_fn, inference_mode
    x = (np.random.default_rng(0).random((2, 3, 112, 112)).astype(np.float32) - 0.5) * 2
    toy = Toy()
    toy.set_train(True)
    with inference_mode(toy):
        assert not toy.training
        np.testing.assert_allclose(as_embed_fn(toy)(x), linear_embed(x), rtol=1e-4, atol=1e-3)
    assert toy.training  # evaluation during training leaves the model in training mode


def _write_image(root, rel, img):
    path = osp.join(root, rel)
    cv2.imwrite(path, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


def test_tar_far_evaluator_pairs_and_templates(tmp_path):
    images = make_images(6, 3)
    for i, im in enumerate(images):
        _write_image(str(tmp_path), f'{i}.png', im)
    (tmp_path / 'pairs.txt').write_text('0.png 1.png 1\n2.png 3.png 0\n0.png 4.png 0\n1.png 5.png 1\n')
    ev = TarFarEvaluator(pair_list=str(tmp_path / 'pairs.txt'), image_root=str(tmp_path), name='toy',
                         fars=(0.1, 0.5, 1.0), batch_size=4)
    r = ev.evaluate(linear_embed)
    assert r['num_genuine'] == 2 and r['num_impostors'] == 2 and r['num_images'] == 6
    assert r['tar_at_far'][0.1] == 'n/a'
    # scores by hand: cosine of the normalized flip-summed embeddings
    x = (np.stack(images).astype(np.float32).transpose(0, 3, 1, 2) / 255.0 - 0.5) / 0.5
    f = linear_embed(x) + linear_embed(np.ascontiguousarray(x[..., ::-1]))
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    s = [f[0] @ f[1], f[2] @ f[3], f[0] @ f[4], f[1] @ f[5]]
    auc = np.mean([float(g > i) + 0.5 * float(g == i) for g in (s[0], s[3]) for i in (s[1], s[2])])
    assert r['auc'] == pytest.approx(auc)

    (tmp_path / 'faces.txt').write_text('0.png 1 1\n1.png 1 2\n2.png 2 1\n3.png 2 1\n4.png 3 1\n5.png 3 1\n')
    (tmp_path / 'tpairs.txt').write_text('1 2 1\n1 3 0\n2 3 0\n')
    ev = TarFarEvaluator(face_list=str(tmp_path / 'faces.txt'), template_pairs=str(tmp_path / 'tpairs.txt'),
                         image_root=str(tmp_path), fars=(0.5, 1.0), batch_size=4)
    r = ev.evaluate(linear_embed)
    raw = linear_embed(x) + linear_embed(np.ascontiguousarray(x[..., ::-1]))
    t = [raw[0] + raw[1], (raw[2] + raw[3]) / 2, (raw[4] + raw[5]) / 2]
    t = [v / np.linalg.norm(v) for v in t]
    s = [t[0] @ t[1], t[0] @ t[2], t[1] @ t[2]]
    auc = np.mean([float(s[0] > i) + 0.5 * float(s[0] == i) for i in (s[1], s[2])])
    assert r['auc'] == pytest.approx(auc) and r['num_genuine'] == 1 and r['num_impostors'] == 2
    with pytest.raises(ValueError, match='labels must be 0 or 1'):
        (tmp_path / 'bad.txt').write_text('0.png 1.png yes\n')
        TarFarEvaluator(pair_list=str(tmp_path / 'bad.txt'), image_root=str(tmp_path)).evaluate(linear_embed)
