"""`tools/train.py --resume auto` under a dynamic loss scale with skipped steps equals an uninterrupted run.

The config (written by the test) starts the dynamic scale at 2**126: float32 tops out at 3.4e38, so
any gradient element above ~4 in the scaled backward pass is inf, the step is skipped and the scale
halves. The first 8 steps are skipped (2**126 -> 2**118); afterwards window=3 grows the scale every
third clean step until it overflows again, so skips keep happening through the run (12 of 24 in
all, measured). The learning rate is constant, so stopping part B early with ``train_cfg.max_iters``
does not change the schedule. Run A trains 24 iterations straight; run B stops at iteration 10 (mid
epoch 2, two clean steps into a window: the clean-step counter is 2, the scale neither the initial
one nor 1) and resumes with ``--resume auto`` to 24. Without the restored scale the resumed run would
skip 8 steps again; without the restored counter it would grow the scale one step late.
"""
import os
import os.path as osp
import re
import subprocess
import sys

import numpy as np
import pytest

from facekit.utils.checkpoint import load_checkpoint

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TRAIN = osp.join(ROOT, 'tools', 'train.py')
INIT_SCALE = 2.0 ** 126
N, K = 24, 10      # 3 epochs x 8 iterations; the cut is mid epoch 2

CONFIG = f"""
model = dict(type='FaceRecognizer',
             backbone=dict(type='VisionTransformer', img_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2,
                           embedding_size=16),
             head=dict(type='NormFCHead', embedding_size=16, num_classes=8),
             loss=dict(type='ArcFaceLoss', s=32.0, m=0.3))
optimizer = dict(type='AdamW', lr=2e-3, weight_decay=0.05)
lr_schedule = dict(type='ConstantLR')
train_cfg = dict(max_epochs=3)
# nan_patience above the number of overflow skips: each skipped step counts toward the divergence guard
runtime = dict(device_target='CPU', seed=0, nan_patience=100,
               loss_scale=dict(mode='dynamic', init_scale={INIT_SCALE!r}, window=3))
hooks = [dict(type='LoggerHook', interval=1, progress_bar=False),
         dict(type='CheckpointHook', interval=4, by_epoch=False, max_keep_ckpts=0)]
# no random flip: every random draw of the run is then seeded by (seed, epoch) or fixed at build
train_dataloader = dict(batch_size=8, num_workers=1, shuffle=True, drop_remainder=True,
                        dataset=dict(type='SyntheticIdentities', num_classes=8, images_per_class=8, image_size=32,
                                     seed=0, pipeline=[dict(type='Normalize'), dict(type='ToCHW')]))
"""

LINE = re.compile(r'iter (\d+)/\d+ .* loss: ([0-9.]+) .* loss_scale: (\S+)\s+skipped: (\d+)')


def _train(config, work_dir, *extra):
    # PYTHONPATH: the subprocess must import this checkout's facekit, not another editable install
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.run([sys.executable, TRAIN, str(config), '--work-dir', str(work_dir), *extra], cwd=ROOT,
                          capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _iter_lines(text):
    """{iteration: (loss, loss scale, skipped so far)} as logged, one line per iteration."""
    return {int(m.group(1)): (m.group(2), float(m.group(3)), int(m.group(4))) for m in LINE.finditer(text)}


def _state(path):
    p = load_checkpoint(str(path))
    return {k: p['train_state.' + k].asnumpy().item() for k in ('iter', 'loss_scale', 'loss_scale_clean_steps',
                                                                 'skipped_steps')}


@pytest.mark.slow
def test_resume_auto_keeps_dynamic_loss_scale_counters_and_losses(tmp_path):
    config = tmp_path / 'tiny_loss_scale.py'
    config.write_text(CONFIG)

    _train(config, tmp_path / 'A')
    log_a = _iter_lines((tmp_path / 'A' / 'train.log').read_text())
    assert sorted(log_a) == list(range(1, N + 1))
    final_a = _state(tmp_path / 'A' / f'iter_{N}.ckpt')

    _train(config, tmp_path / 'B', '--cfg-options', f'train_cfg.max_iters={K}')
    cut = _state(tmp_path / 'B' / f'iter_{K}.ckpt')
    # the cut is where dropping state shows: scale moved, a window half-counted, steps skipped
    # after it as well as before
    assert cut['iter'] == K and cut['loss_scale'] not in (INIT_SCALE, 1.0)
    assert cut['loss_scale_clean_steps'] > 0 and 0 < cut['skipped_steps'] < final_a['skipped_steps']
    assert cut['loss_scale'] == pytest.approx(log_a[K][1], rel=1e-5) and cut['skipped_steps'] == log_a[K][2]

    out = _train(config, tmp_path / 'B', '--resume', 'auto')
    assert f'resumed from {tmp_path / "B" / f"iter_{K}.ckpt"}' in out
    text_b = (tmp_path / 'B' / 'train.log').read_text()
    log_b = _iter_lines(text_b[text_b.index('resumed from'):])
    assert sorted(log_b) == list(range(K + 1, N + 1))
    final_b = _state(tmp_path / 'B' / f'iter_{N}.ckpt')

    assert final_b == final_a
    # per iteration after the cut: the same loss (4 decimals as logged), scale and skipped count
    for i in range(K + 1, N + 1):
        assert log_b[i] == log_a[i], (i, log_b[i], log_a[i])
    np.testing.assert_array_equal(load_checkpoint(str(tmp_path / 'B' / f'iter_{N}.ckpt'))['head.weight'].asnumpy(),
                                  load_checkpoint(str(tmp_path / 'A' / f'iter_{N}.ckpt'))['head.weight'].asnumpy())
