"""Gradient accumulation: k micro-batches of b train exactly as one optimizer step of k * b.

The model is BN-free (Dense -> ReLU -> Dense backbone, normalized-FC head, ArcFace), so a batch's
mean loss is the mean of its micro-batches' mean losses and the batch gradient the mean of theirs;
the references are the same step on the whole batch (k = 1) and gradients computed in the test with
``mindspore.value_and_grad``. Tests with BatchNorm (the health restore, resume) use engine_tiny's
TinyRecognizer.
"""
import os.path as osp
import re

import numpy as np
import pytest

import mindspore as ms
from mindspore import nn

from engine_tiny import ArrayLoader, TinyRecognizer
from facekit.config import Config
from facekit.engine import CheckpointHook, Runner
from facekit.engine.amp import LossScaleConfig
from facekit.engine.config_check import ConfigCheckError, check_config
from facekit.engine.lr_schedules import PolyLR
from facekit.engine.optim import SGD, AdamW, build_optimizer
from facekit.engine.train_step import TrainStep
from facekit.models.heads import NormFCHead, PartialFCHead
from facekit.models.losses import ArcFaceLoss
from facekit.models.recognizer import FaceRecognizer
from facekit.utils.checkpoint import load_checkpoint

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
K, B = 4, 2          # 4 micro-batches of 2 = one step of 8
IN_DIM, CLASSES = 6, 5


@pytest.fixture(autouse=True)
def graph_mode():
    ms.set_context(mode=ms.GRAPH_MODE)


def _recognizer(head='normfc'):
    backbone = nn.SequentialCell([nn.Dense(IN_DIM, 16), nn.ReLU(), nn.Dense(16, 8)])
    head = (NormFCHead(8, CLASSES) if head == 'normfc'
            else PartialFCHead(8, CLASSES, sample_rate=1.0, rank=0, world_size=1))
    return FaceRecognizer(backbone, head, ArcFaceLoss(s=16.0, m=0.3))


def _init_state(head='normfc'):
    ms.set_seed(3)
    return {n: p.asnumpy().copy() for n, p in _recognizer(head).parameters_and_names()}


def _load(net, state):
    for n, p in net.parameters_and_names():
        p.set_data(ms.Tensor(state[n]))
    return net


def _data(steps, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(steps * K * B, IN_DIM)) * scale).astype(np.float32)
    y = rng.integers(0, CLASSES, steps * K * B).astype(np.int32)
    return x, y


def _params(net):
    return {n: p.asnumpy().copy() for n, p in net.parameters_and_names()}


