"""Precision by device: the resolution table, its place in the run, and the mixed-precision step on CPU."""
import numpy as np
import pytest

import mindspore as ms

import facekit  # noqa: F401
from facekit.config import Config
from facekit.engine import Runner
from facekit.engine.amp import AUTO_MIXED_LOSS_SCALE, apply_amp, parse_loss_scale, resolve_precision
from facekit.engine.config_check import ConfigCheckError
from facekit.engine.optim import build_optimizer
from facekit.engine.train_step import TrainStep
from facekit.models.recognizer import FaceRecognizer

STEPS = 4
AUTO_GPU = dict(mode='dynamic', init_scale=65536.0, factor=2.0, window=100)


@pytest.mark.parametrize('level, loss_scale, device, expected_level, expected_scale', [
    ('auto', None, 'CPU', 'O0', None),                 # fp16 is slower on CPU: fp32, nothing to scale
    ('auto', None, 'GPU', 'O2', AUTO_GPU),              # the reference recipe: fp16 backbone, dynamic scale
    ('auto', None, 'Ascend', 'O2', AUTO_GPU),
    ('AUTO', 'dynamic', 'GPU', 'O2', 'dynamic'),        # an explicit loss_scale is kept
    ('auto', 'none', 'GPU', 'O2', 'none'),
    ('auto', 1024, 'CPU', 'O0', 1024),
    ('O0', None, 'GPU', 'O0', None),                    # a pinned level is used as set
    ('o2', None, 'GPU', 'O2', None),                    # ... without adding a loss scale
    ('O2', dict(mode='fixed', init_scale=8), 'Ascend', 'O2', dict(mode='fixed', init_scale=8)),
    ('O3', 128, 'GPU', 'O3', 128),
])
def test_resolution_table(level, loss_scale, device, expected_level, expected_scale):
    got_level, got_scale, text = resolve_precision(level, loss_scale, device)
    assert (got_level, got_scale) == (expected_level, expected_scale)
    assert text == ' '.join(text.split())        # one log line
    assert (f"'auto' on {device}" if level.lower() == 'auto' else f"'{expected_level}' as set") in text


def test_auto_figures_are_the_reference_scalers():
    # arcface_torch: GradScaler(growth_interval=100) with torch's init_scale 2**16, growth 2, backoff 0.5
    ls = parse_loss_scale(AUTO_MIXED_LOSS_SCALE)
    assert (ls.mode, ls.init_scale, ls.factor, ls.window) == ('dynamic', 2.0 ** 16, 2.0, 100)
    _, _, gpu = resolve_precision('auto', None, 'GPU')
    assert 'O2' in gpu and 'fp16 backbone' in gpu and 'from 65536, x2 after 100 clean steps, /2 on overflow' in gpu
    _, _, cpu = resolve_precision('auto', None, 'CPU')
    assert cpu.startswith('fp32, no loss scale') and '1.6x' in cpu


@pytest.mark.parametrize('args, message', [
    (('O2', None, 'CPU'), 'allow_cpu_fp16'),
    (('O4', None, 'GPU'), 'amp_level'),
    (('O1', None, 'GPU'), "amp_level='O1' is not supported"),     # MindSpore's O1 rewrite fails on facekit backbones
    (('auto', 'sometimes', 'GPU'), 'loss_scale'),
    (('auto', None, 'auto'), 'device_target'),
])
def test_refusals(args, message):
    with pytest.raises(ValueError, match=message):
        resolve_precision(*args)


def test_cpu_fp16_allowed_on_request():
    assert resolve_precision('O2', None, 'CPU', allow_cpu_fp16=True)[:2] == ('O2', None)


def _tiny_cfg(**runtime):
    return Config(dict(
        model=dict(type='FaceRecognizer', backbone=dict(type='VisionTransformer', embed_dim=16, depth=1, num_heads=2,
                                                          embedding_size=8),
                   head=dict(type='NormFCHead', embedding_size=8, num_classes=4), loss=dict(type='ArcFaceLoss')),
        train_dataloader=dict(batch_size=4, dataset=dict(type='SyntheticIdentities', num_classes=4,
                                                         images_per_class=4)),
        optimizer=dict(type='SGD', lr=0.1), train_cfg=dict(max_epochs=1),
        runtime=dict(device_target='CPU', **runtime)))


def test_from_cfg_records_the_resolved_precision(tmp_path):
    runner = Runner.from_cfg(Config(dict(_tiny_cfg().to_dict(), work_dir=str(tmp_path))))
    resolved = runner.cfg.runtime.precision_resolved.to_dict()
    assert resolved['amp_level'] == 'O0' and resolved['loss_scale'] is None
    assert resolved['description'].startswith('fp32, no loss scale')
    # the merged config dumped to the work dir carries it and loads back through the checks
    runner.cfg.dump(str(tmp_path / 'dump.py'))
    again = Config.fromfile(str(tmp_path / 'dump.py'))
    assert again.runtime.precision_resolved.to_dict() == resolved
    runner.close()


