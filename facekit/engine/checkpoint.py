"""Training checkpoints: one naming rule, and the full training state saved and restored.

Names: periodic checkpoints are ``epoch_<E>.ckpt`` or ``iter_<I>.ckpt``; ``best_<target>.ckpt``
holds the best evaluation so far; ``last_checkpoint`` (a text file) names the newest periodic one.
A head whose class centres are sharded over ranks (PartialFC on several ranks) writes the other
ranks' rows to ``<name>.rank<R>.ckpt`` beside rank 0's file.

A checkpoint holds model parameters (``backbone.*``, ``head.*``), optimizer state (``optimizer.*``)
``train_state.*`` scalars (epoch, iter, loss scale and its counter, seed, world size, skipped
steps, the accumulation's micro-batches per optimizer step) and ``hook_state.<HookClass>.<key>`` float64 values (each hook's ``state_dict()``, e.g.
``hook_state.EvalHook.best.<evaluator>``; a second hook of the same class is ``<HookClass>_2``). The head re-shards its own rows through ``BaseHead.shard_slice()`` when the number of ranks
changed between save and resume.

With gradient accumulation (``optimizer.accumulative_counts`` k > 1) a checkpoint written inside an
accumulation group also holds ``accumulation.*`` (``TrainStep.accumulation_state()``: the summed
gradients so far, the state to restore if the group turns out unhealthy, the group's health and
micro-step), so the resumed run finishes that group exactly; at a group boundary there is nothing to
hold. A run resumes only with the k it was written with.
"""
import glob
import os
import os.path as osp
import re

import numpy as np

from ..utils.checkpoint import load_checkpoint, load_state_into, nonfinite_entries, save_checkpoint, temp_path
from . import dist
from .optim import optimizer_state

__all__ = ['PERIODIC_NAME', 'periodic_name', 'is_periodic', 'list_periodic', 'find_latest_checkpoint',
           'checkpoint_files', 'save_training_state', 'load_training_state', 'load_weights', 'unsaved_random_cells',
           'OPT_PREFIX', 'STATE_PREFIX', 'HOOK_PREFIX', 'ACCUM_PREFIX', 'NonFiniteStateError']

PERIODIC_NAME = re.compile(r'(epoch|iter)_(\d+)\.ckpt$')
OPT_PREFIX = 'optimizer.'
STATE_PREFIX = 'train_state.'
HOOK_PREFIX = 'hook_state.'
ACCUM_PREFIX = 'accumulation.'
# keys <prefix><owner>.<parameter name> that hold a per-parameter value of another cell
_PER_PARAM_PREFIXES = (OPT_PREFIX, ACCUM_PREFIX)
LAST_MARKER = 'last_checkpoint'


def periodic_name(by_epoch, count):
    """``epoch_<count>.ckpt`` or ``iter_<count>.ckpt``."""
    return f"{'epoch' if by_epoch else 'iter'}_{int(count)}.ckpt"


def is_periodic(path):
    """True for ``epoch_N.ckpt`` / ``iter_N.ckpt`` (not best_*, not rank shard files)."""
    return PERIODIC_NAME.match(osp.basename(path)) is not None


def list_periodic(work_dir):
    """Periodic checkpoints in ``work_dir``, oldest first (by modification time)."""
    found = [(osp.getmtime(p), p) for p in glob.glob(osp.join(work_dir, '*.ckpt')) if is_periodic(p)]
    return [p for _, p in sorted(found)]


def find_latest_checkpoint(work_dir):
    """The checkpoint named in ``work_dir/last_checkpoint``, else the newest periodic one, else None."""
    marker = osp.join(work_dir, LAST_MARKER)
    if osp.isfile(marker):
        with open(marker, encoding='utf-8') as f:
            path = f.read().strip()
        if path and not osp.isabs(path):
            path = osp.join(work_dir, path)
        if osp.isfile(path):
            return path
    found = list_periodic(work_dir)
    return found[-1] if found else None


def checkpoint_files(path):
    """Files that make up checkpoint ``path``: itself and its rank shard files."""
    return [path] + sorted(glob.glob(path[:-len('.ckpt')] + '.rank*.ckpt'))


def _rank_file(path, rank):
    return f"{path[:-len('.ckpt')]}.rank{rank}.ckpt"


def sharded_head(model):
    """The model's head when its class centres are split over ranks, else None."""
    from ..models.heads.base import BaseHead
    head = getattr(model, 'head', None)
    return head if isinstance(head, BaseHead) and head.is_sharded else None


def _bare_name(key):
    """The model parameter a checkpoint key belongs to: ``optimizer.moments.head.weight`` -> ``head.weight``."""
    for prefix in _PER_PARAM_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):].split('.', 1)[-1]
    return key


