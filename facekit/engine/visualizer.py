"""The run's scalar record: every training iteration and every evaluation, written by rank 0 to
``work_dir/metrics.jsonl`` and, when configured, to TensorBoard event files.

    visualizer = dict(backends=['local', 'tensorboard'], interval=1, plot=True)

Backends (``backends``, a list of names):

- ``'local'`` (always present): ``metrics.jsonl``, one JSON object per line, non-finite values as
  ``null``. A training record ``{"mode": "train", "iter", "epoch", "loss", "lr", "loss_scale",
  "grad_norm", "samples_per_sec", "data_time", "step_time", "skipped_steps"}``; an evaluation record
  ``{"mode": "val", "iter", "epoch", "primary_metric": {target: key}, "<target>": {summary}}``.
  ``plot=True`` also draws ``work_dir/curves.png`` at the end of training (``PlotCurvesHook``).
- ``'tensorboard'``: event files in ``work_dir/tensorboard`` (tensorboardX; ``pip install
  'facekit[tensorboard]'``): tags ``train/<key>`` and ``val/<target>/<key>``, step = iteration.
  Non-finite values are left out there.

``interval`` thins the training records: one every ``interval`` iterations (and the last one of the
run), its ``loss``, ``data_time`` and ``step_time`` the means over the iterations since the previous
record (the iteration's own values at interval 1), ``samples_per_sec`` = global batch x iterations /
(data + step time) over the same span.

Resume: a run resumed at iteration N keeps the records of iterations <= N and drops what the
interrupted run wrote after N, so the file holds each iteration once. An evaluation record *at* N is
held back: the resumed run evaluates iteration N again when the checkpoint was written before that
evaluation (``EvalHook.before_run``), and the new record replaces it; otherwise it is written back
before the next record. TensorBoard gets the same effect from ``purge_step=N`` (the viewer drops
older events at steps >= N) plus the kept records of iteration N written again. A run started from
scratch in a work dir that already has a ``metrics.jsonl`` starts a new one (the old records
describe another run).
"""
import json
import math
import os
import os.path as osp
import time

from ..visualization.curves import read_records

__all__ = ['Visualizer', 'parse_visualizer_cfg', 'BACKENDS', 'TRAIN_KEYS', 'METRICS_FILE', 'TENSORBOARD_DIR',
           'tensorboard_missing_message']

BACKENDS = ('local', 'tensorboard')
METRICS_FILE = 'metrics.jsonl'
TENSORBOARD_DIR = 'tensorboard'
TRAIN_KEYS = ('loss', 'lr', 'loss_scale', 'grad_norm', 'samples_per_sec', 'data_time', 'step_time', 'skipped_steps')
DEFAULTS = dict(backends=('local',), interval=1, plot=True)


def tensorboard_missing_message(key='visualizer.backends'):
    return (f"{key} includes 'tensorboard' but the tensorboardX package is not installed: "
            "pip install 'facekit[tensorboard]' (or pip install 'tensorboardX>=2.6'), or remove 'tensorboard'")


def parse_visualizer_cfg(cfg):
    """``cfg`` (the config's ``visualizer`` dict or None) with defaults filled; ValueError naming the key.

    Checks: ``backends`` a list of names from ``BACKENDS`` that includes 'local', ``interval`` a
    positive int, ``plot`` a bool, no other key; 'tensorboard' needs tensorboardX importable.
    """
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"visualizer: unknown key(s) {unknown}; valid: {sorted(DEFAULTS)}")
    out = dict(DEFAULTS, **cfg)
    backends = out['backends']
    if isinstance(backends, str) or not isinstance(backends, (list, tuple)):
        raise ValueError(f"visualizer.backends must be a list of names from {list(BACKENDS)}, got {backends!r}")
    bad = [b for b in backends if b not in BACKENDS]
    if bad:
        raise ValueError(f"visualizer.backends: unknown backend(s) {bad}; valid: {list(BACKENDS)}")
    if 'local' not in backends:
        raise ValueError(f"visualizer.backends must include 'local' (metrics.jsonl is the run's record that a "
                         f"resume and tools/plot_curves.py read), got {list(backends)}")
    interval = out['interval']
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
        raise ValueError(f'visualizer.interval must be a positive int (iterations per record), got {interval!r}')
    if not isinstance(out['plot'], bool):
        raise ValueError(f"visualizer.plot must be True or False, got {out['plot']!r}")
    if 'tensorboard' in backends:
        try:
            import tensorboardX  # noqa: F401
        except ImportError:
            raise ValueError(tensorboard_missing_message()) from None
    out['backends'] = tuple(dict.fromkeys(backends))
    return out


