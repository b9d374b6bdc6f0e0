import json
import os
import os.path as osp

import numpy as np
import pytest

import mindspore as ms

from engine_tiny import ArrayLoader, TinyRecognizer
from facekit.engine import CheckpointHook, EvalHook, LoggerHook, NonFiniteLossError, Runner, find_latest_checkpoint
from facekit.engine.lr_schedules import PolyLR
from facekit.engine.optim import SGD
from facekit.utils.checkpoint import load_checkpoint, load_state_into


@pytest.fixture(autouse=True)
def graph_mode():
    ms.set_context(mode=ms.GRAPH_MODE)


def _initial_state():
    ms.set_seed(7)
    net = TinyRecognizer()
    return {n: p.asnumpy().copy() for n, p in net.parameters_and_names()}


def _runner(work_dir, init, max_epochs=3, hooks=(), loader=None, max_iters=None, **kw):
    net = TinyRecognizer()
    load_state_into(net, init)
    loader = loader or ArrayLoader()
    opt = SGD(net, lr=0.2, momentum=0.9, weight_decay=5e-4, head_lr_mult=2.0)
    sched = PolyLR(0.2, max_iters=max_epochs * len(loader), warmup_iters=3)
    return Runner(net, loader, opt, sched, max_epochs, str(work_dir), hooks=list(hooks),
                  max_iters=max_iters, seed=0, **kw)


def test_resume_mid_epoch_matches_uninterrupted_run(tmp_path):
    init = _initial_state()
    full = _runner(tmp_path / 'full', init)
    hist_full = full.train()
    full.close()
    assert len(hist_full) == 24
    # loss goes down on this separable toy set
    assert np.mean([h[2] for h in hist_full[-4:]]) < np.mean([h[2] for h in hist_full[:4]])

    first = _runner(tmp_path / 'cut', init, max_iters=12,
                    hooks=[dict(type='CheckpointHook', interval=4, by_epoch=False, max_keep_ckpts=2)])
    first.train()
    first.close()
    assert sorted(os.listdir(tmp_path / 'cut')) == ['iter_12.ckpt', 'iter_8.ckpt', 'last_checkpoint', 'metrics.jsonl',
                                                    'train.log']
    ckpt = find_latest_checkpoint(str(tmp_path / 'cut'))
    assert osp.basename(ckpt) == 'iter_12.ckpt'

    second = _runner(tmp_path / 'cut', init)    # fresh weights: resume must restore everything
    second.resume(ckpt)
    assert (second.iter, second.epoch) == (12, 1)
    hist_resumed = second.train()
    second.close()
    assert [h[0] for h in hist_resumed] == list(range(13, 25))
    np.testing.assert_allclose([h[1] for h in hist_resumed], [h[1] for h in hist_full[12:]], rtol=1e-12)
    np.testing.assert_allclose([h[2] for h in hist_resumed], [h[2] for h in hist_full[12:]], rtol=1e-4, atol=1e-5)
    w_full = full.model.head.weight.asnumpy()
    np.testing.assert_allclose(second.model.head.weight.asnumpy(), w_full, rtol=1e-4, atol=1e-5)


def test_resume_without_optimizer_state_would_differ(tmp_path):
    """Guards the test above: dropping momentum changes the continuation measurably."""
    init = _initial_state()
    full = _runner(tmp_path / 'a', init)
    hist_full = full.train()
    first = _runner(tmp_path / 'b', init, max_iters=12, hooks=[dict(type='CheckpointHook', interval=12, by_epoch=False)])
    first.train()
    params = load_checkpoint(str(tmp_path / 'b' / 'iter_12.ckpt'))
    second = _runner(tmp_path / 'b', init)
    load_state_into(second.model, {k: v for k, v in params.items() if not k.startswith(('optimizer.', 'train_state.'))})
    second.iter, second.epoch = 12, 1
    hist = second.train()
    assert np.max(np.abs(np.array([h[2] for h in hist]) - [h[2] for h in hist_full[12:]])) > 1e-3
    for r in (full, first, second):
        r.close()