def _head_sharded_keys(model, keys):
    """Checkpoint keys holding rows of the sharded head's per-class parameters (model and optimizer)."""
    head = sharded_head(model)
    if head is None:
        return []
    names = {'head.' + n for n in head.sharded_param_names()}
    out = []
    for key in keys:
        if _bare_name(key) in names:
            out.append(key)
    return out


def _hook_ids(hooks):
    """(id, hook) pairs: the class name, ``<name>_2``, ``<name>_3`` ... for repeats, in hook order."""
    seen = {}
    out = []
    for hook in hooks:
        name = type(hook).__name__
        seen[name] = seen.get(name, 0) + 1
        out.append((name if seen[name] == 1 else f'{name}_{seen[name]}', hook))
    return out


def _hook_entries(hooks):
    entries = {}
    for hid, hook in _hook_ids(hooks):
        for key, value in hook.state_dict().items():
            entries[f'{HOOK_PREFIX}{hid}.{key}'] = np.asarray(value, dtype=np.float64)
    return entries


def _restore_hooks(runner, params, path):
    """Hand every hook its ``hook_state.*`` entries (``{}`` when it saved none)."""
    saved = {}
    for key, value in params.items():
        if key.startswith(HOOK_PREFIX):
            hid, sub = key[len(HOOK_PREFIX):].split('.', 1)
            arr = value.asnumpy()
            saved.setdefault(hid, {})[sub] = float(arr) if arr.ndim == 0 else arr
    ids = dict(_hook_ids(runner.hooks))
    for hid, hook in ids.items():
        hook.load_state_dict(saved.get(hid, {}))
    orphans = sorted(set(saved) - set(ids))
    if orphans:
        runner.log(f'{path}: hook state of {orphans} not restored: no such hook in this run')


def unsaved_random_cells(model):
    """Names of the model's cells that draw from kernel-seeded MindSpore random ops in training.

    ``nn.Dropout`` and ``ops.rand`` (drop-path, token masking: a ``drop_path_rate`` or
    ``mask_ratio`` above 0) keep their stream inside the compiled kernel; MindSpore 2.x exposes no
    way to read or set it (``mindspore.get_rng_state`` covers only the default generator), so a
    resumed run restarts those streams: its continuation is then equal in distribution, not bit
    for bit. The demo configs use none of them.
    """
    from mindspore import nn
    found = []
    for name, cell in model.cells_and_names():
        if (isinstance(cell, nn.Dropout) or float(getattr(cell, 'drop_path_rate', 0) or 0) > 0
                or float(getattr(cell, 'mask_ratio', 0) or 0) > 0):
            found.append(name or type(cell).__name__)
    return found


def _state_entries(runner):
    entries = dict(runner.model.parameters_and_names())
    for name, param in optimizer_state(runner.optimizer, runner.model_param_names).items():
        entries[OPT_PREFIX + name] = param
    step = runner.train_step
    extra = {
        STATE_PREFIX + 'epoch': np.int64(runner.epoch),
        STATE_PREFIX + 'iter': np.int64(runner.iter),
        STATE_PREFIX + 'loss_scale': np.float32(step.loss_scale.asnumpy()),
        STATE_PREFIX + 'loss_scale_clean_steps': np.int32(step.clean_steps.asnumpy()),
        STATE_PREFIX + 'seed': np.int64(runner.seed if runner.seed is not None else -1),
        STATE_PREFIX + 'world_size': np.int64(runner.world_size),
        STATE_PREFIX + 'skipped_steps': np.int64(runner.skipped_steps),
        STATE_PREFIX + 'accumulative_counts': np.int64(step.accumulative_counts),
    }
    if step.micro_step:     # inside an accumulation group; at a boundary its state is empty by definition
        for key, param in step.accumulation_state().items():
            entries[ACCUM_PREFIX + key] = param
    extra.update(_hook_entries(runner.hooks))
    return entries, extra


class NonFiniteStateError(ValueError):
    """The training state holds NaN/Inf values, so it was not written; ``names`` lists the entries."""

    def __init__(self, message, names):
        super().__init__(message)
        self.names = list(names)


