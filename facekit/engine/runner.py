"""The training loop: a compiled train step driven by an LR schedule, hooks and checkpoints.

``Runner.from_cfg(cfg)`` builds everything from a config (model, dataloader, optimizer, LR
schedule, hooks, evaluators); ``runner.train()`` runs it. State that a checkpoint carries:
model parameters (``backbone.*``, ``head.*``), optimizer state (``optimizer.*``: momenta/moments,
step counter), and ``train_state.*`` (epoch, iter, loss scale and its counter, seed, world size).
"""
import glob
import json
import logging
import math
import os
import os.path as osp
import re
import sys
import time

import numpy as np

from ..utils.checkpoint import load_checkpoint, load_state_into, save_checkpoint
from . import dist
from .amp import apply_amp, parse_loss_scale
from .hooks import append_metrics_line, build_hooks
from .lr_schedules import build_lr_schedule
from .optim import build_optimizer, optimizer_state

__all__ = ['Runner', 'NonFiniteLossError', 'find_latest_checkpoint']

_OPT_PREFIX = 'optimizer.'
_STATE_PREFIX = 'train_state.'


class NonFiniteLossError(RuntimeError):
    """The loss stayed NaN/Inf for ``nan_patience`` consecutive steps."""


def find_latest_checkpoint(work_dir):
    """The checkpoint named in ``work_dir/last_checkpoint``, else the newest ``*_N.ckpt``, else None."""
    marker = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(marker):
        with open(marker, encoding='utf-8') as f:
            path = f.read().strip()
        if path and not osp.isabs(path):
            path = osp.join(work_dir, path)
        if osp.isfile(path):
            return path
    found = []
    for path in glob.glob(osp.join(work_dir, '*.ckpt')):
        m = re.match(r'(epoch|iter)_(\d+)\.ckpt$', osp.basename(path))
        if m:
            found.append((osp.getmtime(path), path))
    return max(found)[1] if found else None


def _to_numpy_batch(batch):
    if isinstance(batch, dict):
        img, label = batch['img'], batch['label']
    else:
        img, label = batch[0], batch[1]
    if hasattr(img, 'asnumpy'):
        img = img.asnumpy()
    if hasattr(label, 'asnumpy'):
        label = label.asnumpy()
    return np.asarray(img, dtype=np.float32), np.asarray(label).astype(np.int32)


