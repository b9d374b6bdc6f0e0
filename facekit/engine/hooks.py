"""Training hooks (HOOKS registry): logging, checkpoints, evaluation during training.

A hook overrides any of ``before_run``, ``before_train_epoch``, ``after_train_iter``,
``after_train_epoch``, ``after_run``; each receives the Runner. ``runner.iter`` counts finished
iterations and ``runner.epoch`` finished epochs, so ``after_train_iter`` sees ``iter >= 1``.

A hook whose future behaviour depends on what it has seen (EvalHook's best scores) returns that
in ``state_dict()``; every training checkpoint stores it and a resume hands it back through
``load_state_dict()`` before ``before_run``, so a resumed run decides as the uninterrupted one.
"""
import datetime
import os
import os.path as osp
import time

from ..registry import HOOKS
from ..utils.checkpoint import remove_stale_temp_files
from ..utils.progress import progress_bar
from . import checkpoint as ckpt_io

__all__ = ['Hook', 'LoggerHook', 'CheckpointHook', 'EvalHook', 'PlotCurvesHook', 'build_hooks']


class Hook:
    """Base hook: every stage is a no-op; ``priority`` orders hooks (lower runs first)."""
    priority = 50

    def state_dict(self):
        """What decides this hook's future, as ``{key: float or float64 array}`` (default: nothing).

        Saved in every training checkpoint (``hook_state.<HookClass>.<key>``); keys are plain
        strings, dots allowed.
        """
        return {}

    def load_state_dict(self, state):
        """Restore ``state_dict()``'s output on resume (called after the hooks are built, before
        ``before_run``). ``state`` is ``{}`` for a checkpoint this hook wrote nothing into."""

    def before_run(self, runner):
        """Called once before the first iteration (after resume)."""

    def before_train_epoch(self, runner):
        """Called before each epoch."""

    def after_train_iter(self, runner):
        """Called after each iteration; ``runner.last`` holds its record. With gradient accumulation an
        iteration is one micro-batch and ``runner.last['optimizer_step']`` says whether it ended an
        optimizer step."""

    def after_train_epoch(self, runner):
        """Called after each epoch (``runner.epoch`` already counts it)."""

    def after_run(self, runner):
        """Called once after training ends."""


def _every(count, interval):
    return interval > 0 and count % interval == 0


