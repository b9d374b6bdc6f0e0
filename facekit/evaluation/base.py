"""The evaluator contract: what the runner and the tools may rely on, whatever the evaluator measures.

An evaluator turns a model into a result dict (``evaluate``) and knows how to present that result:
a scalar-only ``summary`` for logs and metrics.jsonl, a terminal ``table`` for all results of its
class, short ``log_lines`` printed after each target, an optional ``plot``, and one
``primary_metric`` for the one-line training log and for picking the best checkpoint. Callers use
these methods and never look at which keys a result has.

Summaries are flat: ``{key: int | float | bool | str | None}``, strict-JSON-safe (NaN, inf and
'n/a' become None), without the target's ``name`` and without lists or arrays (curves, per-fold
values). A nested dict of scalars in a result, e.g. ``{'tar_at_far': {1e-4: 0.95}}``, is flattened
into ``'tar_at_far.0.0001'`` by default; ``TarFarEvaluator`` names those keys ``'tar@far=1e-04'``.

A plain object registered in ``EVALUATORS`` with only ``name`` and ``evaluate(model_or_fn,
dist=None)`` still works: ``as_evaluator`` wraps it in ``EvaluatorAdapter``, which gives it the
defaults below (key/value table of the summary, primary metric = the first number of the summary,
no log lines beyond the primary metric, no plot).
"""
import math
import numbers

import numpy as np

from .reporting import ascii_table, format_value

__all__ = ['BaseEvaluator', 'EvaluatorAdapter', 'as_evaluator', 'evaluate_all', 'scalar_summary']


