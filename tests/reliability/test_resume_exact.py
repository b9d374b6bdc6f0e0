"""Resume continues a run exactly: interrupted at random iterations with the shipped augmentation
(random flip) on, a resumed run's loss and lr sequences, global RNG draws and final state (every
parameter, BN statistics and optimizer moments included) equal an uninterrupted run's, bit for bit;
best_<name>.ckpt is never replaced by a worse model after a resume.

Measured before writing the exact comparisons: the same shrunk config run twice uninterrupted in
one process on MindSpore's CPU kernels gives identical losses and weights (np.array_equal), so no
tolerance is needed.
"""
import os.path as osp
import random

import numpy as np
import pytest

import facekit  # noqa: F401  (registries)
from facekit.config import Config
from facekit.datasets import build_dataloader
from facekit.datasets.synthetic import SyntheticIdentities
from facekit.engine import Hook, Runner
from facekit.engine.optim import optimizer_state
from facekit.registry import EVALUATORS, HOOKS
from facekit.utils.checkpoint import load_checkpoint

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(REPO, 'configs', 'arcface', 'vit_synthetic_cpu.py')
ITERS_PER_EPOCH, EPOCHS = 4, 3          # 6 classes x 6 images, batch 8 (drop_remainder)


class Interrupted(Exception):
    """Raised by StopAtHook: the run dies right after iteration k's checkpoint is on disk."""


@HOOKS.register_module(force=True)
class StopAtHook(Hook):
    """Raise ``Interrupted`` after iteration ``at``: by default after CheckpointHook (70) and
    EvalHook (80) ran; ``priority=75`` dies between the checkpoint and the evaluation."""

    def __init__(self, at, priority=90):
        self.at = int(at)
        self.priority = int(priority)

    def after_train_iter(self, runner):
        if runner.iter == self.at:
            raise Interrupted(f'stopped at iteration {self.at}')


DRAWS = {}


@HOOKS.register_module(force=True)
class GlobalDrawHook(Hook):
    """Record one draw from Python's and NumPy's global RNGs per iteration (keyed by work_dir)."""

    def after_train_iter(self, runner):
        DRAWS.setdefault(runner.work_dir, []).append((runner.iter, random.random(), np.random.random()))


SCRIPT = {'by_iter': {}, 'iter': None, 'evaluated': []}


@HOOKS.register_module(force=True)
class IterProbeHook(Hook):
    """Tell ScriptedEvaluator which iteration's weights it evaluates (runs before every other hook)."""
    priority = 1

    def before_run(self, runner):
        SCRIPT['iter'] = runner.iter

    def after_train_iter(self, runner):
        SCRIPT['iter'] = runner.iter


@EVALUATORS.register_module(force=True)
class ScriptedEvaluator:
    """Accuracy ``SCRIPT['by_iter'][iteration]``: like a real evaluator, a function of the weights."""

    def __init__(self, name='scripted'):
        self.name = name

    def evaluate(self, embed_fn):
        SCRIPT['evaluated'].append(SCRIPT['iter'])
        return {'name': self.name, 'accuracy': SCRIPT['by_iter'][SCRIPT['iter']], 'accuracy_std': 0.0}


def _cfg(work_dir, hooks, evaluators=None, max_epochs=EPOCHS, resume=None):
    cfg = Config.fromfile(CONFIG)
    cfg.merge_from_dict({
        'work_dir': str(work_dir), 'train_dataloader.batch_size': 8,
        'train_dataloader.dataset.num_classes': 6, 'train_dataloader.dataset.images_per_class': 6,
        'model.head.num_classes': 6, 'model.backbone.embed_dim': 16, 'model.backbone.depth': 1,
        'model.backbone.embedding_size': 16, 'model.head.embedding_size': 16,
        'train_cfg.max_epochs': max_epochs, 'val_evaluators': evaluators})
    cfg.hooks = [dict(type='LoggerHook', interval=100, progress_bar=False)] + list(hooks)
    if resume:
        cfg.resume = resume
    return cfg


def _final_state(runner):
    state = {n: p.asnumpy().copy() for n, p in runner.model.parameters_and_names()}
    for n, p in optimizer_state(runner.optimizer, runner.model_param_names).items():
        state['optimizer.' + n] = p.asnumpy().copy()
    return state


def _train(cfg):
    runner = Runner.from_cfg(cfg)
    try:
        history = runner.train()
    finally:
        runner.close()
    return runner, history


def test_shipped_pipeline_flips_at_random():
    cfg = Config.fromfile(CONFIG)
    assert dict(type='RandomHorizontalFlip', prob=0.5) in [dict(t) for t in cfg.train_dataloader.dataset.pipeline]