@HOOKS.register_module()
class LoggerHook(Hook):
    """Log every ``interval`` iterations to the console and ``work_dir/train.log`` (rank 0).

    A line: epoch, iteration, lr, mean loss since the last line, samples/sec over all ranks,
    mean data time and step time per iteration (s), ETA, loss scale and skipped (overflow) steps.
    A tqdm progress bar with ETA runs under the lines when stderr is a terminal and not under CI
    (``utils.progress``).

    Args:
        interval: iterations between lines.
        progress_bar: allow the bar (it is drawn only where ``utils.progress`` allows).
    """
    priority = 10

    def __init__(self, interval=50, progress_bar=True):
        self.interval = int(interval)
        self.progress_bar = progress_bar
        self._bar = None
        self._reset()

    def _reset(self):
        self._loss_sum = 0.0
        self._count = 0
        self._data_time = 0.0
        self._step_time = 0.0
        self._t0 = time.perf_counter()

    def before_run(self, runner):
        self._reset()
        self._start_iter = runner.iter
        self._run_t0 = time.perf_counter()
        if self.progress_bar and runner.rank == 0:
            self._bar = progress_bar(total=runner.max_iters, initial=runner.iter, desc='train', leave=False)

    def after_train_iter(self, runner):
        rec = runner.last
        if rec['finite_loss']:
            self._loss_sum += rec['loss']
            self._count += 1
        self._data_time += rec['data_time']
        self._step_time += rec['step_time']
        if self._bar is not None:
            self._bar.update(1)
        epoch = (runner.iter - 1) // runner.iters_per_epoch     # the epoch this iteration belongs to
        done_in_epoch = runner.iter - epoch * runner.iters_per_epoch
        if not (_every(runner.iter, self.interval) or done_in_epoch == runner.iters_per_epoch
                or runner.iter == runner.max_iters):
            return
        n_iters = max(1, runner.iter - self._last_logged(runner))
        elapsed = time.perf_counter() - self._t0
        samples_per_sec = n_iters * runner.samples_per_iter / max(elapsed, 1e-9)    # iterations are micro-batches
        run_elapsed = time.perf_counter() - self._run_t0
        done = runner.iter - self._start_iter
        eta_s = run_elapsed / max(done, 1) * (runner.max_iters - runner.iter)
        loss_avg = self._loss_sum / self._count if self._count else float('nan')
        if runner.world_size > 1:
            # every rank runs this hook at the same iteration, so the collective lines up
            from . import dist
            loss_avg = float(dist.all_reduce_mean([loss_avg])[0])
        msg = (f'Epoch [{epoch + 1}/{runner.max_epochs}][{done_in_epoch}/{runner.iters_per_epoch}] '
               f'iter {runner.iter}/{runner.max_iters}  lr: {rec["lr"]:.4e}  loss: {loss_avg:.4f}  '
               f'samples/s: {samples_per_sec:.1f}  data: {self._data_time / n_iters:.3f}s  '
               f'step: {self._step_time / n_iters:.3f}s  eta: {datetime.timedelta(seconds=int(eta_s))}')
        if runner.loss_scale_mode != 'none':
            msg += f'  loss_scale: {rec["loss_scale"]:g}'
        msg += f'  skipped: {runner.skipped_steps}'
        runner.log(msg)
        self._logged_at = runner.iter
        self._reset()

    def _last_logged(self, runner):
        return getattr(self, '_logged_at', self._start_iter)

    def after_run(self, runner):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@HOOKS.register_module()
class CheckpointHook(Hook):
    """Save the full training state every ``interval`` epochs (or iterations), keep the last K.

    Files: ``work_dir/epoch_{E}.ckpt`` or ``iter_{I}.ckpt``, and ``work_dir/last_checkpoint``
    (a text file naming the newest one, read by ``resume='auto'``). Writes are atomic; at the start
    (rank 0) temporary files of earlier, crashed writes are removed. A state holding NaN/Inf is
    never written: the refusal is logged and the run stops with ``NonFiniteLossError``. Rotation
    removes the oldest periodic checkpoints, never the one just written (the newest healthy one).

    Args:
        interval: epochs (``by_epoch``) or iterations between saves.
        by_epoch: count ``interval`` in epochs.
        max_keep_ckpts: keep only the newest K periodic checkpoints (<= 0 keeps all).
        save_last: also save when training ends off the interval.
    """
    priority = 70

    def __init__(self, interval=1, by_epoch=True, max_keep_ckpts=3, save_last=True):
        self.interval = int(interval)
        self.by_epoch = by_epoch
        self.max_keep_ckpts = int(max_keep_ckpts)
        self.save_last = save_last
        self._saved = []
        self._saved_iter = -1

    def before_run(self, runner):
        if runner.rank == 0:
            started = getattr(runner, 'run_started_at', None) or time.time()
            for f in remove_stale_temp_files(runner.work_dir, started):
                runner.log(f'removed {f}: temporary file of an interrupted checkpoint write')
        # Periodic checkpoints already in work_dir (a resumed run) count toward max_keep_ckpts.
        self._saved = ckpt_io.list_periodic(runner.work_dir)
        self._saved_iter = runner.iter if self._saved else -1

    def _save(self, runner, by_epoch, count):
        # The state after an unhealthy (skipped) step is the last healthy state, so it may be
        # written; save_training_state refuses any state holding NaN/Inf.
        path = osp.join(runner.work_dir, ckpt_io.periodic_name(by_epoch, count))
        try:
            runner.save_checkpoint(path)
        except ckpt_io.NonFiniteStateError as e:
            runner.log(str(e))
            runner.stop_nonfinite(reason=f'the training state holds NaN/Inf in {", ".join(e.names[:6])} '
                                         f'(checkpoint {osp.basename(path)} not written)')
        self._saved_iter = runner.iter
        if path in self._saved:
            self._saved.remove(path)
        self._saved.append(path)
        if runner.rank == 0 and self.max_keep_ckpts > 0:
            while len(self._saved) > self.max_keep_ckpts:
                old = self._saved.pop(0)
                if old == path:       # never the newest healthy checkpoint
                    self._saved.append(old)
                    break
                for f in ckpt_io.checkpoint_files(old):
                    if osp.exists(f):
                        os.remove(f)

    def after_train_iter(self, runner):
        if not self.by_epoch and _every(runner.iter, self.interval):
            self._save(runner, False, runner.iter)

    def after_train_epoch(self, runner):
        if self.by_epoch and _every(runner.epoch, self.interval):
            self._save(runner, True, runner.epoch)

    def after_run(self, runner):
        if not self.save_last or runner.iter == 0 or runner.stopped_on_nonfinite:
            return
        if self._saved_iter != runner.iter:
            on_epoch = self.by_epoch and runner.iter % runner.iters_per_epoch == 0
            self._save(runner, on_epoch, runner.epoch if on_epoch else runner.iter)