def _scalar(value):
    """``value`` as a JSON-safe scalar, or ``_SKIP`` when it is not a scalar (list, array, dict ...)."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if value is None or isinstance(value, (bool, np.bool_)):
        return None if value is None else bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return None if value == 'n/a' else value
    return _SKIP


_SKIP = object()


def scalar_summary(result):
    """The default summary: scalars of ``result`` (minus ``name``), dicts of scalars flattened to
    ``'key.subkey'``; lists, arrays and deeper structures left out."""
    out = {}
    for key, value in result.items():
        if key == 'name':
            continue
        if isinstance(value, dict):
            for sub, v in value.items():
                v = _scalar(v)
                if v is not _SKIP:
                    out[f'{key}.{sub}'] = v
            continue
        value = _scalar(value)
        if value is not _SKIP:
            out[key] = value
    return out


def _cell(value):
    """A summary value as a table cell: floats with 5 decimals, ints and bools as written, None 'n/a'."""
    return str(value) if isinstance(value, (bool, int)) else format_value(value)


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class BaseEvaluator:
    """Base class of evaluators (mmengine's ``BaseMetric`` is the model).

    A subclass sets ``name`` (the target name: table row, JSON key, checkpoint name
    ``best_<name>.ckpt``) and implements ``evaluate``; everything else has a working default.

    Class attributes:
        primary_metric: summary key of the headline number ('accuracy' for verification); None
            means the first number of the summary.
        greater_is_better: direction of ``primary_metric`` for "best" checkpoints.
        table_title: title of this class's table; None means the class name.
    """
    name = None
    primary_metric = None
    greater_is_better = True
    table_title = None

    def evaluate(self, model_or_embed_fn, dist=None):
        """Run the evaluation; returns a flat result dict (may hold curves as lists/arrays).

        Args:
            model_or_embed_fn: nn.Cell or callable ``(B,3,112,112) float32 -> (B,E)``.
            dist: ``DistInfo`` to shard the work over ranks (every rank calls this); None: one process.
        """
        raise NotImplementedError(f'{type(self).__name__} must implement evaluate(model_or_embed_fn, dist=None)')

    def summary(self, result):
        """Scalar-only, strict-JSON-safe view of ``result`` for logs and metrics.jsonl (see module doc)."""
        return scalar_summary(result)

    def primary_key(self, result):
        """The summary key of the headline number: ``primary_metric``, else the summary's first number."""
        if self.primary_metric is not None:
            return self.primary_metric
        for key, value in self.summary(result).items():
            if _is_number(value):
                return key
        raise ValueError(f'{self.name}: the result has no numeric metric to report; keys: {sorted(result)}')

    def primary_value(self, result):
        """The headline number of ``result`` as a float, or None where it is not measurable ('n/a', NaN)."""
        key = self.primary_key(result)
        summary = self.summary(result)
        if key not in summary:
            raise KeyError(f'{self.name}: primary metric {key!r} is not in the summary; '
                           f'summary keys: {sorted(summary)}')
        value = summary[key]
        return None if value is None else float(value)

    def headline(self, result):
        """``'<name> <primary key>=<value>'`` for the one-line training log ('n/a' when not measurable)."""
        value = self.primary_value(result)
        return f'{self.name} {self.primary_key(result)}={format_value(value)}'

    def log_lines(self, result):
        """Short lines printed after this target was evaluated; default: the headline."""
        return [self.headline(result)]

    def plot(self, result, path):
        """Write a figure of ``result`` (e.g. its ROC) to ``path`` and return the path; None: no figure."""
        return None

    # --- what the test report draws (evaluation.report_files); None: this evaluator has no such data
    def roc(self, result):
        """``(fpr, tpr)`` arrays of the ROC in ``result`` for the report's all-targets ROC figure, or None."""
        return None

    def score_distribution(self, result):
        """The pair scores behind ``result`` for the report's histogram, or None.

        Returns ``dict(genuine=(G,) scores, impostor=(I,) scores, threshold=float, xlabel=str,
        rule=str, threshold_range=(low, high) or None)``; ``rule`` says how the threshold decides.
        """
        return None

    def embedding_norms(self, result):
        """(M,) L2 norms of the raw embeddings behind ``result`` (the report's XNorm figure), or None."""
        return None

    def kind_title(self):
        """Title of this evaluator's table (``report`` groups evaluators by class and this title)."""
        return type(self).table_title or type(self).__name__

    @classmethod
    def table(cls, results, title=None):
        """All ``{name: result}`` of this class as one text table.

        Default: a key/value table of the default summaries (``scalar_summary``; a classmethod has
        no instance to call ``summary`` on), one row per key, one column per
        target; 'n/a' where a target lacks a key or its value is not measurable.
        """
        summaries = {name: scalar_summary(r) for name, r in results.items()}
        keys = []
        for s in summaries.values():
            keys.extend(k for k in s if k not in keys)
        rows = [['metric'] + list(summaries)]
        for key in keys:
            rows.append([key] + [_cell(s.get(key)) for s in summaries.values()])
        return ascii_table(rows, title or cls.table_title or cls.__name__)


class EvaluatorAdapter(BaseEvaluator):
    """``BaseEvaluator`` defaults around a plain object that has ``evaluate`` (and ideally ``name``)."""

    def __init__(self, obj):
        if not callable(getattr(obj, 'evaluate', None)):
            raise TypeError(f'{type(obj).__name__} is not an evaluator: it has no evaluate(model_or_embed_fn) method')
        self.wrapped = obj
        self.name = getattr(obj, 'name', None) or type(obj).__name__

    def __repr__(self):
        return f'EvaluatorAdapter({self.wrapped!r})'

    def evaluate(self, model_or_embed_fn, dist=None):
        # dist is passed only when given, so a plain evaluate(model) works in one process
        if dist is None:
            return self.wrapped.evaluate(model_or_embed_fn)
        return self.wrapped.evaluate(model_or_embed_fn, dist=dist)

    def kind_title(self):
        return type(self.wrapped).__name__


def as_evaluator(obj):
    """``obj`` itself when it is a ``BaseEvaluator``, else ``EvaluatorAdapter(obj)``."""
    return obj if isinstance(obj, BaseEvaluator) else EvaluatorAdapter(obj)


def evaluate_all(evaluators, model_or_fn, dist=None, log=print):
    """Run every evaluator; returns ``{name: result}`` in the evaluators' order.

    Before each evaluator ``log('evaluating <name> ...')``, after it each of its ``log_lines``
    (one call per line). ``log=None`` prints nothing (ranks other than 0). Two evaluators with the
    same name raise ValueError before anything runs (their results would overwrite each other).
    """
    evaluators = [as_evaluator(ev) for ev in evaluators]
    names = [ev.name for ev in evaluators]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f'evaluator names must be unique (they key the results); repeated: {duplicates}')
    results = {}
    for ev in evaluators:
        if log is not None:
            log(f'evaluating {ev.name} ...')
        results[ev.name] = ev.evaluate(model_or_fn, dist=dist)
        if log is not None:
            for line in ev.log_lines(results[ev.name]):
                log(line)
    return results
