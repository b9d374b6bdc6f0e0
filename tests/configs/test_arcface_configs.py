"""Every shipped config loads, passes the library's config checks and builds (reduced in size).

Two tables: the reference results table's rows (CASIA-WebFace / MS1MV2) and the large-dataset recipes, whose
numbers are transcribed from arcface_torch's recipe files (recognition/arcface_torch/configs/<file>), so a
typo in a config or in docs/model_zoo.md's recipe table fails here.
"""
import collections
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
TARGETS = ('lfw', 'cfp_fp', 'agedb_30', 'calfw', 'cplfw')


# Large-dataset recipes. loss: (type, m) with s=64; rate: PartialFC sample_rate; batch: per GPU; gpus: the
# GPU count the recipe assumes (8 where the file names none); accum: the recipe's gradient_acc.
Recipe = collections.namedtuple(
    'Recipe', 'source family dataset loss rate optimizer lr wd epochs warmup batch gpus accum')
ARC, COS = ('ArcFaceLoss', 0.5), ('CosFaceLoss', 0.4)
RECIPES = {
    'r50_ms1mv3': Recipe('ms1mv3_r50.py', 'r50', 'ms1mv3', ARC, 1.0, 'SGD', 0.1, 5e-4, 20, 0, 128, 8, 1),
    'r100_ms1mv3': Recipe('ms1mv3_r100.py', 'r100', 'ms1mv3', ARC, 1.0, 'SGD', 0.1, 5e-4, 20, 0, 128, 8, 1),
    'mbf_ms1mv3': Recipe('ms1mv3_mbf.py', 'mbf', 'ms1mv3', ARC, 1.0, 'SGD', 0.1, 1e-4, 40, 0, 128, 8, 1),
    'r50_glint360k': Recipe('glint360k_r50.py', 'r50', 'glint360k', COS, 1.0, 'SGD', 0.1, 1e-4, 20, 0, 128, 8, 1),
    'r100_glint360k': Recipe('glint360k_r100.py', 'r100', 'glint360k', COS, 1.0, 'SGD', 0.1, 1e-4, 20, 0, 128, 8, 1),
    'mbf_glint360k': Recipe('glint360k_mbf.py', 'mbf', 'glint360k', COS, 1.0, 'SGD', 0.1, 1e-4, 20, 0, 128, 8, 1),
    'r50_webface4m': Recipe('wf4m_r50.py', 'r50', 'webface4m', COS, 1.0, 'SGD', 0.1, 5e-4, 20, 0, 128, 8, 1),
    'r100_webface4m': Recipe('wf4m_r100.py', 'r100', 'webface4m', COS, 1.0, 'SGD', 0.1, 5e-4, 20, 0, 128, 8, 1),
    'mbf_webface4m': Recipe('wf4m_mbf.py', 'mbf', 'webface4m', COS, 1.0, 'SGD', 0.1, 1e-4, 20, 0, 128, 8, 1),
    'r50_webface12m': Recipe('wf12m_r50.py', 'r50', 'webface12m', COS, 1.0, 'SGD', 0.1, 5e-4, 20, 0, 128, 8, 1),
    'r100_webface12m': Recipe('wf12m_r100.py', 'r100', 'webface12m', COS, 1.0, 'SGD', 0.1, 5e-4, 20, 0, 128, 8, 1),
    'mbf_webface12m': Recipe('wf12m_mbf.py', 'mbf', 'webface12m', COS, 1.0, 'SGD', 0.1, 1e-4, 20, 0, 128, 8, 1),
    'r100_webface12m_pfc02': Recipe('wf12m_pfc02_r100.py', 'r100', 'webface12m', COS, 0.2, 'SGD', 0.1, 5e-4, 20, 0,
                                    128, 8, 1),
    'r50_webface42m': Recipe('wf42m_pfc02_8gpus_r50_bs4k.py', 'r50', 'webface42m', COS, 0.2, 'SGD', 0.4, 5e-4, 20, 2,
                             512, 8, 1),
    'r100_webface42m': Recipe('wf42m_pfc02_r100.py', 'r100', 'webface42m', COS, 0.2, 'SGD', 0.1, 5e-4, 20, 0,
                              128, 8, 1),
    'mbf_webface42m': Recipe('wf42m_pfc02_16gpus_mbf_bs8k.py', 'mbf', 'webface42m', COS, 0.2, 'SGD', 0.4, 1e-4, 20, 2,
                             512, 16, 1),
    'vit_t_webface42m': Recipe('wf42m_pfc03_40epoch_8gpu_vit_t.py', 'vit_t', 'webface42m', COS, 0.3, 'AdamW', 1e-3,
                               0.1, 40, 4, 512, 8, 1),
    'vit_s_webface42m': Recipe('wf42m_pfc03_40epoch_64gpu_vit_s.py', 'vit_s', 'webface42m', COS, 0.3, 'AdamW', 1e-3,
                               0.1, 40, 4, 384, 64, 1),
    'vit_b_webface42m': Recipe('wf42m_pfc03_40epoch_8gpu_vit_b.py', 'vit_b', 'webface42m', COS, 0.3, 'AdamW', 1e-3,
                               0.1, 40, 4, 256, 8, 12),
    'vit_l_webface42m': Recipe('wf42m_pfc03_40epoch_64gpu_vit_l.py', 'vit_l', 'webface42m', COS, 0.3, 'AdamW', 1e-3,
                               0.1, 40, 4, 384, 64, 1),
}
# num_classes, num_image of the recipes' data sets
DATASET_SIZES = {'ms1mv3': (93431, 5179510), 'glint360k': (360232, 17091657), 'webface4m': (205990, 4235242),
                 'webface12m': (617970, 12720066), 'webface42m': (2059906, 42474557)}