def test_flip_is_a_function_of_seed_epoch_and_sample():
    """Each sample's flip follows default_rng([seed, epoch, index]).random() < prob, in any loader,
    after an unfinished epoch and from a fresh loader started at a later epoch."""
    ds_cfg = dict(type='SyntheticIdentities', num_classes=4, images_per_class=4, image_size=16,
                  pipeline=[dict(type='RandomHorizontalFlip', prob=0.5), dict(type='Normalize'), dict(type='ToCHW')])
    cfg = dict(batch_size=4, num_workers=2, python_multiprocessing=False, seed=9, dataset=ds_cfg)
    raw = SyntheticIdentities(4, 4, image_size=16)
    flips = 0
    loader = build_dataloader(cfg)
    epochs = [list(loader) for _ in range(2)]
    for epoch, batches in enumerate(epochs):
        order = np.random.default_rng([9, epoch]).permutation(16)
        imgs = np.concatenate([b[0] for b in batches])
        for pos, idx in enumerate(order):
            flip = np.random.default_rng([9, epoch, int(idx)]).random() < 0.5
            img = raw.get_image(int(idx))
            expect = (img[:, ::-1] if flip else img).transpose(2, 0, 1).astype(np.float32) / 127.5 - 1
            np.testing.assert_allclose(imgs[pos], expect, atol=1e-6)
            flips += flip
    assert 8 <= flips <= 24                  # both decisions occur (32 draws at p = 0.5)
    fresh = build_dataloader(cfg)
    fresh.set_epoch(1)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(list(fresh), epochs[1]))


@pytest.mark.slow
def test_interrupted_runs_resume_identically(tmp_path):
    n_iters = ITERS_PER_EPOCH * EPOCHS
    record = [dict(type='GlobalDrawHook')]
    save_every_iter = [dict(type='CheckpointHook', by_epoch=False, interval=1, max_keep_ckpts=0)]
    full_dir = tmp_path / 'full'
    full, hist_full = _train(_cfg(full_dir, save_every_iter + record))
    want = _final_state(full)
    assert len(hist_full) == n_iters
    # a couple of interruption points, one of them mid-epoch, drawn with a seeded RNG
    ks = sorted(np.random.default_rng(15).choice(np.arange(1, n_iters), size=2, replace=False).tolist())
    if all(k % ITERS_PER_EPOCH == 0 for k in ks):
        ks[0] += 1
    for k in ks:
        work = tmp_path / f'cut_{k}'
        with pytest.raises(Interrupted):
            _train(_cfg(work, save_every_iter + record + [dict(type='StopAtHook', at=k)]))
        assert osp.isfile(work / f'iter_{k}.ckpt')
        resumed, hist = _train(_cfg(work, save_every_iter + record, resume='auto'))
        assert [h[0] for h in hist] == list(range(k + 1, n_iters + 1))
        assert hist == hist_full[k:], f'interrupted at {k}: (iter, lr, loss) differ from the uninterrupted run'
        draws = DRAWS[str(work)]
        assert draws[k:] == DRAWS[str(full_dir)][k:], f'interrupted at {k}: global RNG draws differ'
        got = _final_state(resumed)
        assert sorted(got) == sorted(want)
        differ = [n for n in want if not np.array_equal(got[n], want[n])]
        assert not differ, f'interrupted at {k}: final values differ in {differ[:8]}'
        assert any('moving_variance' in n for n in want)     # BN statistics are compared too


@pytest.mark.slow
@pytest.mark.parametrize('stop_priority, evaluated', [
    (90, [1, 2, 2, 3, 4]),     # killed after iteration 2's evaluation: it runs again on resume
    (75, [1, 2, 3, 4]),        # killed between iteration 2's checkpoint and its evaluation
])
def test_best_checkpoint_is_not_overwritten_by_a_worse_model_after_resume(tmp_path, stop_priority, evaluated):
    # the best is iteration 1's; every later one is worse, including the replayed iteration 2
    SCRIPT.update(by_iter={1: 0.9, 2: 0.5, 3: 0.6, 4: 0.7}, evaluated=[])
    hooks = [dict(type='IterProbeHook'), dict(type='CheckpointHook', by_epoch=False, interval=1, max_keep_ckpts=0),
             dict(type='EvalHook', by_epoch=False, interval=1, final_eval=False)]
    evaluators = [dict(type='ScriptedEvaluator', name='scripted')]
    with pytest.raises(Interrupted):
        _train(_cfg(tmp_path, hooks + [dict(type='StopAtHook', at=2, priority=stop_priority)], evaluators,
                    max_epochs=1))
    saved = load_checkpoint(str(tmp_path / 'iter_2.ckpt'))    # written before iteration 2's evaluation
    assert float(saved['hook_state.EvalHook.best.scripted'].asnumpy()) == 0.9
    assert float(saved['hook_state.EvalHook.evaluated_at'].asnumpy()) == 1
    runner, _ = _train(_cfg(tmp_path, hooks, evaluators, max_epochs=1, resume='auto'))
    assert SCRIPT['evaluated'] == evaluated
    best = load_checkpoint(str(tmp_path / 'best_scripted.ckpt'))
    assert int(best['train_state.iter'].asnumpy()) == 1, 'a worse model replaced best_scripted.ckpt after resume'
    assert [h.best for h in runner.hooks if type(h).__name__ == 'EvalHook'] == [{'scripted': 0.9}]