def _train(k, make_opt, x, y, init, lr=0.5, head='normfc', **step_kw):
    """Feed the batches of K * B rows in k micro-batches each; returns (net, step, losses (steps, k), healthy)."""
    net = _load(_recognizer(head), init)
    step = TrainStep(net, make_opt(net), step_kw.pop('loss_scale', LossScaleConfig('none')), accumulative_counts=k,
                     **step_kw)
    step.set_train()
    lr_t = ms.Tensor(np.float32(lr))
    b = K * B // k
    losses, healthy = [], []
    for s in range(len(x) // (K * B)):
        for m in range(k):
            rows = slice(s * K * B + m * b, s * K * B + (m + 1) * b)
            loss, ok, applied = step.step(ms.Tensor(x[rows]), ms.Tensor(y[rows]), lr_t)
            assert applied == (m == k - 1)
            losses.append(float(loss.asnumpy()))
            healthy.append(bool(ok.asnumpy()))
    return net, step, np.array(losses).reshape(-1, k), healthy


def _assert_same_weights(a, b, tol=1e-5):
    assert a.keys() == b.keys()
    for n in a:
        np.testing.assert_allclose(a[n], b[n], rtol=tol, atol=tol, err_msg=n)


def _grads(net, x, y):
    grad_fn = ms.value_and_grad(net, None, net.trainable_params())
    loss, grads = grad_fn(ms.Tensor(x), ms.Tensor(y))
    return float(loss.asnumpy()), {p.name: g.asnumpy() for p, g in zip(net.trainable_params(), grads)}


def _sgd(net):
    return SGD(net, lr=0.5, momentum=0.9, weight_decay=5e-4)


def test_k1_adds_no_buffer_and_no_second_graph():
    net = _recognizer()
    step = TrainStep(net, _sgd(net), LossScaleConfig('none'))
    assert step.accumulation_state() == {} and step.micro_step == 0
    assert not any(p.name.startswith('accum_') for p in step.get_parameters())   # (SGD's momenta are 'accum.*')
    assert 'accumulator' not in dict(step.name_cells())
    step4 = TrainStep(net, _sgd(net), LossScaleConfig('none'), accumulative_counts=4)
    assert len([k for k in step4.accumulation_state() if k.startswith('grad.')]) == len(net.trainable_params())


def test_buffer_holds_the_sum_of_the_unscaled_micro_gradients_and_the_step_uses_their_mean():
    """Worked independently: value_and_grad per micro-batch and on the batch of 8; the SGD update by hand."""
    init = _init_state()
    x, y = _data(1)
    lr, wd = 0.5, 5e-4
    net = _load(_recognizer(), init)
    step = TrainStep(net, SGD(net, lr=lr, momentum=0.9, weight_decay=wd),
                     LossScaleConfig('fixed', init_scale=1024.0), accumulative_counts=K)
    step.set_train()
    ref = _load(_recognizer(), init)
    micro = [_grads(ref, x[m * B:(m + 1) * B], y[m * B:(m + 1) * B])[1] for m in range(K)]
    loss8, g8 = _grads(ref, x, y)
    for m in range(K - 1):
        step.step(ms.Tensor(x[m * B:(m + 1) * B]), ms.Tensor(y[m * B:(m + 1) * B]), ms.Tensor(np.float32(lr)))
    assert step.micro_step == K - 1
    state = step.accumulation_state()
    for name in g8:
        # unscaled (the loss scale 1024 is gone) and summed, not averaged, until the last micro-batch
        np.testing.assert_allclose(state['grad.' + name].asnumpy(), sum(g[name] for g in micro[:K - 1]),
                                   rtol=1e-5, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(sum(g[name] for g in micro) / K, g8[name], rtol=1e-5, atol=1e-5)
    _, _, applied = step.step(ms.Tensor(x[-B:]), ms.Tensor(y[-B:]), ms.Tensor(np.float32(lr)))
    assert applied and step.micro_step == 0
    after = _params(net)
    for name, g in g8.items():
        decay = 0.0 if init[name].ndim <= 1 else wd       # biases are not decayed (optim.is_no_decay)
        expected = init[name] - lr * (g + decay * init[name])   # first momentum step: buffer = gradient
        np.testing.assert_allclose(after[name], expected, rtol=1e-5, atol=1e-6, err_msg=name)
    assert all(not v.asnumpy().any() for k, v in step.accumulation_state().items() if k.startswith('grad.'))


@pytest.mark.parametrize('make_opt,lr', [(_sgd, 0.5), (lambda net: AdamW(net, lr=1e-2, weight_decay=0.05), 1e-2)],
                         ids=['sgd_momentum', 'adamw'])
def test_k_micro_batches_equal_one_batch_of_k_times_b(make_opt, lr):
    init = _init_state()
    x, y = _data(3)
    net1, _, loss1, _ = _train(1, make_opt, x, y, init, lr=lr)
    net4, _, loss4, _ = _train(K, make_opt, x, y, init, lr=lr)
    # the loss of an optimizer step is the mean over its micro-batches
    np.testing.assert_allclose(loss4.mean(axis=1), loss1[:, 0], rtol=1e-5, atol=1e-6)
    assert np.ptp(loss4[0]) > 1e-3      # the micro-batches really differ
    _assert_same_weights(_params(net4), _params(net1))
    moved = max(np.abs(_params(net1)[n] - init[n]).max() for n in init)
    assert moved > 1e-2                 # three steps moved the weights far beyond the tolerance


def test_partialfc_head_at_rate_one_accumulates_like_one_batch():
    init = _init_state('partialfc')
    x, y = _data(2, seed=5)
    net1, _, loss1, _ = _train(1, _sgd, x, y, init, head='partialfc')
    net4, _, loss4, _ = _train(K, _sgd, x, y, init, head='partialfc')
    np.testing.assert_allclose(loss4.mean(axis=1), loss1[:, 0], rtol=1e-5, atol=1e-6)
    _assert_same_weights(_params(net4), _params(net1))


def test_clipping_acts_on_the_accumulated_gradient():
    init = _init_state()
    x, y = _data(2, seed=1, scale=30.0)
    clip = 0.05
    _, g8 = _grads(_load(_recognizer(), init), x[:K * B], y[:K * B])
    norm = np.sqrt(sum((g ** 2).sum() for n, g in g8.items() if n.startswith('backbone.')))
    assert norm > 10 * clip             # clipping is active
    make_opt = lambda net: SGD(net, lr=0.5, momentum=0.9, weight_decay=0.0)   # noqa: E731
    net1, _, _, _ = _train(1, make_opt, x, y, init, clip_grad_norm=clip)
    net4, _, _, _ = _train(K, make_opt, x, y, init, clip_grad_norm=clip)
    _assert_same_weights(_params(net4), _params(net1))
    # first step by hand: backbone moved by the clipped mean gradient, the head by its full one
    net, _, _, _ = _train(K, make_opt, x[:K * B], y[:K * B], init, clip_grad_norm=clip)
    after = _params(net)
    for name, g in g8.items():
        expected = g * clip / norm if name.startswith('backbone.') else g
        np.testing.assert_allclose(init[name] - after[name], 0.5 * expected, rtol=1e-4, atol=1e-7, err_msg=name)


def test_dynamic_loss_scale_counts_optimizer_steps_and_changes_nothing():
    init = _init_state()
    x, y = _data(4, seed=2)
    net1, _, _, _ = _train(1, _sgd, x, y, init)
    ls = LossScaleConfig('dynamic', init_scale=1024.0, factor=2.0, window=2)
    net = _load(_recognizer(), init)
    step = TrainStep(net, _sgd(net), ls, accumulative_counts=K)
    step.set_train()
    scales = []
    for m in range(len(x) // B):
        rows = slice(m * B, (m + 1) * B)
        step.step(ms.Tensor(x[rows]), ms.Tensor(y[rows]), ms.Tensor(np.float32(0.5)))
        scales.append(float(step.loss_scale.asnumpy()))
    # constant inside a group; grows after every 2 clean optimizer steps (not micro-batches)
    assert scales == [1024.0] * 4 + [1024.0] * 3 + [2048.0] + [2048.0] * 4 + [2048.0] * 3 + [4096.0]
    _assert_same_weights(_params(net), _params(net1))


def test_a_nonfinite_micro_batch_skips_the_whole_step():
    """Group 2's second micro-batch is Inf: the whole group is skipped (weights, SGD momentum and BN moving
    statistics as before it, BN included though its first micro-batch was healthy), the dynamic scale halves,
    the buffers are emptied, and group 3 then trains as if group 2 had never been."""
    rng = np.random.default_rng(4)
    xs = rng.normal(size=(3, K * B, 4)).astype(np.float32)
    ys = rng.integers(0, 3, (3, K * B)).astype(np.int32)
    bad = xs[1].copy()
    bad[B:2 * B] = np.inf
    ms.set_seed(9)
    init = {n: p.asnumpy().copy() for n, p in TinyRecognizer().parameters_and_names()}

    def run(groups):
        net = _load(TinyRecognizer(), init)
        opt = SGD(net, lr=0.1, momentum=0.9, weight_decay=5e-4)
        step = TrainStep(net, opt, LossScaleConfig('dynamic', init_scale=1024.0, window=100), accumulative_counts=K)
        step.set_train()
        seen = []
        for gx, gy in groups:
            before = {**_params(net), **{n: p.asnumpy().copy() for n, p in opt.parameters_and_names()}}
            flags = []
            for m in range(K):
                _, ok, _ = step.step(ms.Tensor(gx[m * B:(m + 1) * B]), ms.Tensor(gy[m * B:(m + 1) * B]),
                                     ms.Tensor(np.float32(0.1)))
                flags.append(bool(ok.asnumpy()))
            seen.append((before, flags, float(step.loss_scale.asnumpy())))
        return net, opt, step, seen

    net, opt, step, seen = run([(xs[0], ys[0]), (bad, ys[1]), (xs[2], ys[2])])
    assert seen[0][1] == [True] * K and seen[0][2] == 1024.0
    assert seen[1][1] == [True, False, False, False]     # the group stays unhealthy to its end
    assert seen[1][2] == 512.0
    before_bad, after_bad = seen[1][0], seen[2][0]
    assert any('moving_mean' in n for n in before_bad)
    for n in before_bad:
        np.testing.assert_array_equal(after_bad[n], before_bad[n], err_msg=n)
    ref_net, ref_opt, _, _ = run([(xs[0], ys[0]), (xs[2], ys[2])])
    _assert_same_weights(_params(net), _params(ref_net), tol=1e-6)
    assert step.micro_step == 0 and bool(step.accum_healthy.asnumpy())


def _runner(work_dir, init, k=K, max_epochs=2, hooks=(), loader=None, lr=0.5):
    net = _load(TinyRecognizer(), init)
    loader = loader or ArrayLoader(n=32, batch_size=B)
    steps_per_epoch = len(loader) // k
    sched = PolyLR(lr, max_iters=max_epochs * steps_per_epoch, warmup_iters=2)
    opt = SGD(net, lr=lr, momentum=0.9, weight_decay=5e-4)
    return Runner(net, loader, opt, sched, max_epochs, str(work_dir), hooks=list(hooks), seed=0,
                  accumulative_counts=k)


def test_runner_steps_lr_per_optimizer_step_and_passes_over_the_leftover_batches(tmp_path):
    """11 batches per epoch with k=4: micro-batches 0-7 train (2 optimizer steps), 8-10 are read and
    passed over; the next epoch starts a fresh group from its own first batch."""
    ms.set_seed(7)
    init = {n: p.asnumpy().copy() for n, p in TinyRecognizer().parameters_and_names()}
    loader = ArrayLoader(n=22, batch_size=B, num_classes=3)
    runner = _runner(tmp_path, init, loader=loader, lr=0.3)
    assert (runner.batches_per_epoch, runner.iters_per_epoch, runner.max_iters) == (11, 8, 16)
    assert (runner.samples_per_iter, runner.global_batch_size) == (B, K * B)
    hist = runner.train()
    runner.close()
    sched = PolyLR(0.3, max_iters=4, warmup_iters=2)
    assert [h[0] for h in hist] == list(range(1, 17))
    assert [h[1] for h in hist] == [sched(i // K) for i in range(16)]
    # the same steps by hand: each epoch's first 8 batches, lr of optimizer step s
    net = _load(TinyRecognizer(), init)
    step = TrainStep(net, SGD(net, lr=0.3, momentum=0.9, weight_decay=5e-4), LossScaleConfig('none'),
                     accumulative_counts=K)
    step.set_train()
    for epoch in range(2):
        loader.set_epoch(epoch)
        for i, (x, y) in enumerate(list(loader)[:8]):
            step.step(ms.Tensor(x), ms.Tensor(y), ms.Tensor(np.float32(sched(epoch * 2 + i // K))))
    _assert_same_weights(_params(runner.model), _params(net), tol=1e-6)
    log = (tmp_path / 'train.log').read_text()
    assert f'global batch {B} x {K} x 1 rank(s) = {K * B}, 4 optimizer steps (2 per epoch)' in log
    assert "the last 3 of each epoch's 11 batches are passed over" in log


def test_resume_inside_an_accumulation_group_equals_the_uninterrupted_run(tmp_path):
    """Checkpoints every 6 micro-batches with k=4: iter_18 lies inside a group (micro-step 2)."""
    ms.set_seed(7)
    init = {n: p.asnumpy().copy() for n, p in TinyRecognizer().parameters_and_names()}
    hooks = [CheckpointHook(interval=6, by_epoch=False, max_keep_ckpts=0)]
    full = _runner(tmp_path / 'full', init, hooks=hooks)
    hist_full = full.train()
    full.close()
    assert len(hist_full) == 32
    ckpt = str(tmp_path / 'full' / 'iter_18.ckpt')
    saved = load_checkpoint(ckpt)
    assert int(saved['accumulation.micro_step'].asnumpy()) == 2
    assert int(saved['train_state.accumulative_counts'].asnumpy()) == K
    assert np.abs(saved['accumulation.grad.head.weight'].asnumpy()).max() > 0
    assert 'accumulation.micro_step' not in load_checkpoint(str(tmp_path / 'full' / 'iter_12.ckpt'))

    def resumed(tamper=None):
        run = _runner(tmp_path / 'resumed', {n: v * 0 + 0.5 for n, v in init.items()})   # other weights
        run.resume(ckpt)
        assert (run.iter, run.epoch, run.train_step.micro_step) == (18, 1, 2)
        if tamper:
            tamper(run.train_step)
        hist = run.train()
        run.close()
        return run, hist

    run, hist = resumed()
    assert [h[0] for h in hist] == list(range(19, 33))
    assert [h[1] for h in hist] == [h[1] for h in hist_full[18:]]
    np.testing.assert_allclose([h[2] for h in hist], [h[2] for h in hist_full[18:]], rtol=1e-6, atol=1e-7)
    _assert_same_weights(_params(run.model), _params(full.model), tol=1e-6)

    # the guard: the same resume with the partial gradient sums lost ends elsewhere
    def drop_sums(step):
        for b in step.accum_grads:
            b.set_data(ms.Tensor(np.zeros(b.shape, np.float32)))
    run, _ = resumed(drop_sums)
    assert np.abs(run.model.head.weight.asnumpy() - full.model.head.weight.asnumpy()).max() > 1e-4


def test_resume_with_another_k_is_refused(tmp_path):
    ms.set_seed(7)
    init = {n: p.asnumpy().copy() for n, p in TinyRecognizer().parameters_and_names()}
    first = _runner(tmp_path / 'a', init, max_epochs=1, hooks=[CheckpointHook(interval=6, by_epoch=False)])
    first.train()
    first.close()
    other = _runner(tmp_path / 'b', init, k=2)
    with pytest.raises(ValueError, match='accumulative_counts=4, this run has 2'):
        other.resume(str(tmp_path / 'a' / 'iter_6.ckpt'))


def _cfg(**optimizer):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'arcface', 'vit_synthetic_cpu.py'))
    cfg.merge_from_dict({f'optimizer.{k}': v for k, v in optimizer.items()})
    return cfg


@pytest.mark.parametrize('bad', [0, -2, 2.5, 2.0, '4', True])
def test_config_check_refuses_a_bad_accumulative_counts(bad):
    with pytest.raises(ConfigCheckError, match=r'optimizer\.accumulative_counts must be an integer >= 1 .*got '
                                               + re.escape(repr(bad))):
        check_config(_cfg(accumulative_counts=bad))


def test_config_check_accepts_k_and_the_builder_drops_it():
    check_config(_cfg(accumulative_counts=4))
    cfg = _cfg(accumulative_counts=4)
    cfg.merge_from_dict({'train_cfg.max_iters': 10})
    with pytest.raises(ConfigCheckError, match=r'train_cfg\.max_iters=10 must be a multiple of '
                                               r'optimizer\.accumulative_counts=4'):
        check_config(cfg)
    net = _recognizer()
    opt = build_optimizer(dict(type='SGD', lr=0.1, accumulative_counts=4), net)
    assert opt.facekit_base_lr == 0.1
    with pytest.raises(ValueError, match='optimizer.accumulative_counts'):
        build_optimizer(dict(type='SGD', lr=0.1, accumulative_counts=0), net)
