"""The runner: set up a run from a config, train it (a compiled step driven by an LR schedule and
hooks), evaluate it, test a checkpoint.

    runner = Runner.from_cfg(Config.fromfile('configs/arcface/vit_synthetic_cpu.py'))
    runner.train()      # or runner.test() with cfg.load_from = a checkpoint

``from_cfg`` does the whole set-up: config checks (``ConfigCheckError``), the work_dir default
(``work_dirs/<config name>``), device, execution mode, seed, jit level and distributed init. The
training components (model, data loader, optimizer, schedule, hooks, evaluators) are built when
``train()`` starts, so ``test()`` never builds a training set or a classification head.
Checkpoint files and their state are ``engine.checkpoint``'s; the end-of-training evaluation is
``EvalHook.after_run``'s.
"""
import math
import os
import os.path as osp
import time

import numpy as np

from ..config import Config, to_plain
from ..utils.runtime import setup_runtime
from . import checkpoint as ckpt_io
from . import dist
from .amp import DEFAULT_AMP_LEVEL, apply_amp, parse_loss_scale, resolve_precision
from .config_check import ConfigCheckError, check_config, check_evaluators, check_keys, check_model, check_runtime
from .hooks import build_hooks
from .logger import RunLogger
from .lr_schedules import build_lr_schedule
from .optim import build_optimizer, check_accumulative_counts, split_accumulative_counts
from .visualizer import Visualizer, parse_visualizer_cfg

__all__ = ['Runner', 'NonFiniteLossError', 'default_hooks', 'build_train_dataloader', 'resolved_precision']


class NonFiniteLossError(RuntimeError):
    """Training diverged: ``nan_patience`` consecutive unhealthy steps (NaN/Inf loss or gradients),
    or a training state holding NaN/Inf at a checkpoint. The message (one line) names the
    iteration, the last finite loss and the last good checkpoint."""


def _to_numpy_batch(batch):
    img, label = (batch['img'], batch['label']) if isinstance(batch, dict) else (batch[0], batch[1])
    img = img.asnumpy() if hasattr(img, 'asnumpy') else img
    label = label.asnumpy() if hasattr(label, 'asnumpy') else label
    return np.asarray(img, dtype=np.float32), np.asarray(label).astype(np.int32)