def _finite_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Visualizer:
    """Writes training and evaluation records to the configured backends (see the module doc).

    Args:
        work_dir: the run's folder.
        backends: names from ``BACKENDS`` ('local' always written).
        interval: iterations per training record.
        plot: whether ``PlotCurvesHook`` draws curves.png (read by the hook, stored here).
        enabled: False on ranks other than 0: nothing is written.
        log: callable for one-line notes (records dropped on resume).
    """

    def __init__(self, work_dir, backends=('local',), interval=1, plot=True, enabled=True, log=None):
        cfg = parse_visualizer_cfg(dict(backends=list(backends), interval=interval, plot=plot))
        self.work_dir = work_dir
        self.backends = cfg['backends']
        self.interval = cfg['interval']
        self.plot = cfg['plot']
        self.enabled = enabled
        self.log = log or (lambda msg: None)
        self.path = osp.join(work_dir, METRICS_FILE)
        self.tensorboard_dir = osp.join(work_dir, TENSORBOARD_DIR)
        self._file = None
        self._writer = None
        self._pending = []          # evaluation records at the resumed iteration, held back
        self._resumed_at = None
        self._window = None

    # --- opening -----------------------------------------------------------------------------
    def start(self, iteration, resumed):
        """Open the backends for a run starting at ``iteration``; ``resumed``: it continues a
        checkpoint (keep the records up to ``iteration``), else a fresh run (start a new file)."""
        if not self.enabled:
            return
        self.close()
        old = read_records(self.path) if osp.isfile(self.path) else []
        keep, self._pending = [], []
        if resumed:
            for rec in old:
                if rec['iter'] < iteration or (rec['iter'] == iteration and rec.get('mode') != 'val'):
                    keep.append(rec)
                elif rec['iter'] == iteration:
                    self._pending.append(rec)
            dropped = len(old) - len(keep) - len(self._pending)
            if dropped:
                self.log(f'{METRICS_FILE}: dropped {dropped} record(s) of the interrupted run after iteration '
                         f'{iteration}')
        elif old:
            self.log(f'{METRICS_FILE}: a new run starts a new record ({len(old)} record(s) of an earlier run in '
                     f'this work dir removed)')
        tmp = self.path + '.tmp'
        with open(tmp, 'w', encoding='utf-8') as f:
            f.writelines(json.dumps(rec) + '\n' for rec in keep)
        os.replace(tmp, self.path)
        self._file = open(self.path, 'a', encoding='utf-8')
        self._resumed_at = iteration if resumed else None
        if 'tensorboard' in self.backends:
            self._open_tensorboard(purge_step=iteration if resumed and iteration > 0 else None)
            for rec in keep:
                if rec['iter'] == iteration:
                    self._to_tensorboard(rec)

    def _open_tensorboard(self, purge_step):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise ValueError(tensorboard_missing_message()) from None
        os.makedirs(self.tensorboard_dir, exist_ok=True)
        # event files are read in name order: a nanosecond suffix orders two runs started in one second
        self._writer = SummaryWriter(self.tensorboard_dir, purge_step=purge_step,
                                     filename_suffix=f'.{time.time_ns()}')

    def _ensure_open(self):
        if self._file is None:       # evaluate() outside train(): append to what is there
            os.makedirs(self.work_dir, exist_ok=True)
            self._file = open(self.path, 'a', encoding='utf-8')
            if 'tensorboard' in self.backends and self._writer is None:
                self._open_tensorboard(purge_step=None)

    # --- writing -------------------------------------------------------------------------------
    def add_train(self, iteration, epoch, values, samples_per_iter, last=False):
        """Record one training iteration (every ``interval``-th and the ``last`` one are written).

        ``values`` holds ``loss``, ``lr``, ``loss_scale``, ``grad_norm``, ``data_time``,
        ``step_time`` (s), ``skipped_steps`` (run total); ``samples_per_sec`` is computed here from
        ``samples_per_iter`` (one iteration's batch over all ranks; with gradient accumulation an
        iteration is one micro-batch).
        """
        if not self.enabled:
            return
        w = self._window or dict(n=0, loss_sum=0.0, loss_n=0, data=0.0, step=0.0)
        self._window = w
        w['n'] += 1
        loss = float(values['loss'])
        if math.isfinite(loss):
            w['loss_sum'] += loss
            w['loss_n'] += 1
        w['data'] += float(values['data_time'])
        w['step'] += float(values['step_time'])
        if iteration % self.interval and not last:
            return
        seconds = w['data'] + w['step']
        rec = dict(mode='train', iter=int(iteration), epoch=int(epoch),
                   loss=w['loss_sum'] / w['loss_n'] if w['loss_n'] else float('nan'),
                   lr=float(values['lr']), loss_scale=float(values['loss_scale']),
                   grad_norm=float(values['grad_norm']),
                   samples_per_sec=samples_per_iter * w['n'] / seconds if seconds > 0 else float('nan'),
                   data_time=w['data'] / w['n'], step_time=w['step'] / w['n'],
                   skipped_steps=int(values['skipped_steps']))
        self._window = None
        self._write(rec)

    def add_eval(self, iteration, epoch, summaries, primary):
        """Record one evaluation: ``summaries`` {target: scalar summary}, ``primary`` {target: key}."""
        if not self.enabled:
            return
        rec = dict(mode='val', iter=int(iteration), epoch=int(epoch), primary_metric=dict(primary))
        rec.update(summaries)
        self._write(rec)

    def _write(self, rec):
        self._ensure_open()
        if self._pending:
            replaced = rec.get('mode') == 'val' and rec['iter'] == self._resumed_at
            if not replaced:
                for old in self._pending:
                    self._write_one(old)
            self._pending = []
        self._write_one(rec)

    def _write_one(self, rec):
        self._file.write(json.dumps(_jsonable(rec)) + '\n')
        self._file.flush()
        if self._writer is not None:
            self._to_tensorboard(rec)

    def _to_tensorboard(self, rec):
        step = rec['iter']
        if rec.get('mode') == 'train':
            for key in TRAIN_KEYS:
                if _finite_number(rec.get(key)):
                    self._writer.add_scalar(f'train/{key}', rec[key], step)
            return
        for target, summary in rec.items():
            if target == 'primary_metric' or not isinstance(summary, dict):
                continue
            for key, value in summary.items():
                if _finite_number(value):
                    self._writer.add_scalar(f'val/{target}/{key}', value, step)
        self._writer.flush()

    def flush(self):
        """Write held-back records and flush every backend (before reading metrics.jsonl)."""
        if self._pending and self._file is not None:
            for old in self._pending:
                self._write_one(old)
            self._pending = []
        if self._file is not None:
            self._file.flush()
        if self._writer is not None:
            self._writer.flush()

    def close(self):
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