class Runner:
    """Train ``model`` with ``optimizer`` on ``train_dataloader``.

    Args:
        model: ``nn.Cell`` with ``construct(img, label) -> scalar loss`` (a FaceRecognizer).
        train_dataloader: iterable of ``(img (B,3,H,W) float32, label (B,) int)`` batches (numpy or
            Tensor) with ``len()`` = batches per epoch; ``set_epoch(e)`` is called when present so
            a resumed run sees the same order.
        optimizer: a facekit optimizer (``engine.optim``) over ``model``.
        lr_schedule: callable ``iter -> base lr``.
        max_epochs: epochs to train.
        work_dir: where logs, config and checkpoints go.
        hooks: list of Hook objects or hook config dicts.
        evaluators: list of objects with ``evaluate(model) -> {target: {metric: value}}``.
        mode: 'graph' (compiled step) or 'pynative'; the context is set by the caller.
        loss_scale: see ``amp.parse_loss_scale``.
        clip_grad_norm: max global norm of the clipped gradients (None: no clipping).
        clip_prefixes: parameter-name prefixes clipped (default the backbone, as the reference).
        nan_patience: stop after this many consecutive non-finite losses.
        batch_size: per-rank batch size (for samples/sec); default read from the dataloader.
        seed: stored in checkpoints.
        cfg: the Config, dumped to ``work_dir`` and kept for reference.
    """

    def __init__(self, model, train_dataloader, optimizer, lr_schedule, max_epochs, work_dir, hooks=(),
                 evaluators=(), mode='graph', loss_scale=None, clip_grad_norm=None,
                 clip_prefixes=('backbone.',), nan_patience=5, batch_size=None, seed=None, cfg=None,
                 max_iters=None):
        from .train_step import TrainStep
        self.model = model
        self.train_dataloader = train_dataloader
        self.optimizer = optimizer
        self.lr_schedule = lr_schedule
        self.max_epochs = int(max_epochs)
        self.work_dir = osp.abspath(work_dir)
        self.evaluators = list(evaluators or [])
        self.mode = mode
        self.cfg = cfg
        self.seed = seed
        self.nan_patience = int(nan_patience)
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.iters_per_epoch = len(train_dataloader)
        if self.iters_per_epoch <= 0:
            raise ValueError('the training dataloader yields no batch per epoch: the dataset is smaller than '
                             'one batch (with drop_remainder=True) or empty')
        self.max_iters = int(max_iters) if max_iters else self.max_epochs * self.iters_per_epoch
        self.batch_size = int(batch_size or getattr(train_dataloader, 'batch_size', 0) or 0)
        self.global_batch_size = self.batch_size * self.world_size
        if _head_is_sharded(model):
            # Each rank's PartialFC shard holds different classes: its gradient must not be
            # averaged with other ranks' (MindSpore's reducer skips layerwise-parallel params).
            for p in model.head.get_parameters():
                p.layerwise_parallel = True
        ls = parse_loss_scale(loss_scale)
        self.loss_scale_mode = ls.mode
        self.train_step = TrainStep(model, optimizer, ls, clip_grad_norm=clip_grad_norm,
                                    clip_prefixes=clip_prefixes,
                                    grad_reducer=dist.build_grad_reducer(optimizer.parameters))
        self.hooks = build_hooks(hooks)
        self.model_param_names = {p.name for p in model.get_parameters()}
        self.epoch = 0
        self.iter = 0
        self.skipped_steps = 0
        self.stopped_on_nonfinite = False
        self.last_eval_iter = -1
        self.last = {}
        self.history = []           # (iter, lr, loss) of every step, for tests and plots
        self.eval_results = {}
        self._embed_fn = None
        os.makedirs(self.work_dir, exist_ok=True)
        self._logger = self._make_logger()

    # --- building from a config -----------------------------------------------------------
    @classmethod
    def from_cfg(cls, cfg, train_dataloader=None, model=None):
        """Build a Runner from a Config (see configs/_base_/default_runtime.py for the keys)."""
        from ..registry import EVALUATORS, MODELS
        runtime = cfg.get('runtime', {}) or {}
        device_target = runtime.get('device_target_resolved', runtime.get('device_target', 'CPU'))
        if model is None:
            model = MODELS.build(cfg.model.to_dict() if hasattr(cfg.model, 'to_dict') else dict(cfg.model))
        model = apply_amp(model, runtime.get('amp_level', 'O0'), device_target,
                          runtime.get('allow_cpu_fp16', False))
        if train_dataloader is None:
            train_dataloader = build_train_dataloader(cfg)
        train_cfg = cfg.get('train_cfg', {}) or {}
        max_epochs = train_cfg.get('max_epochs')
        if not max_epochs or max_epochs <= 0:
            raise ValueError(f'train_cfg.max_epochs must be a positive number, got {max_epochs!r}')
        optimizer = build_optimizer(_plain(cfg.optimizer), model)
        ipe = len(train_dataloader)
        # train_cfg.max_iters (optional) stops early, e.g. a CI run of a real config; the LR
        # schedule is then compressed into those iterations so it still warms up and decays.
        max_iters = train_cfg.get('max_iters')
        if max_iters is not None and (int(max_iters) <= 0 or int(max_iters) > max_epochs * ipe):
            raise ValueError(f'train_cfg.max_iters={max_iters} must be in [1, max_epochs * iters_per_epoch = '
                             f'{max_epochs * ipe}]')
        sched_ipe = int(max_iters) / max_epochs if max_iters else ipe
        lr_cfg = _plain(cfg.get('lr_schedule', dict(type='ConstantLR')))
        lr_schedule = build_lr_schedule(lr_cfg, optimizer.facekit_base_lr, sched_ipe, max_epochs)
        evaluators = []
        if dist.is_main_process():
            for ev in cfg.get('val_evaluators', []) or []:
                evaluators.append(EVALUATORS.build(_plain(ev)))
        work_dir = cfg.get('work_dir')
        return cls(model, train_dataloader, optimizer, lr_schedule, max_epochs, work_dir,
                   hooks=default_hooks(cfg),
                   evaluators=evaluators,
                   mode=runtime.get('mode', 'graph'),
                   loss_scale=_plain(runtime.get('loss_scale')),
                   clip_grad_norm=runtime.get('clip_grad_norm'),
                   clip_prefixes=tuple(runtime.get('clip_prefixes', ('backbone.',))),
                   nan_patience=runtime.get('nan_patience', 5),
                   batch_size=cfg.train_dataloader.get('batch_size'),
                   seed=runtime.get('seed'), cfg=cfg, max_iters=max_iters)

    # --- logging --------------------------------------------------------------------------
    def _make_logger(self):
        logger = logging.getLogger(f'facekit.train.{id(self)}')
        logger.setLevel(logging.INFO)
        logger.propagate = False
        if self.rank == 0:
            fmt = logging.Formatter('%(asctime)s %(message)s', '%Y-%m-%d %H:%M:%S')
            fh = logging.FileHandler(osp.join(self.work_dir, 'train.log'))
            fh.setFormatter(fmt)
            logger.addHandler(fh)
            sh = logging.StreamHandler(sys.stdout)
            sh.setFormatter(fmt)
            logger.addHandler(sh)
        return logger

    def log(self, msg):
        """Write ``msg`` to the console and train.log (rank 0 only)."""
        self._logger.info(msg)
        for h in self._logger.handlers:
            h.flush()

    def close(self):
        for h in list(self._logger.handlers):
            h.close()
            self._logger.removeHandler(h)

    # --- checkpoints ----------------------------------------------------------------------
    def checkpoint_files(self, path):
        """Files that make up checkpoint ``path`` (rank files of sharded state included)."""
        base = path[:-len('.ckpt')]
        return [path] + sorted(glob.glob(base + '.rank*.ckpt'))

    def list_checkpoints(self):
        """Periodic checkpoints (epoch_*/iter_*) in work_dir, oldest first."""
        found = []
        for path in glob.glob(osp.join(self.work_dir, '*.ckpt')):
            if re.match(r'(epoch|iter)_(\d+)\.ckpt$', osp.basename(path)):
                found.append((osp.getmtime(path), path))
        return [p for _, p in sorted(found)]

    def _state_entries(self):
        entries = {}
        for name, param in self.model.parameters_and_names():
            entries[name] = param
        for name, param in optimizer_state(self.optimizer, self.model_param_names).items():
            entries[_OPT_PREFIX + name] = param
        extra = {
            _STATE_PREFIX + 'epoch': np.int64(self.epoch),
            _STATE_PREFIX + 'iter': np.int64(self.iter),
            _STATE_PREFIX + 'loss_scale': np.float32(self.train_step.loss_scale.asnumpy()),
            _STATE_PREFIX + 'loss_scale_clean_steps': np.int32(self.train_step.clean_steps.asnumpy()),
            _STATE_PREFIX + 'seed': np.int64(self.seed if self.seed is not None else -1),
            _STATE_PREFIX + 'world_size': np.int64(self.world_size),
            _STATE_PREFIX + 'skipped_steps': np.int64(self.skipped_steps),
        }
        return entries, extra

    def save_checkpoint(self, path):
        """Write the full training state to ``path`` (rank 0) atomically; update last_checkpoint.

        Data parallel keeps every replicated parameter identical across ranks, so rank 0's file
        holds them. A sharded head (PartialFC with world_size > 1) differs per rank: each other
        rank writes its head shard and the matching optimizer state to ``<path>.rank<R>.ckpt``.
        """
        entries, extra = self._state_entries()
        if self.rank == 0:
            save_checkpoint(entries, path, extra=extra)
            if re.match(r'(epoch|iter)_(\d+)\.ckpt$', osp.basename(path)):
                tmp = osp.join(self.work_dir, '.last_checkpoint.tmp')
                with open(tmp, 'w', encoding='utf-8') as f:
                    f.write(osp.basename(path))
                os.replace(tmp, osp.join(self.work_dir, 'last_checkpoint'))
        elif _head_is_sharded(self.model):
            local = {k: v for k, v in entries.items() if _is_head_key(k)}
            save_checkpoint(local, path[:-len('.ckpt')] + f'.rank{self.rank}.ckpt', extra=extra)
        dist.barrier()

    def _reshard_head(self, path, params, saved_world):
        """Replace head-shard entries of ``params`` by this rank's rows of the full (re-assembled) head.

        Shards are consecutive class ranges in rank order, so concatenating the saved ranks'
        rows gives the full centre matrix, which is then cut for the current rank/world size.
        """
        head = self.model.head
        start, num_local = head.class_start, head.num_local
        parts = [params]
        base = path[:-len('.ckpt')]
        for r in range(1, saved_world):
            rank_file = f'{base}.rank{r}.ckpt'
            if not osp.isfile(rank_file):
                raise FileNotFoundError(f'{path} was written by {saved_world} ranks with a sharded head, '
                                        f'but its shard file {rank_file} is missing')
            parts.append(load_checkpoint(rank_file))
        import mindspore as ms
        for key in [k for k in params if _is_head_key(k)]:
            full = np.concatenate([p[key].asnumpy() for p in parts], axis=0) if saved_world > 1 \
                else params[key].asnumpy()
            if full.shape[0] != head.num_classes:
                continue    # not a per-class tensor (no such head state today; kept as saved)
            params[key] = ms.Parameter(ms.Tensor(full[start:start + num_local]), name=key)
        return params

    def resume(self, path):
        """Restore model, optimizer, loss scale, epoch and iteration from ``path``.

        A PartialFC head saved by a different number of ranks is re-sharded for this one.
        """
        params = load_checkpoint(path)
        key_world = _STATE_PREFIX + 'world_size'
        saved_world = int(params[key_world].asnumpy()) if key_world in params else 1
        saved_sharded = saved_world > 1 and osp.isfile(path[:-len('.ckpt')] + '.rank1.ckpt')
        if saved_sharded or _head_is_sharded(self.model):
            params = self._reshard_head(path, params, saved_world if saved_sharded else 1)
            if saved_world != self.world_size:
                self.log(f'{path}: PartialFC centres re-sharded from {saved_world} to {self.world_size} rank(s)')
        model_params = {k: v for k, v in params.items() if not k.startswith((_OPT_PREFIX, _STATE_PREFIX))}
        load_state_into(self.model, model_params, strict=True)
        opt_state = optimizer_state(self.optimizer, self.model_param_names)
        missing = [n for n in opt_state if _OPT_PREFIX + n not in params]
        if missing:
            raise ValueError(f'{path} lacks optimizer state {missing[:5]} (was it written with another optimizer '
                             f'type? use --load-from to start a fresh optimizer)')
        import mindspore as ms
        for name, param in opt_state.items():
            value = params[_OPT_PREFIX + name]
            if tuple(value.shape) != tuple(param.shape):
                raise ValueError(f'{path}: optimizer state {name} has shape {tuple(value.shape)}, '
                                 f'the optimizer expects {tuple(param.shape)}')
            param.set_data(ms.Tensor(value.asnumpy()).astype(param.dtype))
        self.epoch = int(params[_STATE_PREFIX + 'epoch'].asnumpy())
        self.iter = int(params[_STATE_PREFIX + 'iter'].asnumpy())
        self.skipped_steps = int(params[_STATE_PREFIX + 'skipped_steps'].asnumpy())
        self.train_step.loss_scale.set_data(ms.Tensor(np.float32(params[_STATE_PREFIX + 'loss_scale'].asnumpy())))
        self.train_step.clean_steps.set_data(
            ms.Tensor(np.int32(params[_STATE_PREFIX + 'loss_scale_clean_steps'].asnumpy())))
        self.log(f'resumed from {path}: epoch {self.epoch}, iter {self.iter}')

    def load_from(self, path):
        """Fine-tuning start: load the backbone from ``path``; the head too when its shapes match."""
        params = load_checkpoint(path)
        backbone = {k[len('backbone.'):]: v for k, v in params.items() if k.startswith('backbone.')}
        if not backbone:
            raise ValueError(f'{path} has no backbone.* parameters to load')
        load_state_into(self.model.backbone, backbone, strict=True)
        head = {k[len('head.'):]: v for k, v in params.items() if k.startswith('head.')}
        head_params = dict(self.model.head.parameters_and_names())
        same = head and set(head) == set(head_params) and all(
            tuple(head[n].shape) == tuple(p.shape) for n, p in head_params.items())
        if same:
            load_state_into(self.model.head, head, strict=True)
            self.log(f'loaded backbone and head from {path}')
        else:
            self.log(f'loaded backbone from {path}; head re-initialised (its classes/shapes differ or it is absent)')

    # --- evaluation -----------------------------------------------------------------------
    def evaluate(self):
        """Run every evaluator on the model (inference mode); append a metrics JSON line.

        Returns ``{target name: metrics dict}`` (each evaluator's ``evaluate`` result).
        """
        results = {}
        if not self.evaluators:
            return results
        if self._embed_fn is None:
            from ..evaluation import as_embed_fn
            # Built once, so the embedding graph compiles once and sees the trained weights.
            self._embed_fn = as_embed_fn(self.model)
        self.model.set_train(False)
        try:
            for ev in self.evaluators:
                r = ev.evaluate(self._embed_fn)
                results[r.get('name', getattr(ev, 'name', type(ev).__name__))] = r
        finally:
            self.model.set_train(True)
        self.last_eval_iter = self.iter
        self.eval_results = results
        record = {'epoch': self.epoch, 'iter': self.iter}
        for name, r in results.items():
            record[name] = {k: _jsonable(v) for k, v in r.items()
                            if k not in ('tpr', 'fpr', 'thresholds', 'name') and np.ndim(v) == 0}
        append_metrics_line(osp.join(self.work_dir, 'metrics.jsonl'), record)
        summary = ', '.join(f"{n} {r.get('accuracy', float('nan')):.5f}" for n, r in results.items())
        self.log(f'eval at iter {self.iter}: {summary}')
        return results

    # --- the loop -------------------------------------------------------------------------
    def _call_hooks(self, stage):
        for h in self.hooks:
            getattr(h, stage)(self)

    def train(self):
        """Train until ``max_iters``; returns ``self.history`` [(iter, lr, loss), ...]."""
        import mindspore as ms
        self.model.set_train(True)
        if self.cfg is not None and self.rank == 0:
            self.cfg.dump(osp.join(self.work_dir, osp.basename(self.cfg.filename or 'config.py')))
        self._call_hooks('before_run')
        self.log(f'training: {self.max_iters} iterations ({self.max_epochs} epochs x {self.iters_per_epoch}), '
                 f'batch {self.batch_size} x {self.world_size} rank(s), mode {self.mode}, work_dir {self.work_dir}')
        bad_run = 0
        last_good = None
        while self.iter < self.max_iters:
            epoch = self.iter // self.iters_per_epoch
            self.epoch = epoch
            if hasattr(self.train_dataloader, 'set_epoch'):
                self.train_dataloader.set_epoch(epoch)
            self._call_hooks('before_train_epoch')
            skip = self.iter - epoch * self.iters_per_epoch
            data_iter = iter(self.train_dataloader)
            t_data = time.perf_counter()
            for i, batch in enumerate(data_iter):
                if i < skip:
                    t_data = time.perf_counter()
                    continue
                if i >= self.iters_per_epoch or self.iter >= self.max_iters:
                    break
                img, label = _to_numpy_batch(batch)
                data_time = time.perf_counter() - t_data
                lr = self.lr_schedule(self.iter)
                t_step = time.perf_counter()
                loss_t, finite_t = self.train_step(ms.Tensor(img), ms.Tensor(label), ms.Tensor(np.float32(lr)))
                loss = float(loss_t.asnumpy())
                finite = bool(finite_t.asnumpy())
                step_time = time.perf_counter() - t_step
                finite_loss = math.isfinite(loss)
                if not finite:
                    self.skipped_steps += 1
                self.iter += 1
                self.last = dict(iter=self.iter, lr=lr, loss=loss, finite_loss=finite_loss, grads_finite=finite,
                                 data_time=data_time, step_time=step_time,
                                 loss_scale=float(self.train_step.loss_scale.asnumpy()))
                self.history.append((self.iter, lr, loss))
                if finite_loss:
                    bad_run = 0
                    last_good = (self.iter, lr, loss)
                else:
                    bad_run += 1
                    if bad_run >= self.nan_patience:
                        self._stop_nonfinite(bad_run, last_good)
                if self.iter == (epoch + 1) * self.iters_per_epoch:
                    self.epoch = epoch + 1
                self._call_hooks('after_train_iter')
                t_data = time.perf_counter()
            if self.iter == (epoch + 1) * self.iters_per_epoch:
                self.epoch = epoch + 1
                self._call_hooks('after_train_epoch')
            elif self.iter < self.max_iters:
                raise RuntimeError(f'the training dataloader stopped after {i + 1} batches in epoch {epoch}, '
                                   f'but len() promised {self.iters_per_epoch}')
        self._call_hooks('after_run')
        return self.history

    def _stop_nonfinite(self, bad_run, last_good):
        self.stopped_on_nonfinite = True
        ckpt = find_latest_checkpoint(self.work_dir)
        where = f'last good checkpoint: {ckpt}' if ckpt else 'no checkpoint was written yet'
        if last_good:
            good = f'last finite loss {last_good[2]:.5f} at iteration {last_good[0]} (lr {last_good[1]:.4e})'
        else:
            good = 'no finite loss was ever seen'
        msg = (f'loss was NaN/Inf for {bad_run} consecutive steps, ending at iteration {self.iter} '
               f'(epoch {self.epoch + 1}); {good}; {where}. Those steps were skipped (weights unchanged). '
               f'Lower optimizer.lr, enable runtime.clip_grad_norm or check the data.')
        self.log(msg)
        self._call_hooks('after_run')
        raise NonFiniteLossError(msg)


