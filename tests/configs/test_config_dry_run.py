"""Every shipped experiment config passes a dry run: model, head, optimizer and compiled step build and 2 steps
on random inputs stay finite. Configs are found on disk, so new ones are covered as they are added.

Full-size models do not fit this machine's test budget: each config is reduced through config options only
(16 classes, 32-d embeddings, batch 4, and the backbone cut to one block per stage: depth and width options for
ViT and MobileFaceNet; IResNet variants fix their stage depths, so they become a one-block ``IResNet``). A
backbone of another family runs at full size.

Reduced, many configs become the same training graph (r50 and r100 on one data set differ only in depth, the
large-set recipes share models and differ in data and lr). The two compiled steps run once per distinct graph:
configs are grouped by everything a compiled step depends on (the reduced model, the optimizer settings other
than its lr, which is fed to the graph as a tensor, the precision and clipping settings and the batch), and each
group's first config runs the dry run. Every config, run or not, has its image count and steps per epoch
checked without compiling.
"""
import glob
import json
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


def _graph_signature(cfg):
    """What the compiled dry-run step of the (reduced) ``cfg`` depends on, as a comparable string."""
    from facekit.config import to_plain
    optimizer = {k: v for k, v in to_plain(cfg.optimizer).items() if k != 'lr'}
    runtime = to_plain(cfg.get('runtime')) or {}
    step = {k: runtime.get(k) for k in ('mode', 'amp_level', 'loss_scale', 'clip_grad_norm', 'clip_prefixes',
                                        'jit_level')}
    return json.dumps([to_plain(cfg.model), optimizer, step, cfg.train_dataloader.batch_size], sort_keys=True,
                      default=str)


def _training_configs():
    out = []
    for path in CONFIGS:
        cfg = Config.fromfile(osp.join(ROOT, path))
        if cfg.get('train_dataloader') is not None:
            out.append((path, cfg))
    return out


TRAINING = _training_configs()
GROUPS = {}
for _path, _cfg in TRAINING:
    GROUPS.setdefault(_graph_signature(_reduce(_cfg, 'work_dirs/unused')), []).append(_path)
RUN = sorted(paths[0] for paths in GROUPS.values())


def test_every_config_has_a_group_and_groups_merge_only_equal_graphs():
    assert sorted(p for paths in GROUPS.values() for p in paths) == sorted(p for p, _ in TRAINING)
    assert len(RUN) < len(TRAINING)      # the grouping saves compilations
    # r50 and r100 on MS1MV2 differ only in depth, which the reduction removes; a different loss does not merge
    same = [paths for paths in GROUPS.values() if 'configs/arcface/r50_ms1mv2.py' in paths][0]
    assert 'configs/arcface/r100_ms1mv2.py' in same
    assert not any('configs/arcface/r50_glint360k.py' in paths for paths in GROUPS.values()
                   if 'configs/arcface/r50_ms1mv2.py' in paths)        # CosFace vs ArcFace


@pytest.mark.parametrize('path', [p for p, _ in TRAINING])
def test_every_config_knows_its_epoch_length(path):
    from facekit.engine.dry_run import dataset_image_count, steps_per_epoch
    cfg = dict(TRAINING)[path]
    num_images, source = dataset_image_count(cfg)
    assert num_images is not None, source
    declared = cfg.train_dataloader.get('num_images')
    if declared is not None and 'counted' not in source:
        assert num_images == declared
    batch = cfg.train_dataloader.batch_size
    assert steps_per_epoch(num_images, batch, 1, 0) == num_images // batch


def test_configs_are_found():
    assert 'configs/arcface/r50_ms1mv2.py' in CONFIGS and 'configs/arcface/vit_synthetic_cpu.py' in CONFIGS


@pytest.mark.slow
@pytest.mark.parametrize('path', RUN)
def test_config_passes_a_dry_run(path, tmp_path):
    cfg = Config.fromfile(osp.join(ROOT, path))
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
    accumulative_counts = int(cfg.optimizer.get('accumulative_counts', 1))
    assert report['world_size'] == 1 and report['global_batch'] == BATCH * accumulative_counts
    # every training config can say how long an epoch is: from its data set, or the documented size
    assert report['num_images'] is not None, report['num_images_source']
    if declared is not None and 'counted' not in report['num_images_source']:
        assert report['num_images'] == declared
    assert report['steps_per_epoch'] == report['num_images'] // BATCH // accumulative_counts
    assert not os.listdir(tmp_path)           # nothing written
