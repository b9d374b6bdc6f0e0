"""tools/train.py end to end: the README's demo config at a few iterations, and config errors."""
import json
import os
import os.path as osp
import re
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TRAIN = osp.join(ROOT, 'tools', 'train.py')


def _run(args, timeout):
    return subprocess.run([sys.executable, TRAIN] + args, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ))


@pytest.mark.slow
def test_demo_config_reduced_trains_evaluates_and_reports_the_floor(tmp_path):
    opts = ['train_cfg.max_iters=16', 'train_cfg.max_epochs=2', 'train_dataloader.batch_size=16',
            'train_dataloader.num_workers=1', 'train_dataloader.dataset.num_classes=20',
            'train_dataloader.dataset.images_per_class=16', 'model.head.num_classes=20',
            'val_evaluators.0.num_pairs=60', 'val_evaluators.0.dataset.num_classes=12',
            'val_evaluators.0.dataset.images_per_class=4', 'runtime.log_interval=4']
    proc = _run(['configs/arcface/vit_synthetic_cpu.py', '--work-dir', str(tmp_path), '--cfg-options'] + opts,
                timeout=170)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert 'Accuracy-Flip' in out and 'synthetic_heldout' in out and 'raw-pixel floor' in out
    losses = [float(m) for m in re.findall(r'loss: ([0-9.]+)', open(tmp_path / 'train.log').read())]
    assert len(losses) == 4 and losses[-1] < losses[0], losses
    res = json.loads(open(tmp_path / 'eval_results.json').read())['synthetic_heldout']
    assert 0.0 <= res['accuracy'] <= 1.0 and 0.0 <= res['raw_pixel_floor'] <= 1.0
    assert res['num_pairs'] == 60
    assert open(tmp_path / 'last_checkpoint').read() == 'iter_16.ckpt'
    assert osp.isfile(tmp_path / 'vit_synthetic_cpu.py')        # the merged config is dumped
    # 'auto' precision resolved to fp32 on CPU: one log line, and recorded in the dumped config
    assert 'precision: fp32, no loss scale' in open(tmp_path / 'train.log').read()
    from facekit.config import Config
    dumped = Config.fromfile(str(tmp_path / 'vit_synthetic_cpu.py')).runtime
    assert dumped.amp_level == 'auto' and dumped.precision_resolved.amp_level == 'O0'
    assert dumped.precision_resolved.loss_scale is None
    # the main job's record: curves.png and TensorBoard event files (the config enables that backend)
    assert osp.getsize(tmp_path / 'curves.png') > 5000
    assert any(n.startswith('events.out.tfevents') for n in os.listdir(tmp_path / 'tensorboard'))


@pytest.mark.parametrize('opts, message', [
    (['optimizer.type=SDG'], "'SDG' is not registered"),
    (['model.backbone.type=iresnet51'], 'iresnet50'),
])
def test_config_errors_exit_2_before_training(tmp_path, opts, message):
    proc = _run(['configs/arcface/r50_casia.py', '--work-dir', str(tmp_path), '--cfg-options'] + opts, timeout=90)
    assert proc.returncode == 2
    assert 'config error' in proc.stderr and message in proc.stderr
    assert not osp.exists(tmp_path / 'train.log')


def test_missing_config_file_exits_2(tmp_path):
    proc = _run([str(tmp_path / 'nope.py')], timeout=90)
    assert proc.returncode == 2 and 'nope.py' in proc.stderr