def save_training_state(runner, path):
    """Write the runner's full training state to ``path`` atomically (every rank must call this).

    Replicated parameters are identical on every rank, so rank 0's file holds them; each other rank
    of a sharded head writes its head rows and their optimizer state to ``<path>.rank<R>.ckpt``.
    A periodic checkpoint also becomes ``last_checkpoint``.

    A state holding NaN/Inf (model parameters, BN statistics, optimizer state, loss scale) is never
    written: ``NonFiniteStateError`` names the non-finite entries. Each rank checks everything it
    holds (the replicated state and its own head rows), so all ranks refuse together.
    """
    entries, extra = _state_entries(runner)
    bad = [name for name, _, _ in nonfinite_entries({**entries, **extra}.items())]
    if bad:
        last = find_latest_checkpoint(runner.work_dir)
        raise NonFiniteStateError(
            f'checkpoint {path} not written: NaN/Inf in {len(bad)} of {len(entries) + len(extra)} state entries '
            f'({", ".join(bad[:6])}{", ..." if len(bad) > 6 else ""}) at iteration {runner.iter}; '
            f'last good checkpoint: {last or "none written yet"}', bad)
    last_good = find_latest_checkpoint(osp.dirname(osp.abspath(path)))
    if runner.rank == 0:
        save_checkpoint(entries, path, extra=extra, last_good=last_good)
        if is_periodic(path):
            marker = osp.join(osp.dirname(path), LAST_MARKER)
            tmp = temp_path(marker)[:-len('.ckpt')]     # .last_checkpoint.tmp-<pid>
            try:
                with open(tmp, 'w', encoding='utf-8') as f:
                    f.write(osp.basename(path))
                os.replace(tmp, marker)
            finally:
                if osp.exists(tmp):
                    os.remove(tmp)
    else:
        keys = _head_sharded_keys(runner.model, entries)
        # an open accumulation group holds this rank's own gradient sums (reduced only at the group's end)
        keys += [k for k in entries if k.startswith(ACCUM_PREFIX) and k not in keys]
        if keys:
            save_checkpoint({k: entries[k] for k in keys}, _rank_file(path, runner.rank), extra=extra,
                            last_good=last_good)
    dist.barrier()


def _reshard(model, path, params, saved_world):
    """Replace the sharded head's rows in ``params`` by this rank's rows of the re-assembled full state.

    Shards are consecutive class ranges in rank order: concatenating the saved ranks' rows gives the
    full (num_classes, ...) tensor, which the head then cuts with ``shard_slice()``.
    """
    import mindspore as ms
    head = getattr(model, 'head', None)
    parts = [params]
    for r in range(1, saved_world):
        rank_file = _rank_file(path, r)
        if not osp.isfile(rank_file):
            raise FileNotFoundError(f'{path} was written by {saved_world} ranks with a sharded head, '
                                    f'but its shard file {rank_file} is missing')
        parts.append(load_checkpoint(rank_file))
    from ..models.heads.base import BaseHead
    if not isinstance(head, BaseHead):
        return params
    names = {'head.' + n for n in head.sharded_param_names()}
    start, num_local = head.shard_slice()
    for key in list(params):
        if _bare_name(key) not in names:
            continue
        full = np.concatenate([p[key].asnumpy() for p in parts], axis=0)
        if full.shape[0] != head.num_classes:
            raise ValueError(f'{path}: {key} re-assembled from {saved_world} rank file(s) has '
                             f'{full.shape[0]} rows, the head has {head.num_classes} classes')
        params[key] = ms.Parameter(ms.Tensor(full[start:start + num_local]), name=key)
    return params


def load_training_state(runner, path):
    """Restore model, optimizer, loss scale, epoch, iteration, counters and hook state from ``path``.

    The hooks must already be built (``runner.hooks``); each gets its saved ``state_dict()``.

    A sharded head saved by a different number of ranks is re-sharded for this one.
    """
    import mindspore as ms
    params = load_checkpoint(path)
    key_world = STATE_PREFIX + 'world_size'
    saved_world = int(params[key_world].asnumpy()) if key_world in params else 1
    saved_sharded = saved_world > 1 and osp.isfile(_rank_file(path, 1))
    if saved_sharded or sharded_head(runner.model) is not None:
        params = _reshard(runner.model, path, params, saved_world if saved_sharded else 1)
        if saved_world != runner.world_size:
            runner.log(f'{path}: sharded head re-sharded from {saved_world} to {runner.world_size} rank(s)')
    model_params = {k: v for k, v in params.items()
                    if not k.startswith((OPT_PREFIX, STATE_PREFIX, HOOK_PREFIX, ACCUM_PREFIX))}
    load_state_into(runner.model, model_params, strict=True)
    opt_state = optimizer_state(runner.optimizer, runner.model_param_names)
    missing = [n for n in opt_state if OPT_PREFIX + n not in params]
    if missing:
        raise ValueError(f'{path} lacks optimizer state {missing[:5]} (was it written with another optimizer '
                         f'type? use --load-from to start a fresh optimizer)')
    for name, param in opt_state.items():
        value = params[OPT_PREFIX + name]
        if tuple(value.shape) != tuple(param.shape):
            raise ValueError(f'{path}: optimizer state {name} has shape {tuple(value.shape)}, '
                             f'the optimizer expects {tuple(param.shape)}')
        param.set_data(ms.Tensor(value.asnumpy()).astype(param.dtype))

    def scalar(name):
        key = STATE_PREFIX + name
        if key not in params:
            raise ValueError(f'{path} lacks {key}: it is not a facekit training checkpoint '
                             f'(use --load-from to start from its weights)')
        return params[key].asnumpy()
    runner.epoch = int(scalar('epoch'))
    runner.iter = int(scalar('iter'))
    runner.skipped_steps = int(scalar('skipped_steps'))
    runner.train_step.loss_scale.set_data(ms.Tensor(np.float32(scalar('loss_scale'))))
    runner.train_step.clean_steps.set_data(ms.Tensor(np.int32(scalar('loss_scale_clean_steps'))))
    _restore_accumulation(runner, params, path)
    _restore_hooks(runner, params, path)
    random_cells = unsaved_random_cells(runner.model)
    if random_cells:
        runner.log(f'note: {random_cells[:5]} draw from MindSpore random kernels whose state no checkpoint '
                   f'holds (dropout, drop_path_rate, mask_ratio); the resumed run restarts those streams, so '
                   f'it is not bit-identical to an uninterrupted one')