def _head_is_sharded(model):
    """True when the model's head holds only this rank's class centres (distributed PartialFC)."""
    head = getattr(model, 'head', None)
    return bool(getattr(head, 'distributed', False)) and getattr(head, 'world_size', 1) > 1


def _is_head_key(key):
    """Checkpoint names of head parameters and of optimizer state kept per head parameter."""
    if key.startswith(_OPT_PREFIX):
        key = key[len(_OPT_PREFIX):].split('.', 1)[-1]
    return key.startswith('head.')


def _plain(obj):
    if hasattr(obj, 'to_dict'):
        return obj.to_dict()
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj


def _jsonable(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


def default_hooks(cfg):
    """``cfg.hooks`` when given; else logger/checkpoint/eval hooks from ``runtime`` plus ``custom_hooks``."""
    if cfg.get('hooks') is not None:
        return [_plain(h) for h in cfg.hooks]
    runtime = cfg.get('runtime', {}) or {}
    hooks = [dict(type='LoggerHook', interval=runtime.get('log_interval', 50)),
             dict(type='CheckpointHook', interval=runtime.get('checkpoint_interval', 1),
                  max_keep_ckpts=runtime.get('max_keep_ckpts', 3))]
    if cfg.get('val_evaluators'):
        hooks.append(dict(type='EvalHook', interval=runtime.get('eval_interval', 1)))
    return hooks + [_plain(h) for h in cfg.get('custom_hooks', []) or []]


def build_train_dataloader(cfg):
    """Build ``cfg.train_dataloader`` through facekit.datasets, sharded by rank (a FaceDataLoader)."""
    from ..datasets import build_dataloader
    loader_cfg = _plain(cfg.train_dataloader)
    seed = (cfg.get('runtime', {}) or {}).get('seed')
    return build_dataloader(loader_cfg, rank=dist.get_rank(), world_size=dist.get_world_size(), seed=seed)