@HOOKS.register_module()
class EvalHook(Hook):
    """Run the configured evaluators during training and once more at its end (rank 0).

    After each evaluation one record ``{"mode": "val", "epoch", "iter", "primary_metric", "<name>":
    {scalar metrics}}`` goes to ``work_dir/metrics.jsonl`` (and TensorBoard, ``engine.visualizer``);
    when an evaluator's primary metric improves, ``best_<name>.ckpt`` is written (full state, like a
    periodic checkpoint). At the end of training (``after_run``, after the last checkpoint is saved)
    every evaluator's table is printed and ``work_dir/eval_results.json`` written.

    Args:
        interval: epochs (``by_epoch``) or iterations between evaluations (0: only at the end).
        by_epoch: count ``interval`` in epochs.
        save_best: keep ``best_<name>.ckpt`` per evaluator.
        metric: the metric compared for "best"; None = each evaluator's ``primary_metric``.
        final_eval: evaluate the final weights and report when training ends.
        raw_pixel_floor: in the final report, put each verification target beside the accuracy of
            raw normalized pixels on the same pairs (evaluation.floor), the bar a model must clear.
    """
    priority = 80   # after CheckpointHook: the final checkpoint is on disk before the final evaluation

    def __init__(self, interval=1, by_epoch=True, save_best=True, metric=None, final_eval=True,
                 raw_pixel_floor=False):
        self.interval = int(interval)
        self.by_epoch = by_epoch
        self.save_best = save_best
        self.metric = metric
        self.final_eval = final_eval
        self.raw_pixel_floor = raw_pixel_floor
        self.best = {}      # evaluator name -> best value of its compared metric so far
        self._evaluated_at = -1

    def state_dict(self):
        # without the best scores a resumed run overwrites best_<name>.ckpt with its first
        # (possibly worse) evaluation
        state = {f'best.{name}': float(value) for name, value in self.best.items()}
        state['evaluated_at'] = float(self._evaluated_at)
        return state

    def load_state_dict(self, state):
        self.best = {key[len('best.'):]: float(value) for key, value in state.items() if key.startswith('best.')}
        self._evaluated_at = int(state.get('evaluated_at', -1))

    def _due(self, runner):
        if self.by_epoch:
            return runner.iter % runner.iters_per_epoch == 0 and _every(runner.epoch, self.interval)
        return _every(runner.iter, self.interval)

    def before_run(self, runner):
        # CheckpointHook (priority 70) writes iteration k's checkpoint before this hook evaluates
        # iteration k, so a run resumed there has not seen that evaluation: replay it on the
        # restored weights (the ones it ran on) so best scores and best_<name>.ckpt follow the
        # uninterrupted run.
        if runner.iter > 0 and self._evaluated_at < runner.iter and self._due(runner):
            runner.log(f'resume: evaluating iteration {runner.iter} again (its checkpoint was written '
                       f'before its evaluation)')
            self._run(runner)

    def _run(self, runner):
        if not runner.evaluators or runner.last_eval_iter == runner.iter:
            return runner.eval_results
        results = runner.evaluate()
        self._evaluated_at = runner.iter
        if runner.rank != 0 or not self.save_best:
            return results
        for ev in runner.evaluators:
            result = results[ev.name]
            key = self.metric or ev.primary_key(result)
            value = ev.summary(result).get(key)
            if value is None:
                continue
            sign = 1.0 if ev.greater_is_better else -1.0
            if ev.name in self.best and not sign * value > sign * self.best[ev.name]:
                continue
            self.best[ev.name] = value
            runner.save_checkpoint(osp.join(runner.work_dir, f'best_{ev.name}.ckpt'))
            runner.log(f'new best {ev.name} {key}={value:.5f} at iter {runner.iter}: saved best_{ev.name}.ckpt')
        return results

    def after_train_iter(self, runner):
        if not self.by_epoch and _every(runner.iter, self.interval):
            self._run(runner)

    def after_train_epoch(self, runner):
        if self.by_epoch and _every(runner.epoch, self.interval):
            self._run(runner)

    def after_run(self, runner):
        if not self.final_eval or not runner.evaluators or runner.stopped_on_nonfinite or runner.rank != 0:
            return
        from ..evaluation import reporting
        results = self._run(runner)
        runner.log('\n' + reporting.report(runner.evaluators, results,
                                            title=f'after {runner.iter} iterations'))
        out = {ev.name: ev.summary(results[ev.name]) for ev in runner.evaluators}
        if self.raw_pixel_floor:
            from ..evaluation.floor import floor_report
            table, extra = floor_report(runner.evaluators, results)
            for name, values in extra.items():
                out[name].update(values)
            if table:
                runner.log('\n' + table)
        path = reporting.write_json(out, osp.join(runner.work_dir, 'eval_results.json'))
        runner.log(f'results written to {path}')


