"""Every reference-table config loads, passes the library's config checks and builds (reduced in size)."""
import glob
import os.path as osp

import numpy as np
import pytest

import mindspore as ms

import facekit  # noqa: F401
from facekit.config import Config
from facekit.engine.config_check import ConfigCheckError, check_config
from facekit.engine.lr_schedules import build_lr_schedule
from facekit.engine.optim import build_optimizer
from facekit.registry import MODELS

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

BACKBONES = {'mbf': 'mobilefacenet', 'r50': 'iresnet50', 'r100': 'iresnet100', 'vit_t': 'vit_t', 'vit_s': 'vit_s',
             'vit_b': 'vit_b', 'vit_l': 'vit_l'}
CLASSES = {'casia': 10572, 'ms1mv2': 85742}
TABLE = [f'{b}_{d}' for d in CLASSES for b in BACKBONES]


def test_one_config_per_reference_row():
    found = {osp.splitext(osp.basename(p))[0] for p in glob.glob(osp.join(ROOT, 'configs', 'arcface', '*.py'))}
    assert set(TABLE) <= found, sorted(set(TABLE) - found)
    assert len(TABLE) == 14


def _reduced(cfg):
    """Same config with a small backbone of the same family and a 16-class head (fast to build)."""
    bb = cfg.model.backbone.type
    if bb.startswith('vit'):
        small = dict(_delete_=True, type='VisionTransformer', embed_dim=32, depth=1, num_heads=2, embedding_size=512)
    elif bb.startswith('iresnet'):
        small = dict(_delete_=True, type='IResNet', layers=(1, 1, 1, 1), widths=(8, 8, 8, 8), stem_channels=8)
    else:
        small = dict(_delete_=True, type='mobilefacenet', blocks=(1, 1, 1, 1), scale=1)
    cfg.merge_from_dict({'model': {'backbone': small, 'head': {'num_classes': 16}}})
    return cfg


@pytest.mark.parametrize('name', TABLE)
def test_config_recipe_and_build(name):
    ms.set_context(mode=ms.PYNATIVE_MODE)
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'arcface', name + '.py'))
    family, dataset = name.rsplit('_', 1)
    check_config(cfg)    # every type resolves in its registry; required keys present
    assert cfg.model.backbone.type == BACKBONES[family]
    assert cfg.model.head.num_classes == CLASSES[dataset]
    assert cfg.train_dataloader.batch_size == 128
    assert cfg.lr_schedule.type == 'PolyLR' and cfg.lr_schedule.power == 1.0
    if family.startswith('vit'):
        assert (cfg.optimizer.type, cfg.optimizer.lr, cfg.optimizer.weight_decay) == ('AdamW', 1e-3, 0.1)
        assert cfg.train_cfg.max_epochs == 40 and cfg.lr_schedule.warmup_epochs > 0
    else:
        wd = 1e-4 if family == 'mbf' else 5e-4
        assert (cfg.optimizer.type, cfg.optimizer.lr, cfg.optimizer.weight_decay) == ('SGD', 0.1, wd)
        assert cfg.optimizer.momentum == 0.9
    assert cfg.runtime.clip_grad_norm == 5.0 and cfg.runtime.clip_prefixes == ['backbone.']
    assert [ev.name for ev in cfg.val_evaluators] == ['lfw', 'cfp_fp', 'agedb_30', 'calfw', 'cplfw']

    cfg = _reduced(cfg)
    model = MODELS.build(cfg.model.to_dict())
    opt = build_optimizer(cfg.optimizer.to_dict(), model)
    assert {g['name'] for g in opt.facekit_groups} >= {'backbone_decay', 'backbone_no_decay', 'head_decay'}
    sched = build_lr_schedule(cfg.lr_schedule.to_dict(), opt.facekit_base_lr, 100, cfg.train_cfg.max_epochs)
    assert sched(sched.warmup_iters) == pytest.approx(cfg.optimizer.lr)
    assert sched(sched.max_iters) == pytest.approx(0.0)
    loss = model(ms.Tensor(np.zeros((2, 3, 112, 112), np.float32)), ms.Tensor(np.array([0, 1], np.int32)))
    assert np.isfinite(float(loss.asnumpy()))


def test_demo_config_checks_and_names_heldout_pairs():
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'arcface', 'vit_synthetic_cpu.py'))
    check_config(cfg)
    assert cfg.model.head.num_classes == cfg.train_dataloader.dataset.num_classes
    ev = cfg.val_evaluators[0]
    # held-out: evaluation identities start past every training identity
    assert ev.dataset.identity_offset >= cfg.train_dataloader.dataset.num_classes
    assert cfg.train_cfg.raw_pixel_floor is True
    # a plugin loss without PartialFC's cross-rank hook can replace ArcFace (README's example)
    cfg.merge_from_dict({'model': {'loss': dict(_delete_=True, type='CosFaceLoss', s=30.0, m=0.2)}})
    ms.set_context(mode=ms.PYNATIVE_MODE)
    model = MODELS.build(cfg.model.to_dict())
    loss = model(ms.Tensor(np.zeros((2, 3, 112, 112), np.float32)), ms.Tensor(np.array([0, 1], np.int32)))
    assert np.isfinite(float(loss.asnumpy()))


@pytest.mark.parametrize('bad, message', [
    ({'model.backbone.type': 'iresnet51'}, 'iresnet50'),
    ({'optimizer.type': 'SDG'}, 'SGD'),
    ({'train_cfg.max_epochs': 0}, 'max_epochs'),
    ({'runtime.amp_level': 'O4'}, 'amp_level'),
    ({'train_dataloader.batch_size': -1}, 'batch_size'),
])
def test_config_errors_are_caught_before_building(bad, message):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'arcface', 'r50_casia.py'))
    cfg.merge_from_dict(bad)
    with pytest.raises(ConfigCheckError, match=message):
        check_config(cfg)
