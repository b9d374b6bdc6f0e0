"""tools/train.py --dry-run: what it reports, the numbers behind the report, and the refusal of a non-finite step."""
import os
import os.path as osp
import re
import subprocess
import sys

import pytest

import facekit  # noqa: F401
from facekit.config import Config
from facekit.engine.dry_run import dataset_image_count, head_memory, steps_per_epoch
from facekit.engine.optim import build_optimizer
from facekit.models.recognizer import FaceRecognizer

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TRAIN = osp.join(ROOT, 'tools', 'train.py')
# The demo config cut to 20 identities x 20 images (400 images), batch 16, a one-block ViT.
OPTS = ['train_dataloader.batch_size=16', 'train_dataloader.dataset.num_classes=20',
        'train_dataloader.dataset.images_per_class=20', 'model.head.num_classes=20', 'model.backbone.depth=1',
        'model.backbone.embed_dim=32', 'val_evaluators=[]']


def _dry_run(tmp_path, extra=()):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    return subprocess.run([sys.executable, TRAIN, 'configs/arcface/vit_synthetic_cpu.py', '--dry-run', '--work-dir',
                           str(tmp_path), '--cfg-options'] + OPTS + list(extra),
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=170)


@pytest.mark.slow
def test_dry_run_reports_and_passes(tmp_path):
    proc = _dry_run(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    # ViT width 32, depth 1, 128-d embedding; NormFC head 20 x 128 = 2,560 parameters
    assert re.search(r'parameters: backbone [0-9,]+ \(VisionTransformer\), head 2,560 \(NormFCHead\)', out), out
    # AdamW keeps two moments: 20 x 128 x 4 B x (1 + 1 + 2) = 40,960 B
    assert 'head.weight 20 x 128 x 4 B x (1 weight + 1 gradient + 2 optimizer state) = 40.0 KiB (40,960 B)' in out, out
    assert 'precision: fp32, no loss scale' in out
    assert 'world size 1, global batch 16 = 16 per rank x 1 rank(s) x 1 accumulation step(s)' in out
    # 400 images // 16 = 25 steps
    assert 'steps per epoch: 25 (400 images, counted in the SyntheticIdentities data set)' in out, out
    losses = [float(v) for v in re.findall(r'step \d: loss ([0-9.]+)', out)]
    assert len(losses) == 2 and all(v > 0 for v in losses), out
    assert 'dry run passed: 2 steps, losses finite' in out
    assert not os.listdir(tmp_path)           # no log, no checkpoint, no config dump


@pytest.mark.slow
def test_dry_run_exits_non_zero_on_a_non_finite_step(tmp_path):
    # lr 1e30: the first step's loss and gradients are finite, its update is not, so step 2's loss is not
    proc = _dry_run(tmp_path, ['optimizer.lr=1e30'])
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: dry run of '), proc.stderr
    assert 'step 2 of 2 is not finite' in lines[0]
    assert re.search(r'step 1: loss [0-9.]+', proc.stdout)


@pytest.mark.parametrize('images, batch, world, drop, expected', [
    (5_822_653, 128, 8, True, 5_686),       # MS1MV2 on 8 ranks: the reference's num_image // (128 * 8)
    (5_822_653, 128, 1, True, 45_489),
    (490_623, 128, 4, True, 958),           # CASIA on 4 ranks: 122,656 per rank (padded) // 128
    (10, 4, 3, True, 1),                    # 4 per rank (10 padded to 12) // 4
    (10, 4, 3, False, 1),
    (10, 3, 1, False, 4),                   # ceil(10 / 3) with the last, short batch kept
])
def test_steps_per_epoch(images, batch, world, drop, expected):
    assert steps_per_epoch(images, batch, world, 0, drop) == expected


@pytest.mark.parametrize('rank, num_local', [(0, 4), (1, 3), (2, 3)])
def test_head_memory_of_a_partial_fc_shard(rank, num_local):
    # 10 classes over 3 ranks: num_local = 10 // 3 + (rank < 10 % 3)
    model = FaceRecognizer(dict(type='VisionTransformer', embed_dim=16, depth=1, num_heads=2, embedding_size=8),
                           dict(type='PartialFCHead', embedding_size=8, num_classes=10, rank=rank, world_size=3),
                           dict(type='ArcFaceLoss'))
    for opt, slots in (('SGD', 2), ('AdamW', 2)):
        (row,) = head_memory(model, build_optimizer(dict(type=opt, lr=0.1), model))
        assert row['shape'] == (num_local, 8) and row['slots'] == slots
        assert row['bytes'] == num_local * 8 * 4 * (1 + 1 + slots)


def test_image_count_falls_back_to_the_documented_size():
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'arcface', 'r50_ms1mv2.py'))
    cfg.merge_from_dict({'train_dataloader.dataset.data_root': '/nonexistent/ms1mv2'})
    count, source = dataset_image_count(cfg)
    assert count == 5_822_653 and source.startswith('train_dataloader.num_images (the data set is not here')
    assert '/nonexistent/ms1mv2' in source
    cfg.merge_from_dict({'train_dataloader.num_images': None})
    count, source = dataset_image_count(cfg)
    assert count is None and 'sets no train_dataloader.num_images' in source
