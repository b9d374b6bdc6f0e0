"""Every shipped experiment config passes a dry run: model, head, optimizer and compiled step build and 2 steps
on random inputs stay finite. Configs are found on disk, so new ones are covered as they are added.

Full-size models do not fit this machine's test budget: each config is reduced through config options only
(16 classes, 32-d embeddings, batch 4, and the backbone cut to one block per stage: depth and width options for
ViT and MobileFaceNet; IResNet variants fix their stage depths, so they become a one-block ``IResNet``). A
backbone of another family runs at full size.
"""
import glob
import os
import os.path as osp

import numpy as np
import pytest

import facekit  # noqa: F401
from facekit.config import Config
from facekit.engine import Runner
from facekit.engine.config_check import accepted_keys
from facekit.registry import BACKBONES

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
                 if '_base_' not in p.split(os.sep))
CLASSES, EMB, BATCH = 16, 32, 4
STATE_SLOTS = {'SGD': 2, 'AdamW': 2}     # MindSpore nn.SGD: momentum buffer + first-step flag; AdamW: m and v


def _reduce(cfg, work_dir):
    backbone = cfg.model.backbone
    keys, _ = accepted_keys(BACKBONES.get(backbone.type))
    if {'embed_dim', 'depth', 'num_heads'} <= set(keys):
        small = dict(embed_dim=32, depth=1, num_heads=2)
    elif {'blocks', 'scale'} <= set(keys):
        small = dict(blocks=(1, 1, 1, 1), scale=1)
    elif BACKBONES.get(backbone.type).__module__.endswith('.iresnet'):
        small = dict(_delete_=True, type='IResNet', layers=(1, 1, 1, 1), widths=(8, 8, 8, 8), stem_channels=8)
    else:
        small = {}
    small['embedding_size'] = EMB
    cfg.merge_from_dict({'model.backbone': small, 'model.head.num_classes': CLASSES,
                         'model.head.embedding_size': EMB, 'train_dataloader.batch_size': BATCH,
                         'work_dir': str(work_dir)})
    return cfg


def test_configs_are_found():
    assert 'configs/arcface/r50_ms1mv2.py' in CONFIGS and 'configs/arcface/vit_synthetic_cpu.py' in CONFIGS


@pytest.mark.slow
@pytest.mark.parametrize('path', CONFIGS)
def test_config_passes_a_dry_run(path, tmp_path):
    cfg = Config.fromfile(osp.join(ROOT, path))
    if cfg.get('train_dataloader') is None:
        pytest.skip(f'{path} has no train_dataloader: not a training config')
    declared = cfg.train_dataloader.get('num_images')
    runner = Runner.from_cfg(_reduce(cfg, tmp_path))
    report = runner.dry_run()
    runner.close()

    assert len(report['losses']) == 2 and all(np.isfinite(report['losses'])) and all(report['grads_finite'])
    assert report['head_params'] == CLASSES * EMB                      # one (C, E) centre matrix
    (row,) = report['head_memory']
    assert row['shape'] == (CLASSES, EMB) and row['itemsize'] == 4
    opt = cfg.optimizer.type
    if opt in STATE_SLOTS:
        assert row['slots'] == STATE_SLOTS[opt]
        assert report['head_memory_bytes'] == CLASSES * EMB * 4 * (2 + STATE_SLOTS[opt])
    assert report['precision']['amp_level'] == 'O0'                  # 'auto' on CPU
    assert report['world_size'] == 1 and report['global_batch'] == BATCH
    # every training config can say how long an epoch is: from its data set, or the documented size
    assert report['num_images'] is not None, report['num_images_source']
    if declared is not None and 'counted' not in report['num_images_source']:
        assert report['num_images'] == declared
    assert report['steps_per_epoch'] == report['num_images'] // BATCH
    assert not os.listdir(tmp_path)           # nothing written
