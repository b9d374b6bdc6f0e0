"""Training-health guard: divergence stops the run, no checkpoint holds NaN/Inf, BN statistics
survive a skipped step, rotation keeps the newest healthy checkpoint."""
import glob
import importlib.util
import os
import os.path as osp
import re
import sys

import numpy as np
import pytest

import mindspore as ms

from facekit.engine import NonFiniteLossError, Runner
from facekit.engine.amp import LossScaleConfig
from facekit.engine.checkpoint import NonFiniteStateError
from facekit.engine.hooks import Hook
from facekit.engine.lr_schedules import PolyLR
from facekit.engine.optim import SGD, AdamW, optimizer_state
from facekit.engine.train_step import TrainStep
from facekit.utils.checkpoint import TEMP_NAME, load_checkpoint


def _engine_tiny():
    """tests/engine/engine_tiny.py, imported by path (TinyRecognizer: Dense + BN + PReLU -> Dense -> CE)."""
    if 'engine_tiny' not in sys.modules:
        path = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'engine', 'engine_tiny.py')
        spec = importlib.util.spec_from_file_location('engine_tiny', path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules['engine_tiny'] = module
    return sys.modules['engine_tiny']


TinyRecognizer = _engine_tiny().TinyRecognizer
ArrayLoader = _engine_tiny().ArrayLoader


@pytest.fixture(autouse=True)
def graph_mode():
    ms.set_context(mode=ms.GRAPH_MODE)


def _runner(work_dir, optimizer, lr, hooks, nan_patience=3, max_epochs=3, **kw):
    ms.set_seed(3)
    net = TinyRecognizer()
    opt = optimizer(net, lr=lr)
    return Runner(net, ArrayLoader(), opt, PolyLR(lr, max_epochs * 8), max_epochs, str(work_dir),
                  hooks=list(hooks), nan_patience=nan_patience, seed=0, **kw)


def _assert_every_checkpoint_finite(work_dir):
    ckpts = sorted(glob.glob(osp.join(str(work_dir), '*.ckpt')))
    for path in ckpts:
        for name, value in load_checkpoint(path).items():
            arr = value.asnumpy()
            if np.issubdtype(arr.dtype, np.floating):
                assert np.isfinite(arr).all(), f'{path}: {name} holds NaN/Inf'
    return ckpts


@pytest.mark.parametrize('optimizer', [SGD, AdamW], ids=['sgd', 'adamw'])
def test_lr_1e30_stops_with_a_one_line_error_and_no_poisoned_checkpoint(tmp_path, optimizer):
    r = _runner(tmp_path, optimizer, 1e30,
                [dict(type='CheckpointHook', interval=1, by_epoch=False, max_keep_ckpts=2)])
    with pytest.raises(NonFiniteLossError) as e:
        r.train()
    r.close()
    msg = str(e.value)
    assert '\n' not in msg
    m = re.search(r'ending at iteration (\d+)', msg)
    assert m and int(m.group(1)) == r.iter < 24, msg       # stopped early, at the iteration it names
    assert 'last finite loss' in msg or 'no finite loss' in msg
    # every unhealthy step in a row up to the stop, and no more than the patience
    assert [h[0] for h in r.history][-3:] == [r.iter - 2, r.iter - 1, r.iter]
    ckpts = _assert_every_checkpoint_finite(tmp_path)
    assert len(ckpts) == 2, 'rotation (keep 2) ran and kept the newest two'
    last_good = re.search(r'last good checkpoint: (\S+?\.ckpt)', msg).group(1)
    assert osp.isfile(last_good) and last_good in ckpts
    newest = max(int(re.search(r'iter_(\d+)', p).group(1)) for p in ckpts)
    assert osp.basename(last_good) == f'iter_{newest}.ckpt'
    with open(tmp_path / 'last_checkpoint') as f:
        assert f.read() == osp.basename(last_good)
    assert not [n for n in os.listdir(tmp_path) if TEMP_NAME.match(n)]


def test_unhealthy_steps_are_counted_from_the_gradients_too(tmp_path):
    """lr=1e30 with SGD: the runner stops after exactly `nan_patience` unhealthy steps in a row."""
    r = _runner(tmp_path, SGD, 1e30, [], nan_patience=4)
    with pytest.raises(NonFiniteLossError):
        r.train()
    r.close()
    assert r.skipped_steps >= 4 and r.iter < 24
    unhealthy_tail = r.iter - r._last_healthy[0] if r._last_healthy else r.iter
    assert unhealthy_tail == 4


def test_finite_loss_with_nonfinite_gradients_is_unhealthy_and_stops_the_run(tmp_path):
    """The issue's case: the loss stays finite (frozen) while every gradient overflows."""
    class Loud(ArrayLoader):     # large inputs: gradients of ~1e3 overflow float32 at a 3e38 loss scale
        def __iter__(self):
            for x, y in super().__iter__():
                yield x * 1e3, y
    ms.set_seed(3)
    net = TinyRecognizer()
    r = Runner(net, Loud(), SGD(net, lr=0.1), PolyLR(0.1, 24), 3, str(tmp_path), nan_patience=5, loss_scale=3e38,
               hooks=[dict(type='CheckpointHook', interval=2, by_epoch=False)])
    with pytest.raises(NonFiniteLossError) as e:
        r.train()
    r.close()
    assert r.iter == 5 and r.skipped_steps == 5
    assert all(np.isfinite(h[2]) for h in r.history)
    msg = str(e.value)
    assert 'ending at iteration 5' in msg and 'last finite loss' in msg and 'at iteration 5' in msg
    assert 'no step was healthy' in msg
    # the skipped steps changed nothing, so the checkpoints hold the initial, finite state
    assert _assert_every_checkpoint_finite(tmp_path) == [str(tmp_path / 'iter_2.ckpt'), str(tmp_path / 'iter_4.ckpt')]


def _bn(net):
    bn = net.backbone[1]
    return bn.moving_mean.asnumpy().copy(), bn.moving_variance.asnumpy().copy()


def test_bn_statistics_unchanged_across_a_skipped_step():
    ms.set_seed(1)
    net = TinyRecognizer()
    # an infinite fixed loss scale: the scaled gradients are Inf/NaN, so every step is skipped
    step = TrainStep(net, SGD(net, lr=0.1), LossScaleConfig('fixed', init_scale=float('inf')))
    step.set_train()
    rng = np.random.default_rng(0)
    x = ms.Tensor((rng.normal(size=(8, 4)) * 3 + 2).astype(np.float32))
    y = ms.Tensor(rng.integers(0, 3, 8).astype(np.int32))
    lr = ms.Tensor(np.float32(0.1))
    mean0, var0 = _bn(net)
    w0 = net.head.weight.asnumpy().copy()
    loss, healthy = step(x, y, lr)
    assert np.isfinite(float(loss.asnumpy())) and not bool(healthy.asnumpy())
    mean1, var1 = _bn(net)
    np.testing.assert_array_equal(mean1, mean0)
    np.testing.assert_array_equal(var1, var0)
    np.testing.assert_array_equal(net.head.weight.asnumpy(), w0)
    # the same batch at scale 1 is healthy and does move the statistics (guards the check above)
    step.loss_scale.set_data(ms.Tensor(np.float32(1.0)))
    _, healthy = step(x, y, lr)
    assert bool(healthy.asnumpy())
    mean2, _ = _bn(net)
    assert np.abs(mean2 - mean0).max() > 1e-3


def test_a_nan_batch_leaves_bn_statistics_finite_and_unchanged():
    ms.set_seed(1)
    net = TinyRecognizer()
    step = TrainStep(net, SGD(net, lr=0.1), LossScaleConfig('none'))
    step.set_train()
    y = ms.Tensor(np.zeros(8, np.int32))
    mean0, var0 = _bn(net)
    _, healthy = step(ms.Tensor(np.full((8, 4), np.nan, np.float32)), y, ms.Tensor(np.float32(0.1)))
    assert not bool(healthy.asnumpy())
    mean1, var1 = _bn(net)
    np.testing.assert_array_equal(mean1, mean0)
    np.testing.assert_array_equal(var1, var0)


class _PoisonBN(Hook):
    """Writes NaN into the BN moving mean after iteration ``at`` (before CheckpointHook runs)."""
    priority = 60

    def __init__(self, at):
        self.at = at

    def after_train_iter(self, runner):
        if runner.iter == self.at:
            bn = runner.model.backbone[1]
            bn.moving_mean.set_data(ms.Tensor(np.full(bn.moving_mean.shape, np.nan, np.float32)))


def test_a_nonfinite_state_is_never_written_and_stops_the_run(tmp_path):
    r = _runner(tmp_path, SGD, 0.1, [dict(type='CheckpointHook', interval=2, by_epoch=False, max_keep_ckpts=1),
                                      _PoisonBN(at=6)])
    with pytest.raises(NonFiniteLossError) as e:
        r.train()
    r.close()
    msg = str(e.value)
    assert 'backbone.1.moving_mean' in msg and 'iter_6.ckpt not written' in msg
    assert 'ending at iteration 6' in msg and 'last good checkpoint: ' + str(tmp_path / 'iter_4.ckpt') in msg
    assert _assert_every_checkpoint_finite(tmp_path) == [str(tmp_path / 'iter_4.ckpt')]
    assert 'NaN/Inf in' in open(tmp_path / 'train.log').read()      # the refusal is logged


def test_save_training_state_refuses_and_names_nonfinite_optimizer_state(tmp_path):
    r = _runner(tmp_path, SGD, 0.1, [])
    momentum = optimizer_state(r.optimizer, r.model_param_names)['accum.head.weight']
    momentum.set_data(ms.Tensor(np.full(momentum.shape, np.inf, np.float32)))
    with pytest.raises(NonFiniteStateError) as e:
        r.save_checkpoint(str(tmp_path / 'iter_1.ckpt'))
    r.close()
    assert e.value.names == ['optimizer.accum.head.weight'] and 'not written' in str(e.value)
    assert not glob.glob(str(tmp_path / '*.ckpt')) and not [n for n in os.listdir(tmp_path) if TEMP_NAME.match(n)]


def test_a_transient_skipped_step_still_checkpoints_the_healthy_state(tmp_path):
    """One NaN batch at an epoch end: the step is skipped, the (unchanged, healthy) state is saved."""
    class OneNaN(ArrayLoader):
        def __iter__(self):
            for i, (x, y) in enumerate(super().__iter__()):
                yield (np.full_like(x, np.nan) if self.epoch == 0 and i == 7 else x), y
    ms.set_seed(3)
    net = TinyRecognizer()
    r = Runner(net, OneNaN(), SGD(net, lr=0.1), PolyLR(0.1, 16), 2, str(tmp_path),
               hooks=[dict(type='CheckpointHook', interval=1)], nan_patience=3)
    r.train()
    r.close()
    assert r.skipped_steps == 1
    assert _assert_every_checkpoint_finite(tmp_path) == [str(tmp_path / 'epoch_1.ckpt'), str(tmp_path / 'epoch_2.ckpt')]