def test_checkpoint_keeps_last_k_and_holds_full_state(tmp_path):
    r = _runner(tmp_path, _initial_state(), max_epochs=4, hooks=[dict(type='CheckpointHook', interval=1, max_keep_ckpts=2)])
    r.train()
    r.close()
    files = sorted(f for f in os.listdir(tmp_path) if f.endswith('.ckpt'))
    assert files == ['epoch_3.ckpt', 'epoch_4.ckpt']
    with open(tmp_path / 'last_checkpoint') as f:
        assert f.read() == 'epoch_4.ckpt'
    params = load_checkpoint(str(tmp_path / 'epoch_4.ckpt'))
    assert int(params['train_state.iter'].asnumpy()) == 32
    assert int(params['train_state.epoch'].asnumpy()) == 4
    assert 'optimizer.accum.head.weight' in params and 'optimizer.learning_rate_group_0' in params
    np.testing.assert_array_equal(params['head.weight'].asnumpy(), r.model.head.weight.asnumpy())
    np.testing.assert_array_equal(params['backbone.1.moving_mean'].asnumpy(), r.model.backbone[1].moving_mean.asnumpy())


def test_logger_writes_speed_times_and_eta(tmp_path):
    r = _runner(tmp_path, _initial_state(), max_epochs=1, hooks=[dict(type='LoggerHook', interval=4)])
    r.train()
    r.close()
    lines = [ln for ln in open(tmp_path / 'train.log') if 'samples/s' in ln]
    assert len(lines) == 2     # iterations 4 and 8
    assert 'iter 4/8' in lines[0] and 'iter 8/8' in lines[1]
    for key in ('lr:', 'loss:', 'data:', 'step:', 'eta:', 'skipped: 0'):
        assert key in lines[1]


class NaNAfter(ArrayLoader):
    def __init__(self, bad_from, **kw):
        super().__init__(**kw)
        self.bad_from = bad_from

    def __iter__(self):
        for i, (x, y) in enumerate(super().__iter__()):
            if self.epoch * len(self) + i >= self.bad_from:
                x = np.full_like(x, np.nan)
            yield x, y


def test_persistent_nan_stops_with_a_message_and_keeps_the_good_checkpoint(tmp_path):
    r = _runner(tmp_path, _initial_state(), max_epochs=3, loader=NaNAfter(bad_from=10), nan_patience=3,
                hooks=[dict(type='CheckpointHook', interval=1)])
    with pytest.raises(NonFiniteLossError) as e:
        r.train()
    r.close()
    msg = str(e.value)
    assert 'ending at iteration 13' in msg and 'last finite loss' in msg and 'iteration 10' in msg
    assert 'epoch_1.ckpt' in msg
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith('.ckpt')) == ['epoch_1.ckpt']
    assert r.skipped_steps == 3
    assert r.history[9][1] == pytest.approx(PolyLR(0.2, 24, 3)(9))


class FakeEvaluator:
    """A plain evaluator (no BaseEvaluator): ``name`` and ``evaluate`` are all the runner needs."""
    name = 'fake'

    def __init__(self, values):
        self.values = list(values)
        self.calls = 0

    def evaluate(self, embed_fn):
        emb = embed_fn(np.ones((2, 4), np.float32))     # the runner hands over an embedding function
        assert emb.shape == (2, 8)
        v = self.values[self.calls]
        self.calls += 1
        return {'name': 'fake', 'accuracy': v, 'accuracy_std': 0.01}