def test_fp16_on_cpu_is_refused_before_building(tmp_path):
    cfg = Config(dict(_tiny_cfg(amp_level='O2').to_dict(), work_dir=str(tmp_path)))
    runner = Runner.from_cfg(cfg)         # a checkpoint may still be tested with this config on CPU
    assert 'precision_resolved' not in runner.cfg.runtime
    for start in (runner.train, runner.dry_run):
        with pytest.raises(ConfigCheckError, match='allow_cpu_fp16'):
            start()
        assert runner.model is None       # refused before anything was built
    runner.close()


def _recognizer():
    return FaceRecognizer(dict(type='IResNet', layers=(1, 1, 1, 1), widths=(8, 8, 16, 16), stem_channels=8,
                               embedding_size=16),
                          dict(type='NormFCHead', embedding_size=16, num_classes=10),
                          dict(type='ArcFaceLoss', s=64.0, m=0.5))


def _train(model, loss_scale, batches, lr=0.1):
    opt = build_optimizer(dict(type='SGD', lr=lr, momentum=0.9, weight_decay=5e-4), model)
    step = TrainStep(model, opt, parse_loss_scale(loss_scale), clip_grad_norm=5.0)
    out = []
    for img, label in batches:
        loss, finite = step(ms.Tensor(img), ms.Tensor(label), ms.Tensor(np.float32(lr)))
        out.append((float(loss.asnumpy()), bool(finite.asnumpy()), float(step.loss_scale.asnumpy())))
    return out


@pytest.mark.slow
def test_mixed_precision_step_stays_close_to_fp32_on_cpu():
    """The 'auto' GPU recipe (O2 backbone, fp32 head and loss, dynamic scale from 65536) run on CPU through
    allow_cpu_fp16, against the same model in fp32.

    13 steps on one fixed batch. The scale starts too high for fp16 gradients: the first steps overflow,
    are skipped (the loss on the unchanged weights repeats exactly) and halve the scale until a step
    fits. A skipped step changes nothing, so the fp32 reference takes only the mixed run's healthy
    steps: its k-th loss is comparable with the mixed run's k-th healthy loss. Measured relative gaps:
    5.6e-5 on the first (same weights, fp16 forward only), then 6e-4, 1.1e-3, 1.9e-3, 4.3e-3 as fp16
    gradients move the weights apart (fp16 unit roundoff 4.9e-4; s=64 amplifies). Tolerance 1e-2.
    """
    ms.set_context(mode=ms.GRAPH_MODE)
    rng = np.random.default_rng(0)
    batch = (rng.uniform(-1, 1, (8, 3, 112, 112)).astype(np.float32), rng.integers(0, 10, 8).astype(np.int32))
    ms.set_seed(0)
    ref, mixed = _recognizer(), _recognizer()
    for a, b in zip(ref.get_parameters(), mixed.get_parameters()):
        b.set_data(ms.Tensor(a.asnumpy()))
    names = [p.name for p in mixed.get_parameters()]
    level, loss_scale, _ = resolve_precision('auto', None, 'GPU')
    apply_amp(mixed, level, 'CPU', allow_cpu_fp16=True)
    assert [p.name for p in mixed.get_parameters()] == names          # checkpoints still match
    assert all(p.dtype == ms.float32 for p in mixed.get_parameters())  # fp32 master weights
    assert mixed.backbone(ms.Tensor(batch[0])).dtype == ms.float32     # norms, head and loss see fp32

    run = _train(mixed, loss_scale, [batch] * 13, lr=0.01)
    losses = np.array([r[0] for r in run])
    healthy = np.array([r[1] for r in run])
    scales = [65536.0] + [r[2] for r in run]
    assert np.isfinite(losses).all()
    first = int(np.argmax(healthy))
    assert first >= 1                                    # 65536 overflows fp16 gradients here
    assert (losses[:first + 1] == losses[0]).all()      # skipped steps left the weights as they were
    for before, after, ok in zip(scales, scales[1:], healthy):
        assert after == (before if ok else before / 2)   # halved on overflow; 100 clean steps never reached
    assert healthy.sum() >= 4

    fp32 = np.array([r[0] for r in _train(ref, None, [batch] * int(healthy.sum()), lr=0.01)])
    gap = np.abs(losses[healthy] - fp32) / fp32
    assert gap[0] > 1e-6                                 # the backbone really ran in fp16
    assert gap.max() < 1e-2, (losses[healthy], fp32)