@HOOKS.register_module()
class PlotCurvesHook(Hook):
    """Draw ``work_dir/<filename>`` from ``metrics.jsonl`` when training ends (rank 0).

    Loss, learning rate, gradient norm and each evaluation metric against iteration
    (``facekit.visualization.curves.plot_curves``). Its priority puts it after ``EvalHook``, so the
    final evaluation is on the picture; it also runs when a diverged run stops. A failure to draw
    is logged with its reason and does not fail the finished run.

    Args:
        filename: the PNG's name in the work dir.
        metrics: evaluation summary keys to draw; None = each target's primary metric.
    """
    priority = 90

    def __init__(self, filename='curves.png', metrics=None):
        self.filename = filename
        self.metrics = None if metrics is None else list(metrics)

    def after_run(self, runner):
        if runner.rank != 0:
            return
        from ..visualization.curves import plot_curves
        vis = runner.get_visualizer()
        vis.flush()
        path = osp.join(runner.work_dir, self.filename)
        if not osp.isfile(vis.path):
            runner.log(f'curves not drawn: {vis.path} does not exist')
            return
        try:
            plot_curves(vis.path, path, metrics=self.metrics)
        except (ValueError, OSError) as e:
            runner.log(f'curves not drawn ({path}): {e}')
            return
        runner.log(f'curves written to {path}')


def build_hooks(cfgs):
    """Build hook configs (``dict(type='LoggerHook', interval=10)``) sorted by priority."""
    hooks = []
    for cfg in cfgs or []:
        hooks.append(cfg if isinstance(cfg, Hook) else HOOKS.build(dict(cfg)))
    return sorted(hooks, key=lambda h: h.priority)