def test_eval_hook_keeps_best_and_writes_metrics_lines(tmp_path):
    ev = FakeEvaluator([0.5, 0.7, 0.6])
    r = _runner(tmp_path, _initial_state(), max_epochs=3, evaluators=[ev], hooks=[dict(type='EvalHook', interval=1)])
    r.train()
    r.close()
    records = [json.loads(ln) for ln in open(tmp_path / 'metrics.jsonl')]
    assert [rec['iter'] for rec in records if rec['mode'] == 'train'] == list(range(1, 25))
    records = [rec for rec in records if rec['mode'] == 'val']
    assert [rec['iter'] for rec in records] == [8, 16, 24]
    assert [rec['fake']['accuracy'] for rec in records] == [0.5, 0.7, 0.6]
    assert all(rec['fake']['accuracy_std'] == 0.01 for rec in records)
    best = load_checkpoint(str(tmp_path / 'best_fake.ckpt'))
    assert int(best['train_state.iter'].asnumpy()) == 16


def test_load_from_takes_backbone_and_reinitialises_a_different_head(tmp_path):
    init = _initial_state()
    src = _runner(tmp_path / 'src', init, max_epochs=1, hooks=[dict(type='CheckpointHook', interval=1)])
    src.train()
    src.close()
    ckpt = str(tmp_path / 'src' / 'epoch_1.ckpt')

    net = TinyRecognizer(num_classes=5)    # other classes: the head cannot be reused
    head0 = net.head.weight.asnumpy().copy()
    r = Runner(net, ArrayLoader(num_classes=5), SGD(net, lr=0.1), PolyLR(0.1, 8), 1, str(tmp_path / 'ft'))
    r.load_checkpoint(ckpt)
    np.testing.assert_array_equal(net.backbone[0].weight.asnumpy(), src.model.backbone[0].weight.asnumpy())
    np.testing.assert_array_equal(net.backbone[1].moving_mean.asnumpy(), src.model.backbone[1].moving_mean.asnumpy())
    np.testing.assert_array_equal(net.head.weight.asnumpy(), head0)
    assert r.iter == 0 and 'head re-initialised' in open(tmp_path / 'ft' / 'train.log').read()
    r.close()

    same = TinyRecognizer()
    r2 = Runner(same, ArrayLoader(), SGD(same, lr=0.1), PolyLR(0.1, 8), 1, str(tmp_path / 'ft2'))
    r2.load_checkpoint(ckpt)
    np.testing.assert_array_equal(same.head.weight.asnumpy(), src.model.head.weight.asnumpy())
    r2.close()


def test_resume_reassembles_partialfc_shards_written_by_two_ranks(tmp_path):
    from mindspore import nn
    from facekit.registry import MODELS
    from facekit.utils.checkpoint import save_checkpoint
    import facekit  # noqa: F401
    model = MODELS.build(dict(type='FaceRecognizer', backbone=nn.Dense(4, 8),
                              head=dict(type='PartialFCHead', embedding_size=8, num_classes=6),
                              loss=dict(type='ArcFaceLoss', s=8.0, m=0.3)))
    r = Runner(model, ArrayLoader(num_classes=6), SGD(model, lr=0.1), PolyLR(0.1, 8), 1, str(tmp_path))
    entries, extra = r._state_entries()
    rng = np.random.default_rng(0)
    full = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in entries.items()
            if k.endswith('head.weight')}
    assert set(full) == {'head.weight', 'optimizer.accum.head.weight', 'optimizer.stat.head.weight'}
    rank0 = {k: v.asnumpy() for k, v in entries.items()}
    rank0.update({k: v[:3] for k, v in full.items()})        # rank 0 of 2 owned classes 0-2
    extra.update({'train_state.world_size': np.int64(2), 'train_state.iter': np.int64(5)})
    save_checkpoint(rank0, str(tmp_path / 'iter_5.ckpt'), extra=extra)
    save_checkpoint({k: v[3:] for k, v in full.items()}, str(tmp_path / 'iter_5.rank1.ckpt'), extra=extra)
    r.resume(str(tmp_path / 'iter_5.ckpt'))
    assert r.iter == 5
    np.testing.assert_array_equal(model.head.weight.asnumpy(), full['head.weight'])
    state = {n: p.asnumpy() for n, p in r.optimizer.parameters_and_names()}
    np.testing.assert_array_equal(state['accum.head.weight'], full['optimizer.accum.head.weight'])
    r.close()
