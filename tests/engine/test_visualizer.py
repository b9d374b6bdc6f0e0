"""The run's record: per-iteration scalars and evaluations in metrics.jsonl and TensorBoard event files,
resume without duplicates, the gradient norm, the curves picture drawn from the same numbers."""
import json
import os
import os.path as osp
import struct
import subprocess
import sys

import numpy as np
import pytest

import mindspore as ms
from mindspore import nn

from engine_tiny import ArrayLoader, TinyRecognizer
from facekit.config import Config
from facekit.engine import ConfigCheckError, Runner, Visualizer
from facekit.engine.amp import parse_loss_scale
from facekit.engine.config_check import check_visualizer
from facekit.engine.lr_schedules import PolyLR
from facekit.engine.optim import SGD
from facekit.engine.train_step import TrainStep
from facekit.utils.checkpoint import load_state_into
from facekit.visualization.curves import curve_series, plot_curves, read_records

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TRAIN_KEYS = ('loss', 'lr', 'loss_scale', 'grad_norm', 'samples_per_sec', 'data_time', 'step_time', 'skipped_steps')


@pytest.fixture(autouse=True)
def graph_mode():
    ms.set_context(mode=ms.GRAPH_MODE)


def read_events(folder):
    """{tag: [(step, value), ...]} as TensorBoard keeps them, read from the TFRecord framing by hand:
    files in name order, each record ``[u64 length][u32 crc][payload][u32 crc]``; a SessionLog START
    at step s (a writer's ``purge_step``) drops every earlier point at a step >= s."""
    from tensorboardX.proto import event_pb2
    points = {}
    for name in sorted(os.listdir(folder)):
        data = open(osp.join(folder, name), 'rb').read()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack('<Q', data[pos:pos + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            if event.HasField('session_log') and event.session_log.status == event_pb2.SessionLog.START:
                points = {tag: [(s, v) for s, v in pts if s < event.step] for tag, pts in points.items()}
            for value in event.summary.value:
                points.setdefault(value.tag, []).append((event.step, value.simple_value))
    return points


def expected_events(records):
    """The TensorBoard points metrics.jsonl implies: train/<key> and val/<target>/<key>, finite numbers only."""
    out = {}
    for rec in records:
        if rec['mode'] == 'train':
            items = [(f'train/{k}', rec[k]) for k in TRAIN_KEYS]
        else:
            items = [(f'val/{t}/{k}', v) for t, s in rec.items() if isinstance(s, dict) and t != 'primary_metric'
                     for k, v in s.items()]
        for tag, v in items:
            if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v):
                out.setdefault(tag, []).append((rec['iter'], float(np.float32(v))))
    return out


class WeightEvaluator:
    """A plain evaluator whose numbers are a function of the weights only, so an evaluation replayed
    on restored weights gives the uninterrupted run's number."""
    name = 'fake'

    def evaluate(self, embed_fn):
        emb = embed_fn(np.linspace(-1, 1, 16, dtype=np.float32).reshape(4, 4))
        return {'name': 'fake', 'accuracy': float(np.tanh(np.abs(emb).mean())), 'accuracy_std': 0.01}


def _initial_state():
    ms.set_seed(7)
    net = TinyRecognizer()
    return {n: p.asnumpy().copy() for n, p in net.parameters_and_names()}


def _runner(work_dir, init, max_epochs=3, hooks=(), max_iters=None, **kw):
    net = TinyRecognizer()
    load_state_into(net, init)
    loader = ArrayLoader()
    opt = SGD(net, lr=0.2, momentum=0.9, weight_decay=5e-4)
    sched = PolyLR(0.2, max_iters=max_epochs * len(loader), warmup_iters=3)
    return Runner(net, loader, opt, sched, max_epochs, str(work_dir), hooks=list(hooks), max_iters=max_iters,
                  seed=0, evaluators=[WeightEvaluator()],
                  visualizer=dict(backends=['local', 'tensorboard']), **kw)


def _split(records):
    return [r for r in records if r['mode'] == 'train'], [r for r in records if r['mode'] == 'val']


@pytest.fixture(scope='module')
def full_run(tmp_path_factory):
    """24 iterations (3 epochs of 8), evaluated after each epoch."""
    ms.set_context(mode=ms.GRAPH_MODE)      # a module fixture runs before the function-scoped autouse one
    work = tmp_path_factory.mktemp('full')
    r = _runner(work, _initial_state(), hooks=[dict(type='EvalHook', interval=1), dict(type='PlotCurvesHook')])
    history = r.train()
    r.close()
    return work, history


def test_every_iteration_is_recorded_with_its_scalars(full_run):
    work, history = full_run
    train, evals = _split(read_records(work / 'metrics.jsonl'))
    assert [r['iter'] for r in train] == list(range(1, 25))
    assert [r['loss'] for r in train] == [h[2] for h in history]     # JSON keeps the float exactly
    assert [r['lr'] for r in train] == [h[1] for h in history]
    assert [r['epoch'] for r in train] == [0] * 7 + [1] * 8 + [2] * 8 + [3]
    for r in train:
        assert r['samples_per_sec'] == pytest.approx(8 / (r['data_time'] + r['step_time']), rel=1e-9)
        assert r['skipped_steps'] == 0 and r['loss_scale'] == 1.0
        assert np.isfinite(r['grad_norm']) and r['grad_norm'] > 0
    assert [r['iter'] for r in evals] == [8, 16, 24]
    assert all(r['primary_metric'] == {'fake': 'accuracy'} for r in evals)


def test_tensorboard_events_equal_the_metrics_file(full_run):
    work, _ = full_run
    records = read_records(work / 'metrics.jsonl')
    events = read_events(work / 'tensorboard')
    expected = expected_events(records)
    assert {'train/loss', 'train/grad_norm', 'val/fake/accuracy'} <= set(events)
    assert events == expected


def test_resume_drops_the_interrupted_runs_later_records(full_run, tmp_path):
    full_dir, full_history = full_run
    init = _initial_state()
    # interrupted after iteration 12; its newest checkpoint is iteration 8 (written before that
    # iteration's evaluation), so iterations 9-12 and the evaluation at 8 are recorded again
    cut = _runner(tmp_path, init, max_iters=12,
                  hooks=[dict(type='CheckpointHook', interval=8, by_epoch=False, save_last=False),
                         dict(type='EvalHook', interval=1)])
    cut.train()
    cut.close()
    train_cut, _ = _split(read_records(tmp_path / 'metrics.jsonl'))
    assert [r['iter'] for r in train_cut][-1] == 12
    resumed = _runner(tmp_path, init, hooks=[dict(type='CheckpointHook', interval=8, by_epoch=False),
                                             dict(type='EvalHook', interval=1)], resume='auto')
    resumed.train()
    resumed.close()

    records = read_records(tmp_path / 'metrics.jsonl')
    train, evals = _split(records)
    full_train, full_evals = _split(read_records(full_dir / 'metrics.jsonl'))
    assert [r['iter'] for r in train] == [r['iter'] for r in full_train] == list(range(1, 25))
    assert [r['iter'] for r in evals] == [r['iter'] for r in full_evals] == [8, 16, 24]
    np.testing.assert_allclose([r['loss'] for r in train], [h[2] for h in full_history], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose([r['fake']['accuracy'] for r in evals], [r['fake']['accuracy'] for r in full_evals],
                               rtol=1e-5)
    # records in file order: never an iteration twice, the evaluation of 8 after the training record of 8
    assert [(r['mode'], r['iter']) for r in records][7:10] == [('train', 8), ('val', 8), ('train', 9)]
    # TensorBoard: the resumed writer purges steps >= 8 and writes iteration 8 again
    assert read_events(tmp_path / 'tensorboard') == expected_events(records)


def _rec(mode, it, **values):
    return dict(mode=mode, iter=it, epoch=0, **values)


def _write(path, records):
    with open(path, 'w') as f:
        f.writelines(json.dumps(r) + '\n' for r in records)


def test_held_back_evaluation_is_written_back_or_replaced(tmp_path):
    old = [_rec('train', 1, loss=3.0), _rec('train', 2, loss=2.0), _rec('val', 2, acc={'a': 0.5}),
           _rec('train', 3, loss=1.0), _rec('val', 3, acc={'a': 0.6})]
    values = dict(loss=0.5, lr=0.1, loss_scale=1.0, grad_norm=1.0, data_time=0.1, step_time=0.1, skipped_steps=0)
    # not replayed: the evaluation at the resumed iteration returns before the next record
    _write(tmp_path / 'metrics.jsonl', old)
    vis = Visualizer(str(tmp_path))
    vis.start(2, resumed=True)
    assert [(r['mode'], r['iter']) for r in read_records(tmp_path / 'metrics.jsonl')] == [('train', 1), ('train', 2)]
    vis.add_train(3, 0, values, 8)
    vis.close()
    recs = read_records(tmp_path / 'metrics.jsonl')
    assert [(r['mode'], r['iter']) for r in recs] == [('train', 1), ('train', 2), ('val', 2), ('train', 3)]
    assert recs[2]['acc'] == {'a': 0.5} and recs[3]['loss'] == 0.5
    # replayed: the new evaluation replaces the held-back one
    _write(tmp_path / 'metrics.jsonl', old)
    vis = Visualizer(str(tmp_path))
    vis.start(2, resumed=True)
    vis.add_eval(2, 0, {'acc': {'a': 0.7}}, {'acc': 'a'})
    vis.close()
    recs = read_records(tmp_path / 'metrics.jsonl')
    assert [(r['mode'], r['iter']) for r in recs] == [('train', 1), ('train', 2), ('val', 2)]
    assert recs[2]['acc'] == {'a': 0.7}
    # a run from scratch starts a new record
    vis = Visualizer(str(tmp_path))
    vis.start(0, resumed=False)
    vis.close()
    assert read_records(tmp_path / 'metrics.jsonl') == []


def test_interval_averages_the_loss_over_the_window(tmp_path):
    vis = Visualizer(str(tmp_path), interval=3)
    vis.start(0, resumed=False)
    losses = [4.0, float('nan'), 1.0, 2.0, 6.0]
    for i, loss in enumerate(losses, 1):
        vis.add_train(i, 0, dict(loss=loss, lr=0.1, loss_scale=1.0, grad_norm=float('inf'), data_time=0.5,
                                 step_time=1.5, skipped_steps=int(i >= 2)), 4, last=i == len(losses))
    vis.close()
    recs = read_records(tmp_path / 'metrics.jsonl')
    assert [r['iter'] for r in recs] == [3, 5]
    assert recs[0]['loss'] == 2.5 and recs[1]['loss'] == 4.0        # the finite losses of each window
    assert recs[0]['samples_per_sec'] == pytest.approx(4 * 3 / 6.0) and recs[0]['grad_norm'] is None


class LinearSum(nn.Cell):
    """loss = mean over the batch of sum(W x): dloss/dW[j, k] = mean_b x[b, k] for every row j."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Dense(3, 2, has_bias=False)

    def construct(self, img, label):
        return self.backbone(img).sum(axis=1).mean()


def test_grad_norm_is_the_unscaled_norm_before_clipping():
    net = LinearSum()
    opt = SGD(net, lr=0.1, momentum=0.0, weight_decay=0.0)
    step = TrainStep(net, opt, parse_loss_scale(1024.0), clip_grad_norm=0.01)
    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32) * 5
    step(ms.Tensor(x), ms.Tensor(np.zeros(8, np.int32)), ms.Tensor(np.float32(0.1)))
    expected = np.sqrt(2.0 * np.sum(x.astype(np.float64).mean(0) ** 2))
    assert expected > 1.0       # far above the clip value: a clipped norm would read 0.01
    assert float(step.grad_norm.asnumpy()) == pytest.approx(expected, rel=1e-5)


def test_curve_series_are_the_recorded_numbers_and_the_png_is_drawn(full_run, tmp_path):
    work, history = full_run
    records = read_records(work / 'metrics.jsonl')
    s = curve_series(records)
    iters, loss = s['train']['loss']
    np.testing.assert_array_equal(iters, np.arange(1, 25))
    np.testing.assert_array_equal(loss, [h[2] for h in history])
    np.testing.assert_array_equal(s['train']['lr'][1], [h[1] for h in history])
    np.testing.assert_array_equal(s['epoch_ends'], [8, 16, 24])
    assert s['skipped'].size == 0
    v_iters, v_acc, v_std = s['val']['accuracy']['fake']
    np.testing.assert_array_equal(v_iters, [8, 16, 24])
    np.testing.assert_array_equal(v_acc, [r['fake']['accuracy'] for r in records if r['mode'] == 'val'])
    np.testing.assert_array_equal(v_std, [0.01] * 3)
    assert_png(work / 'curves.png', min_side=400)     # PlotCurvesHook drew it at the end of the run
    out = plot_curves(records, tmp_path / 'again.png', metrics=['accuracy_std'])
    assert_png(out, min_side=400)


def assert_png(path, min_side=200, max_bytes=400_000):
    """A real PNG of sensible size with something drawn on it."""
    import matplotlib.image as mpimg
    data = open(path, 'rb').read()
    assert data[:8] == b'\x89PNG\r\n\x1a\n'
    width, height = struct.unpack('>II', data[16:24])
    assert min(width, height) >= min_side and 5_000 < len(data) < max_bytes, (width, height, len(data))
    pixels = mpimg.imread(str(path))
    assert pixels.std() > 0.05


def test_plot_curves_tool(full_run, tmp_path):
    work, _ = full_run
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    out = tmp_path / 'c.png'
    proc = subprocess.run([sys.executable, 'tools/plot_curves.py', str(work), '--out', str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert_png(out, min_side=400)
    proc = subprocess.run([sys.executable, 'tools/plot_curves.py', str(tmp_path / 'nowhere')], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 1 and proc.stderr.startswith('error:') and 'metrics.jsonl' in proc.stderr


@pytest.mark.parametrize('vis, message', [
    (dict(backends=['tb']), "unknown backend(s) ['tb']"),
    (dict(backends=['tensorboard']), "must include 'local'"),
    (dict(interval=0), 'visualizer.interval must be a positive int'),
    (dict(backend=['local']), "unknown key(s) ['backend']"),
])
def test_config_check_names_the_bad_visualizer_value(vis, message):
    with pytest.raises(ConfigCheckError, match='visualizer') as e:
        check_visualizer(Config(dict(visualizer=vis)))
    assert message in str(e.value)


def test_tensorboard_without_the_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, 'tensorboardX', None)      # import tensorboardX now raises ImportError
    with pytest.raises(ConfigCheckError) as e:
        check_visualizer(Config(dict(visualizer=dict(backends=['local', 'tensorboard']))))
    assert "pip install 'facekit[tensorboard]'" in str(e.value)