# (drop_path_rate, mask_ratio) of the recipes' ViT variants: vit_{t,s}_dp005_mask0, vit_{b,l}_dp005_mask_005
VIT_OPTIONS = {'vit_t': (0.05, 0.0), 'vit_s': (0.05, 0.0), 'vit_b': (0.05, 0.05), 'vit_l': (0.05, 0.05)}


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
    assert [ev.name for ev in cfg.val_evaluators] == list(TARGETS)

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


def test_every_shipped_config_is_in_a_table():
    found = {osp.splitext(osp.basename(p))[0] for p in glob.glob(osp.join(ROOT, 'configs', 'arcface', '*.py'))}
    assert found == set(TABLE) | set(RECIPES) | {'vit_synthetic_cpu'}


def _reference_lr(l, base_lr, warmup, total):
    """arcface_torch's PolynomialLRWarmup (power 1) in closed form at scheduler step l >= 1 (0 with no warmup)."""
    if warmup and l <= warmup:
        return base_lr * l / warmup
    return base_lr * (1.0 - (min(total, l) - warmup) / (total - warmup))


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_recipe_config_matches_arcface_torch(name):
    r = RECIPES[name]
    ms.set_context(mode=ms.PYNATIVE_MODE)
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'arcface', name + '.py'))
    check_config(cfg)
    num_classes, num_images = DATASET_SIZES[r.dataset]
    assert cfg.train_dataloader.num_images == num_images   # the dry run's steps per epoch without the data
    backbone, head, loss = cfg.model.backbone, cfg.model.head, cfg.model.loss
    assert backbone.type == BACKBONES[r.family] and backbone.embedding_size == 512
    assert (head.type, head.num_classes, head.sample_rate, head.embedding_size) == \
        ('PartialFCHead', num_classes, r.rate, 512)
    assert (loss.type, loss.s, loss.m) == (r.loss[0], 64.0, r.loss[1])
    if r.family.startswith('vit'):
        assert (backbone.drop_path_rate, backbone.mask_ratio) == VIT_OPTIONS[r.family]
    opt = cfg.optimizer
    assert (opt.type, opt.lr, opt.weight_decay) == (r.optimizer, r.lr, r.wd)
    assert opt.get('accumulative_counts', 1) == r.accum
    if r.optimizer == 'SGD':
        assert opt.momentum == 0.9
    else:
        assert (tuple(opt.betas), opt.eps) == ((0.9, 0.999), 1e-8)    # torch.optim.AdamW's defaults
    assert (cfg.lr_schedule.type, cfg.lr_schedule.power, cfg.lr_schedule.warmup_epochs) == ('PolyLR', 1.0, r.warmup)
    assert cfg.train_cfg.max_epochs == r.epochs
    assert cfg.train_dataloader.batch_size == r.batch
    assert cfg.train_dataloader.dataset.data_root == f'data/{r.dataset}'
    assert [ev.bin_path for ev in cfg.val_evaluators] == [f'data/{r.dataset}/{t}.bin' for t in TARGETS]
    assert cfg.runtime.clip_grad_norm == 5.0 and cfg.runtime.clip_prefixes == ['backbone.']

    # The schedule over the recipe's run: arcface_torch counts num_image // (batch * GPUs) steps per epoch and
    # steps its scheduler per micro-batch; facekit steps per optimizer step, so with accumulation an epoch has
    # 1/accum as many steps and warmup and decay cover the same share of training.
    ipe = num_images // (r.batch * r.gpus) // r.accum
    cfg = _reduced(cfg)
    model = MODELS.build(cfg.model.to_dict())
    optimizer = build_optimizer(cfg.optimizer.to_dict(), model)
    assert optimizer.facekit_base_lr == pytest.approx(r.lr)       # as written: facekit never rescales the lr
    sched = build_lr_schedule(cfg.lr_schedule.to_dict(), optimizer.facekit_base_lr, ipe, cfg.train_cfg.max_epochs)
    warmup, total = r.warmup * ipe, r.epochs * ipe
    assert (sched.warmup_iters, sched.max_iters) == (warmup, total)
    for it in sorted({1, warmup // 2, warmup, warmup + 1, (warmup + total) // 2, total - 1}):
        assert sched(it) == pytest.approx(_reference_lr(it, r.lr, warmup, total), rel=1e-12, abs=1e-15), it
    loss = model(ms.Tensor(np.zeros((2, 3, 112, 112), np.float32)), ms.Tensor(np.array([0, 1], np.int32)))
    assert np.isfinite(float(loss.asnumpy()))


def _model_zoo_recipe_rows():
    """The rows of docs/model_zoo.md's recipe table as {config name: [cells]}."""
    with open(osp.join(ROOT, 'docs', 'model_zoo.md'), encoding='utf-8') as f:
        lines = f.read().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith('| config | arcface_torch recipe |'))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith('|'):
            break
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        rows[cells[0].strip('`')] = cells[1:]
    return rows


def test_model_zoo_recipe_table_matches_the_recipes():
    rows = _model_zoo_recipe_rows()
    assert set(rows) == set(RECIPES)
    for name, r in RECIPES.items():
        source, loss, rate, batch, accum, gpus, global_batch, optimizer, lr, wd, epochs, warmup = rows[name][:12]
        assert source == r.source, name
        assert (loss, float(rate)) == ({'ArcFaceLoss': 'ArcFace', 'CosFaceLoss': 'CosFace'}[r.loss[0]], r.rate), name
        assert (int(batch), int(accum), int(gpus)) == (r.batch, r.accum, r.gpus), name
        assert int(global_batch.replace(',', '')) == r.batch * r.accum * r.gpus, name
        assert (optimizer, float(lr), float(wd)) == (r.optimizer, r.lr, r.wd), name
        assert (int(epochs), int(warmup)) == (r.epochs, r.warmup), name


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