class Runner:
    """Train ``model`` with ``optimizer`` on ``train_dataloader`` (or build them from ``cfg``).

    Args:
        model: ``nn.Cell`` with ``construct(img, label) -> scalar loss`` (a FaceRecognizer).
        train_dataloader: iterable of ``(img (B,3,H,W) float32, label (B,) int)`` batches (numpy or
            Tensor) with ``len()`` = batches per epoch; ``set_epoch(e)`` is called when present so
            a resumed run sees the same order.
        optimizer: a facekit optimizer (``engine.optim``) over ``model``.
        lr_schedule: callable ``optimizer step -> base lr`` (the iteration when accumulative_counts is 1).
        max_epochs: epochs to train.
        work_dir: where logs, config and checkpoints go.
        hooks: list of Hook objects or hook config dicts.
        evaluators: evaluators (``evaluation.BaseEvaluator`` or any object with ``name`` and
            ``evaluate(embed_fn) -> dict``).
        mode: 'graph' (compiled step) or 'pynative'; the context is set by ``from_cfg`` or the caller.
        loss_scale: see ``amp.parse_loss_scale``.
        clip_grad_norm: max global norm of the clipped gradients (None: no clipping).
        clip_prefixes: parameter-name prefixes clipped (default the backbone, as the reference).
        nan_patience: stop after this many consecutive unhealthy steps (NaN/Inf loss or gradients;
            each is skipped, see ``TrainStep``).
        batch_size: per-rank batch size (for samples/sec); default read from the dataloader.
        seed: stored in checkpoints.
        cfg: the Config; dumped to ``work_dir``. With ``model=None`` the training components are
            built from it when ``train()`` starts.
        max_iters: stop after this many iterations (default ``max_epochs * len(train_dataloader)``).
        resume: ``'auto'`` (newest checkpoint in ``work_dir``, if any) or a checkpoint path to
            continue from when ``train()`` starts.
        load_from: checkpoint whose weights start training (fine-tuning), or the one ``test()``
            evaluates.
        accumulative_counts: micro-batches per optimizer step (gradient accumulation, k). An
            iteration is one micro-batch; ``lr_schedule`` is called with the optimizer step
            ``iter // k`` (so build it over optimizer steps); each epoch trains the first
            ``len(train_dataloader) // k * k`` batches and passes over the rest; ``max_iters`` must
            be a multiple of k.
        visualizer: the scalar record's settings (``engine.visualizer``), e.g.
            ``dict(backends=['local', 'tensorboard'])``; default ``cfg.visualizer``, else metrics.jsonl only.
    """

    def __init__(self, model=None, train_dataloader=None, optimizer=None, lr_schedule=None, max_epochs=None,
                 work_dir=None, hooks=(), evaluators=(), mode='graph', loss_scale=None, clip_grad_norm=None,
                 clip_prefixes=('backbone.',), nan_patience=5, batch_size=None, seed=None, cfg=None,
                 max_iters=None, resume=None, load_from=None, accumulative_counts=1, visualizer=None):
        if work_dir is None:
            raise ValueError('Runner needs a work_dir (Runner.from_cfg defaults it to work_dirs/<config name>)')
        self.work_dir = osp.abspath(str(work_dir))
        self.cfg = cfg
        self.seed = seed
        self.resume_from = resume
        self.load_from = load_from
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.model = None
        self.train_step = None
        self.epoch = 0
        self.iter = 0
        self.skipped_steps = 0
        self.stopped_on_nonfinite = False
        self.run_started_at = None
        self._bad_run = 0               # consecutive unhealthy steps
        self._last_healthy = None       # (iter, lr, loss) of the newest healthy step
        self._last_finite = None        # (iter, loss) of the newest finite loss
        self.last_eval_iter = -1
        self.last = {}
        self.history = []           # (iter, lr, loss) of every step, for tests and plots
        self.eval_results = {}
        self._embed_fn = None
        self.visualizer_cfg = visualizer
        self.visualizer = None      # engine.visualizer.Visualizer: metrics.jsonl (+ TensorBoard), built at train()
        os.makedirs(self.work_dir, exist_ok=True)
        self.logger = RunLogger(self.work_dir, enabled=self.rank == 0)
        if model is not None:
            self.logger.attach('train.log')
            self._setup_training(model, train_dataloader, optimizer, lr_schedule, max_epochs, hooks, evaluators,
                                 mode, loss_scale, clip_grad_norm, clip_prefixes, nan_patience, batch_size,
                                 max_iters, accumulative_counts)
        elif cfg is None:
            raise ValueError('Runner needs either the training components (model, train_dataloader, ...) or cfg')

    # --- set-up -----------------------------------------------------------------------------
    @classmethod
    def from_cfg(cls, cfg):
        """Check ``cfg``, prepare the process (device, mode, seed, jit level, distributed) and return a Runner.

        Keys read besides the components: ``work_dir`` (default ``work_dirs/<config file name>``),
        ``resume`` ('auto' or a path), ``load_from`` (a path), ``runtime.*``. Raises
        ``ConfigCheckError`` before anything is built when a key is missing or wrong.
        """
        import facekit  # noqa: F401  (every registry filled)
        if not isinstance(cfg, Config):
            cfg = Config(to_plain(cfg))
        dist.check_launcher(config=cfg.filename)     # N mpirun copies stop here, before any work
        if cfg.get('runtime') is None:
            cfg.runtime = {}
        check_runtime(cfg)
        check_model(cfg)
        check_evaluators(cfg, 'test_evaluators')
        check_keys(cfg)
        if cfg.get('train_dataloader') is not None:
            check_config(cfg)
        resume, load_from = cfg.get('resume'), cfg.get('load_from')
        if resume and load_from and cfg.get('train_dataloader') is not None:
            raise ConfigCheckError('resume and load_from are exclusive (resume continues a run; load_from starts '
                                   'a new one from weights)')
        if resume and resume != 'auto' and not osp.isfile(str(resume)):
            raise ConfigCheckError(f'resume checkpoint not found: {resume}')
        if load_from and not osp.isfile(str(load_from)):
            raise ConfigCheckError(f'load_from checkpoint not found: {load_from}')
        work_dir = cfg.get('work_dir') or osp.join(
            'work_dirs', osp.splitext(osp.basename(cfg.filename))[0] if cfg.filename else 'default')
        cfg.work_dir = osp.abspath(work_dir)
        runtime = cfg.runtime
        try:
            target = setup_runtime(runtime.get('device_target', 'auto'), runtime.get('mode', 'graph'),
                                   seed=runtime.get('seed'))
        except ValueError as e:
            raise ConfigCheckError(f'runtime: {e}') from None
        if runtime.get('jit_level'):
            import mindspore as ms
            ms.set_context(jit_config={'jit_level': str(runtime.jit_level)})
        dist.init_dist(runtime.get('comm_backend'), config=cfg.filename)
        cfg.merge_from_dict({'runtime.device_target_resolved': target})
        if cfg.get('train_dataloader') is not None:
            try:
                precision = resolved_precision(cfg, target)
            except ConfigCheckError:
                # e.g. a pinned fp16 level on CPU: refused when training starts (_build_model, before any
                # model is built), while tools/test.py may still evaluate a checkpoint with this config
                precision = None
            if precision is not None:
                cfg.merge_from_dict({'runtime.precision_resolved': dict(precision, _delete_=True)})
        return cls(cfg=cfg, work_dir=cfg.work_dir, seed=runtime.get('seed'), resume=resume or None,
                   load_from=load_from or None)

    def _build_model(self):
        """``(model, precision)``: the config's model at the run's precision (``resolved_precision``'s dict, logged)."""
        from ..registry import MODELS
        from ..utils.runtime import resolve_device_target
        runtime = self.cfg.get('runtime') or {}
        target = runtime.get('device_target_resolved') or resolve_device_target(runtime.get('device_target'))
        precision = to_plain(runtime.get('precision_resolved')) or resolved_precision(self.cfg, target)
        model = MODELS.build(to_plain(self.cfg.model))
        model = apply_amp(model, precision['amp_level'], target, runtime.get('allow_cpu_fp16', False))
        self.log(f"precision: {precision['description']}")
        return model, precision

    def _build_from_cfg(self):
        """Build model, data loader, optimizer, schedule, hooks and evaluators from ``self.cfg``."""
        from ..registry import EVALUATORS
        cfg = self.cfg
        check_config(cfg)
        runtime = cfg.get('runtime') or {}
        model, precision = self._build_model()
        loader = build_train_dataloader(cfg)
        train_cfg = cfg.get('train_cfg') or {}
        max_epochs = train_cfg.get('max_epochs')
        optimizer = build_optimizer(to_plain(cfg.optimizer), model)
        _, accum = split_accumulative_counts(to_plain(cfg.optimizer))
        ipe = len(loader) // accum * accum      # micro-batches trained per epoch (see _setup_training)
        # train_cfg.max_iters (optional) stops early, e.g. a CI run of a real config; the LR
        # schedule is then compressed into those iterations so it still warms up and decays.
        max_iters = train_cfg.get('max_iters')
        if max_iters is not None and (int(max_iters) <= 0 or int(max_iters) > max_epochs * ipe):
            raise ConfigCheckError(f'train_cfg.max_iters={max_iters} must be in [1, max_epochs * iters_per_epoch = '
                                   f'{max_epochs * ipe}]')
        # the schedule counts optimizer steps: k micro-batches make one
        sched_ipe = int(max_iters) / max_epochs / accum if max_iters else ipe // accum
        lr_schedule = build_lr_schedule(to_plain(cfg.get('lr_schedule', dict(type='ConstantLR'))),
                                        optimizer.facekit_base_lr, sched_ipe, max_epochs)
        evaluators = []
        if dist.is_main_process():
            evaluators = [EVALUATORS.build(ev) for ev in to_plain(cfg.get('val_evaluators')) or []]
        self._setup_training(model, loader, optimizer, lr_schedule, max_epochs, default_hooks(cfg), evaluators,
                             runtime.get('mode', 'graph'), precision['loss_scale'],
                             runtime.get('clip_grad_norm'), tuple(runtime.get('clip_prefixes', ('backbone.',))),
                             runtime.get('nan_patience', 5), cfg.train_dataloader.get('batch_size'), max_iters,
                             accum)

    def _setup_training(self, model, train_dataloader, optimizer, lr_schedule, max_epochs, hooks, evaluators, mode,
                        loss_scale, clip_grad_norm, clip_prefixes, nan_patience, batch_size, max_iters,
                        accumulative_counts=1):
        from ..evaluation.base import as_evaluator
        from .train_step import TrainStep
        self.model = model
        self.train_dataloader = train_dataloader
        self.optimizer = optimizer
        self.lr_schedule = lr_schedule
        self.max_epochs = int(max_epochs)
        self.mode = mode
        self.nan_patience = int(nan_patience)
        self.evaluators = [as_evaluator(ev) for ev in evaluators or []]
        self.batches_per_epoch = len(train_dataloader)
        if self.batches_per_epoch <= 0:
            raise ValueError('the training dataloader yields no batch per epoch: the dataset is smaller than '
                             'one batch (with drop_remainder=True) or empty')
        k = self.accumulative_counts = check_accumulative_counts(accumulative_counts)
        # An epoch trains whole accumulation groups only: its last len % k batches are read and passed
        # over (as drop_remainder drops a partial batch), so every optimizer step sees k * batch samples
        # and a group never spans two epochs.
        self.iters_per_epoch = self.batches_per_epoch // k * k
        if self.iters_per_epoch == 0:
            raise ValueError(f'the training dataloader yields {self.batches_per_epoch} batch(es) per epoch, fewer '
                             f'than optimizer.accumulative_counts={k}')
        self.max_iters = int(max_iters) if max_iters else self.max_epochs * self.iters_per_epoch
        if self.max_iters % k:
            raise ValueError(f'max_iters={self.max_iters} must be a multiple of accumulative_counts={k}')
        self.batch_size = int(batch_size or getattr(train_dataloader, 'batch_size', 0) or 0)
        self.samples_per_iter = self.batch_size * self.world_size
        self.global_batch_size = self.samples_per_iter * k       # samples per optimizer step
        ls = parse_loss_scale(loss_scale)
        self.loss_scale_mode = ls.mode
        self.train_step = TrainStep(model, optimizer, ls, clip_grad_norm=clip_grad_norm, clip_prefixes=clip_prefixes,
                                    grad_reducer=dist.build_grad_reducer(optimizer.parameters),
                                    accumulative_counts=k)
        self.hooks = build_hooks(hooks)
        self.model_param_names = {p.name for p in model.get_parameters()}

    def dry_run(self, iters=2):
        """Build model, head, optimizer and the compiled step, run ``iters`` steps on random inputs, report.

        No training data is read (``engine.dry_run``). Returns the reported numbers as a dict; raises
        ``NonFiniteLossError`` when a step's loss or gradients are not finite.
        """
        from .dry_run import dry_run
        return dry_run(self, iters)

    # --- logging ----------------------------------------------------------------------------
    def log(self, msg):
        """Write ``msg`` to the console and train.log (rank 0 only)."""
        self.logger.info(msg)

    def close(self):
        if self.visualizer is not None:
            self.visualizer.close()
        self.logger.close()

    def get_visualizer(self):
        """The run's ``Visualizer`` (built on first use from ``visualizer=`` or ``cfg.visualizer``)."""
        if self.visualizer is None:
            cfg = self.visualizer_cfg
            if cfg is None and self.cfg is not None:
                cfg = to_plain(self.cfg.get('visualizer'))
            self.visualizer = Visualizer(self.work_dir, **parse_visualizer_cfg(cfg), enabled=self.rank == 0,
                                         log=self.log)
        return self.visualizer

    # --- checkpoints (engine.checkpoint holds the format) ----------------------------------------
    def save_checkpoint(self, path):
        """Write the full training state to ``path`` (every rank calls this; see engine.checkpoint)."""
        ckpt_io.save_training_state(self, path)

    def resume(self, path):
        """Restore model, optimizer, loss scale, epoch, iteration and hook state from ``path``."""
        ckpt_io.load_training_state(self, path)
        self.log(f'resumed from {path}: epoch {self.epoch}, iter {self.iter}')

    def load_checkpoint(self, path):
        """Fine-tuning start: the backbone from ``path``; the head too when its shapes match."""
        ckpt_io.load_weights(self.model, path, self.log)

    def list_checkpoints(self):
        """Periodic checkpoints in work_dir, oldest first."""
        return ckpt_io.list_periodic(self.work_dir)

    def _state_entries(self):
        return ckpt_io._state_entries(self)

    # --- evaluation ---------------------------------------------------------------------------
    def evaluate(self):
        """Run every evaluator on the model in inference mode; record it (``metrics.jsonl``, TensorBoard).

        Returns ``{evaluator name: result dict}``.
        """
        results = {}
        if not self.evaluators:
            return results
        if self._embed_fn is None:
            from ..evaluation import as_embed_fn
            # Built once, so the embedding graph compiles once and sees the trained weights.
            self._embed_fn = as_embed_fn(self.model)
        from ..evaluation import evaluate_all
        self.model.set_train(False)
        try:
            results = evaluate_all(self.evaluators, self._embed_fn, log=self.log)
        finally:
            self.model.set_train(True)
        self.last_eval_iter = self.iter
        self.eval_results = results
        self.get_visualizer().add_eval(self.iter, self.epoch,
                                       {ev.name: ev.summary(results[ev.name]) for ev in self.evaluators},
                                       {ev.name: ev.primary_key(results[ev.name]) for ev in self.evaluators})
        self.log(f'eval at iter {self.iter}: ' + ', '.join(ev.headline(results[ev.name]) for ev in self.evaluators))
        return results

    def test(self):
        """Evaluate the checkpoint ``load_from`` with the configured test evaluators; rank 0 reports.

        ``cfg.test_cfg`` may hold ``targets`` (list of .bin names or ``ijbb``/``ijbc``), ``data_root``,
        ``batch_size``, ``flip``, ``nfolds`` (overrides for every evaluator), ``out`` (JSON path, default
        ``<work_dir>/eval_<checkpoint name>.json``), ``roc`` (ROC PNGs in work_dir), ``report`` (the
        report folder, ``evaluation.report_files``; default ``<work_dir>/report_<checkpoint name>``, False:
        none) and ``backend`` ('mindspore' default, or 'onnxruntime': see
        ``apis.onnx_serving.build_embed_model``). Returns
        ``{name: result}``; empty when no target could be found (each missing one is logged with the
        paths searched).
        """
        from ..apis.onnx_serving import build_embed_model
        from ..evaluation import base as ev_base, reporting
        from ..evaluation.targets import test_evaluator_cfgs
        from ..registry import EVALUATORS
        cfg = self.cfg
        if not self.load_from:
            raise ConfigCheckError('test() needs a checkpoint: set load_from (tools/test.py CONFIG CHECKPOINT)')
        self.logger.attach('test.log')
        test_cfg = to_plain(cfg.get('test_cfg')) or {}
        try:
            selected, missing = test_evaluator_cfgs(cfg, targets=test_cfg.get('targets'),
                                                    data_root=test_cfg.get('data_root'),
                                                    batch_size=test_cfg.get('batch_size'), flip=test_cfg.get('flip'),
                                                    nfolds=test_cfg.get('nfolds'))
        except ValueError as e:
            raise ConfigCheckError(str(e)) from None
        for name, searched in missing:
            self.log(f'MISSING {name}: not found; searched:\n' + '\n'.join(f'    {p}' for p in searched))
        if not selected:
            self.log('nothing to evaluate')
            return {}
        backbone = build_embed_model(cfg, self.load_from, backend=test_cfg.get('backend') or 'mindspore', log=self.log)
        evaluators = [ev_base.as_evaluator(EVALUATORS.build(c)) for c in selected]
        results = ev_base.evaluate_all(evaluators, backbone, dist=dist.dist_info(), log=self.log)
        if self.rank == 0:
            self.log('\n' + reporting.report(evaluators, results))
            out = test_cfg.get('out') or osp.join(
                self.work_dir, f'eval_{osp.splitext(osp.basename(str(self.load_from)))[0]}.json')
            payload = dict(config=cfg.filename, checkpoint=osp.abspath(str(self.load_from)),
                           missing={name: searched for name, searched in missing},
                           results={name: reporting.without_samples(r) for name, r in results.items()})
            self.log(f'results written to {reporting.write_json(payload, out)}')
            if test_cfg.get('roc'):
                for ev in evaluators:
                    png = ev.plot(results[ev.name], osp.join(self.work_dir, f'roc_{ev.name}.png'))
                    if png:
                        self.log(f'ROC written to {png}')
            if test_cfg.get('report') is not False:
                from ..evaluation.report_files import write_report
                folder = test_cfg.get('report') or osp.join(
                    self.work_dir, f'report_{osp.splitext(osp.basename(str(self.load_from)))[0]}')
                written = write_report(evaluators, results, folder, checkpoint=payload['checkpoint'],
                                       config=cfg.filename)
                self.log(f'report written to {folder}: ' + ', '.join(osp.basename(p) for p in written))
        dist.barrier()
        return results

    # --- the loop -------------------------------------------------------------------------------
    def call_hooks(self, stage):
        for h in self.hooks:
            getattr(h, stage)(self)

    def _start(self):
        """Build what is missing, resume or load weights, dump the config."""
        self.logger.attach('train.log')
        if self.model is None:
            self._build_from_cfg()
        resumed = False
        if self.resume_from:
            path = (ckpt_io.find_latest_checkpoint(self.work_dir) if self.resume_from == 'auto'
                    else self.resume_from)
            if path is None:
                self.log(f'resume auto: no checkpoint in {self.work_dir}; starting from scratch')
            else:
                self.resume(path)
                resumed = True
        elif self.load_from:
            self.load_checkpoint(self.load_from)
        self.resume_from = self.load_from = None
        self.get_visualizer().start(self.iter, resumed)
        if self.cfg is not None and self.rank == 0:
            self.cfg.dump(osp.join(self.work_dir, osp.basename(self.cfg.filename or 'config.py')))

    def _seed_iteration(self):
        """Seed Python's ``random``, NumPy's global RNG and MindSpore's default generator from
        (seed, iteration) before each step.

        The rule is the same in an uninterrupted and a resumed run, so whatever draws from these
        during iteration ``i`` (a hook, a generator-based MindSpore op) draws the same numbers
        without their states being saved. No-op without a seed. Kernel-seeded MindSpore ops inside
        the compiled step (``nn.Dropout``, ``ops.rand`` for drop-path and token masking) keep their
        own state, which no API exposes: see ``engine.checkpoint.unsaved_random_cells``.
        """
        if self.seed is None:
            return
        import random
        import mindspore as ms
        s = np.random.SeedSequence([int(self.seed), self.iter]).generate_state(2)
        random.seed(int(s[0]) << 32 | int(s[1]))
        np.random.seed(s)
        ms.default_generator.manual_seed(int(s[0]))

    def train(self):
        """Train until ``max_iters``; returns ``self.history`` [(iter, lr, loss), ...]."""
        import mindspore as ms
        t_start = self.run_started_at = time.time()
        self._start()
        self.model.set_train(True)
        self.call_hooks('before_run')
        self.log(f'training: {self.max_iters} iterations ({self.max_epochs} epochs x {self.iters_per_epoch}), '
                 f'batch {self.batch_size} x {self.world_size} rank(s), mode {self.mode}, work_dir {self.work_dir}')
        if self.accumulative_counts > 1:
            k = self.accumulative_counts
            left = self.batches_per_epoch - self.iters_per_epoch
            self.log(f'gradient accumulation: {k} micro-batches per optimizer step, global batch {self.batch_size} '
                     f'x {k} x {self.world_size} rank(s) = {self.global_batch_size}, {self.max_iters // k} optimizer '
                     f'steps ({self.iters_per_epoch // k} per epoch)'
                     + (f'; the last {left} of each epoch\'s {self.batches_per_epoch} batches are passed over'
                        if left else ''))
        self._bad_run = 0
        while self.iter < self.max_iters:
            epoch = self.iter // self.iters_per_epoch
            self.epoch = epoch
            if hasattr(self.train_dataloader, 'set_epoch'):
                self.train_dataloader.set_epoch(epoch)
            self.call_hooks('before_train_epoch')
            skip = self.iter - epoch * self.iters_per_epoch
            t_data = time.perf_counter()
            for i, batch in enumerate(self.train_dataloader):
                if i < skip:
                    t_data = time.perf_counter()
                    continue
                if i >= self.batches_per_epoch or self.iter >= self.max_iters:
                    break
                if i >= self.iters_per_epoch:
                    # the epoch's leftover batches (fewer than an accumulation group): read, not trained,
                    # so the loader ends its epoch and keeps its workers
                    t_data = time.perf_counter()
                    continue
                img, label = _to_numpy_batch(batch)
                data_time = time.perf_counter() - t_data
                self._seed_iteration()
                lr = self.lr_schedule(self.iter // self.accumulative_counts)    # one lr per optimizer step
                t_step = time.perf_counter()
                loss_t, finite_t, applied = self.train_step.step(ms.Tensor(img), ms.Tensor(label),
                                                                  ms.Tensor(np.float32(lr)))
                loss = float(loss_t.asnumpy())
                finite = bool(finite_t.asnumpy())
                step_time = time.perf_counter() - t_step
                finite_loss = math.isfinite(loss)
                # inside an accumulation group: whether the group is still healthy; at its end: the step's verdict
                healthy = finite and finite_loss
                if applied and not healthy:
                    self.skipped_steps += 1
                self.iter += 1
                self.last = dict(iter=self.iter, lr=lr, loss=loss, finite_loss=finite_loss, grads_finite=finite,
                                 healthy=healthy, optimizer_step=applied, data_time=data_time, step_time=step_time,
                                 loss_scale=float(self.train_step.loss_scale.asnumpy()),
                                 grad_norm=float(self.train_step.grad_norm.asnumpy()))
                self.history.append((self.iter, lr, loss))
                # recorded before the divergence check, so a diverged run's last step is on its record
                self.visualizer.add_train(self.iter, epoch + (self.iter == (epoch + 1) * self.iters_per_epoch),
                                          dict(self.last, skipped_steps=self.skipped_steps), self.samples_per_iter,
                                          last=self.iter == self.max_iters)
                if finite_loss:
                    self._last_finite = (self.iter, loss)
                if applied and healthy:
                    self._bad_run = 0
                    self._last_healthy = (self.iter, lr, loss)
                elif applied:
                    self._bad_run += 1
                    if self._bad_run >= self.nan_patience:
                        self.stop_nonfinite()
                if self.iter == (epoch + 1) * self.iters_per_epoch:
                    self.epoch = epoch + 1
                self.call_hooks('after_train_iter')
                t_data = time.perf_counter()
            if self.iter == (epoch + 1) * self.iters_per_epoch:
                self.epoch = epoch + 1
                self.call_hooks('after_train_epoch')
            elif self.iter < self.max_iters:
                raise RuntimeError(f'the training dataloader stopped after {i + 1} batches in epoch {epoch}, '
                                   f'but len() promised {self.batches_per_epoch}')
        self.log(f'training finished in {time.time() - t_start:.1f} s ({self.iter} iterations)')
        self.call_hooks('after_run')
        self.visualizer.close()
        dist.barrier()
        return self.history

    def stop_nonfinite(self, reason=None):
        """End the run: log and raise ``NonFiniteLossError`` (one line) after the ``after_run`` hooks.

        ``reason`` overrides the default cause (``nan_patience`` consecutive unhealthy steps).
        """
        self.stopped_on_nonfinite = True
        ckpt = ckpt_io.find_latest_checkpoint(self.work_dir)
        where = f'last good checkpoint: {ckpt}' if ckpt else 'no checkpoint was written'
        if self._last_finite:
            good = f'last finite loss {self._last_finite[1]:.5f} at iteration {self._last_finite[0]}'
            if self._last_healthy and self._last_healthy[0] != self._last_finite[0]:
                good += f' (last healthy step: iteration {self._last_healthy[0]})'
            elif not self._last_healthy:
                good += ' (no step was healthy: its gradients were NaN/Inf)'
        else:
            good = 'no finite loss was ever seen'
        if reason is None:
            reason = (f'{self._bad_run} consecutive unhealthy steps (NaN/Inf loss or gradients; each skipped, '
                      f'weights and BN statistics unchanged)')
        msg = (f'training diverged: {reason}, ending at iteration {self.iter} (epoch {self.epoch + 1}); {good}; '
               f'{where}. Lower optimizer.lr, enable runtime.clip_grad_norm or check the data.')
        msg = ' '.join(msg.split())     # one line
        self.log(msg)
        self.call_hooks('after_run')
        self.visualizer.close()
        raise NonFiniteLossError(msg)


def default_hooks(cfg):
    """``cfg.hooks`` when given; else logger/checkpoint/eval hooks from ``runtime``, ``PlotCurvesHook`` when
    ``visualizer.plot`` (default), plus ``custom_hooks``."""
    if cfg.get('hooks') is not None:
        return to_plain(cfg.hooks)
    runtime = cfg.get('runtime') or {}
    train_cfg = cfg.get('train_cfg') or {}
    hooks = [dict(type='LoggerHook', interval=runtime.get('log_interval', 50)),
             dict(type='CheckpointHook', interval=runtime.get('checkpoint_interval', 1),
                  max_keep_ckpts=runtime.get('max_keep_ckpts', 3))]
    if cfg.get('val_evaluators'):
        hooks.append(dict(type='EvalHook', interval=runtime.get('eval_interval', 1),
                          final_eval=train_cfg.get('final_eval', True),
                          raw_pixel_floor=train_cfg.get('raw_pixel_floor', False)))
    if parse_visualizer_cfg(to_plain(cfg.get('visualizer')))['plot']:
        hooks.append(dict(type='PlotCurvesHook'))
    return hooks + (to_plain(cfg.get('custom_hooks')) or [])


def build_train_dataloader(cfg):
    """Build ``cfg.train_dataloader`` through facekit.datasets, sharded by rank (a FaceDataLoader).

    ``num_images`` (the data set's documented size, read by the dry run) is not the loader's.
    """
    from ..datasets import build_dataloader
    seed = (cfg.get('runtime') or {}).get('seed')
    loader_cfg = to_plain(cfg.train_dataloader)
    loader_cfg.pop('num_images', None)
    return build_dataloader(loader_cfg, rank=dist.get_rank(), world_size=dist.get_world_size(), seed=seed)


def resolved_precision(cfg, device_target):
    """``dict(amp_level, loss_scale, description)`` of ``cfg.runtime``'s precision on ``device_target``.

    See ``amp.resolve_precision``; a refused combination raises ``ConfigCheckError``.
    """
    runtime = cfg.get('runtime') or {}
    try:
        level, loss_scale, text = resolve_precision(runtime.get('amp_level', DEFAULT_AMP_LEVEL),
                                                    to_plain(runtime.get('loss_scale')), device_target,
                                                    runtime.get('allow_cpu_fp16', False))
    except ValueError as e:
        raise ConfigCheckError(str(e)) from None
    return dict(amp_level=level, loss_scale=loss_scale, description=text)