def _restore_accumulation(runner, params, path):
    """Put back an open accumulation group (or empty it when the checkpoint was written at a boundary)."""
    import mindspore as ms
    step = runner.train_step
    key_k = STATE_PREFIX + 'accumulative_counts'
    saved_k = int(params[key_k].asnumpy()) if key_k in params else 1     # written before accumulation existed
    if saved_k != step.accumulative_counts:
        raise ValueError(f'{path} was written with optimizer.accumulative_counts={saved_k}, this run has '
                         f'{step.accumulative_counts}: iterations count micro-batches, so the iteration, epoch '
                         f'and lr schedule positions would not match; resume with accumulative_counts={saved_k} '
                         f'or start a new run from its weights with load_from')
    saved = {k[len(ACCUM_PREFIX):]: v for k, v in params.items() if k.startswith(ACCUM_PREFIX)}
    if saved:
        key_world = STATE_PREFIX + 'world_size'
        saved_world = int(params[key_world].asnumpy()) if key_world in params else 1
        if saved_world != runner.world_size:
            raise ValueError(f'{path} was written inside an accumulation group by {saved_world} rank(s); each rank '
                             f'holds its own partial gradient sums, so it resumes only on {saved_world} rank(s), '
                             f'not {runner.world_size} (a checkpoint at a group boundary has no such limit)')
        if runner.rank > 0:
            head = sharded_head(runner.model)
            sharded = {'head.' + n for n in head.sharded_param_names()} if head is not None else set()
            own = load_checkpoint(_rank_file(path, runner.rank))
            saved.update({k[len(ACCUM_PREFIX):]: v for k, v in own.items()
                          if k.startswith(ACCUM_PREFIX) and _bare_name(k) not in sharded})
    if not saved:
        step.reset_accumulation()
    else:
        state = step.accumulation_state()
        missing = sorted(set(state) - set(saved))
        if missing:
            raise ValueError(f'{path} holds an open accumulation group but lacks {ACCUM_PREFIX}{missing[0]} '
                             f'({len(missing)} entries missing)')
        for key, param in state.items():
            value = saved[key].asnumpy()
            if tuple(value.shape) != tuple(param.shape):
                raise ValueError(f'{path}: {ACCUM_PREFIX}{key} has shape {tuple(value.shape)}, the training step '
                                 f'expects {tuple(param.shape)}')
            param.set_data(ms.Tensor(value).astype(param.dtype))
    expected = runner.iter % step.accumulative_counts
    if step.micro_step != expected:
        raise ValueError(f'{path}: iteration {runner.iter} is micro-batch {expected} of its accumulation group '
                         f'(accumulative_counts={step.accumulative_counts}), but the checkpoint holds '
                         f'micro-step {step.micro_step}')


def load_weights(model, path, log):
    """Fine-tuning start: load the backbone from ``path``; the head too when its shapes match."""
    params = load_checkpoint(path)
    backbone = {k[len('backbone.'):]: v for k, v in params.items() if k.startswith('backbone.')}
    if not backbone:
        raise ValueError(f'{path} has no backbone.* parameters to load')
    load_state_into(model.backbone, backbone, strict=True)
    head = {k[len('head.'):]: v for k, v in params.items() if k.startswith('head.')}
    head_params = dict(model.head.parameters_and_names())
    same = head and set(head) == set(head_params) and all(
        tuple(head[n].shape) == tuple(p.shape) for n, p in head_params.items())
    if same:
        load_state_into(model.head, head, strict=True)
        log(f'loaded backbone and head from {path}')
    else:
        log(f'loaded backbone from {path}; head re-initialised (its classes/shapes differ or it is absent)')
