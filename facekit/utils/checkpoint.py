"""Checkpoint files: atomic writes and strict, explained loading.

A checkpoint is a MindSpore ``.ckpt`` file. Model parameters keep the names of
``cell.parameters_and_names()`` (``backbone.*``, ``head.*`` for a FaceRecognizer); ``extra``
entries (epoch, iteration, loss scale, optimizer moments ...) are stored beside them.

A write goes to ``.<name>.tmp-<pid>.ckpt`` in the destination folder (MindSpore itself first
writes ``.<name>.tmp-<pid>.tmp`` and renames it), then replaces ``<name>``. A failed write removes
both temporary files; a killed one leaves them for ``remove_stale_temp_files`` at the next start.
"""
import contextlib
import errno
import os
import os.path as osp
import re
import shutil

import numpy as np

# facekit's temporary files: `.iter_8.ckpt.tmp-1234.ckpt`, `.iter_8.ckpt.tmp-1234.tmp` (MindSpore's
# own temporary name for the former), `.last_checkpoint.tmp-1234` (engine.checkpoint's marker).
TEMP_NAME = re.compile(r'^\.(?P<target>.+\.ckpt|last_checkpoint)\.tmp-(?P<pid>\d+)(\.ckpt|\.tmp)?$')
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class CheckpointMismatchError(ValueError):
    """A checkpoint's parameters do not fit the cell they are loaded into."""


class NonFiniteCheckpointError(ValueError):
    """A checkpoint holds NaN or inf parameters (typically BatchNorm statistics of a diverged run)."""


def nonfinite_entries(named_values):
    """``[(name, n_nan, n_inf), ...]`` of the floating-point entries holding NaN or inf, in the given order.

    Args:
        named_values: (name, Parameter/Tensor/ndarray) pairs, e.g. ``dict.items()`` or
            ``cell.parameters_and_names()``.
    """
    out = []
    for name, value in named_values:
        if hasattr(value, 'asnumpy'):
            value = value.asnumpy()
        value = np.asarray(value)
        if not np.issubdtype(value.dtype, np.floating):
            continue
        finite = np.isfinite(value)
        if not finite.all():
            n_nan = int(np.isnan(value).sum())
            out.append((name, n_nan, int(value.size - finite.sum()) - n_nan))
    return out


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (e.g. the disk is full); no partial file is left and the
    file previously at the destination, if any, is untouched. ``errno`` is the cause's."""

    def __init__(self, message, cause_errno=None):
        super().__init__(message)
        self.errno = cause_errno


def temp_path(path, pid=None):
    """The temporary file ``save_checkpoint`` writes before renaming it to ``path``."""
    path = str(path)
    return osp.join(osp.dirname(osp.abspath(path)), f'.{osp.basename(path)}.tmp-{pid or os.getpid()}.ckpt')


def _remove_quietly(*paths):
    for p in paths:
        with contextlib.suppress(FileNotFoundError):   # already gone is what we want
            os.remove(p)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_files(folder, started_at):
    """Remove facekit's temporary checkpoint files left in ``folder`` by earlier, crashed writes.

    A temporary file is stale when the process that wrote it is gone (or is this one: nothing is
    being written when this is called at start-up) or when it is older than ``started_at`` (epoch
    seconds, this run's start). Other files are never touched. Returns the removed paths.
    """
    removed = []
    if not osp.isdir(folder):
        return removed
    for name in os.listdir(folder):
        m = TEMP_NAME.match(name)
        if m is None:
            continue
        path = osp.join(folder, name)
        pid = int(m.group('pid'))
        with contextlib.suppress(FileNotFoundError):   # another process removed it first: nothing to do
            stale = pid == os.getpid() or not _pid_alive(pid) or osp.getmtime(path) < started_at
            if stale and osp.isfile(path):
                os.remove(path)
                removed.append(path)
    return removed


def _nbytes(entries):
    """Bytes of the tensors in ``entries`` (about the size of the checkpoint file)."""
    return sum(int(e['data'].nbytes) for e in entries)


def _mb(n):
    return f'{n / 2 ** 20:.1f} MiB'


def _as_save_list(params_or_cell):
    import mindspore as ms
    if isinstance(params_or_cell, ms.nn.Cell):
        items = params_or_cell.parameters_and_names()
    elif isinstance(params_or_cell, dict):
        items = params_or_cell.items()
    else:
        items = params_or_cell
    out = []
    for name, value in items:
        if isinstance(value, np.ndarray):
            value = ms.Tensor(value)
        elif isinstance(value, (int, float, bool, np.integer, np.floating)):
            value = ms.Tensor(np.asarray(value))
        out.append({'name': name, 'data': value})
    return out


def save_checkpoint(params_or_cell, path, extra=None, last_good=None):
    """Write a checkpoint atomically: a temporary file in the same folder, then rename.

    Args:
        params_or_cell: an ``nn.Cell``, a dict name -> Parameter/Tensor/ndarray, or (name, value) pairs.
        path: destination ``.ckpt`` path; its folder is created.
        extra: dict name -> scalar, ndarray or Tensor stored alongside (e.g. ``{'epoch': 3}``).
        last_good: the newest good checkpoint of this run, named in the error when the write fails.
    An interruption leaves either the previous file or the new one, never half of one. A failure
    removes the temporary files; a full disk (ENOSPC/EDQUOT) raises ``CheckpointWriteError`` naming
    the checkpoint, the space it needs and the space available, and ``last_good``.
    """
    import mindspore as ms
    path = str(path)
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    entries = _as_save_list(params_or_cell)
    if extra:
        names = {e['name'] for e in entries}
        clash = sorted(names.intersection(extra))
        if clash:
            raise ValueError(f'extra keys {clash} clash with parameter names in checkpoint {path}')
        entries += _as_save_list(extra)
    tmp = temp_path(path)
    ms_tmp = osp.splitext(tmp)[0] + '.tmp'     # MindSpore writes here, then renames to tmp
    try:
        ms.save_checkpoint(entries, tmp)
        os.replace(tmp, path)
    except BaseException as e:
        _remove_quietly(tmp, ms_tmp)
        if isinstance(e, OSError) and e.errno in _NO_SPACE:
            free = shutil.disk_usage(folder).free
            previous = f'the previous {path} is untouched; ' if osp.isfile(path) else ''
            good = f'last good checkpoint: {last_good}' if last_good else 'no earlier checkpoint of this run'
            raise CheckpointWriteError(
                f'cannot write checkpoint {path}: no space left on device ({os.strerror(e.errno)}): it needs '
                f'{_mb(_nbytes(entries))}, {_mb(free)} free in {folder}; nothing was written, '
                f'{previous}{good}', e.errno) from e
        raise
    return path


class CheckpointReadError(ValueError):
    """A checkpoint file is empty, truncated or not a MindSpore checkpoint."""


def load_checkpoint(path):
    """Read a checkpoint into a dict name -> ``mindspore.Parameter``.

    Raises FileNotFoundError, or ``CheckpointReadError`` naming the file and its size when it is
    empty or cannot be parsed (truncated copy, wrong file).
    """
    import mindspore as ms
    path = str(path)
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    size = osp.getsize(path)
    if size == 0:
        raise CheckpointReadError(f'checkpoint {path} is empty (0 bytes): an interrupted copy or save? '
                                  'use another checkpoint')
    try:
        params = ms.load_checkpoint(path)
    except Exception as e:
        raise CheckpointReadError(f'cannot read checkpoint {path} ({size} bytes): not a complete MindSpore '
                                  f'checkpoint (truncated or another format?): {type(e).__name__}: {e}') from e
    if not params:
        raise CheckpointReadError(f'checkpoint {path} ({size} bytes) holds no parameters: '
                                  'truncated or not a MindSpore checkpoint')
    return params


def load_state_into(cell, param_dict, prefix='', strict=True):
    """Copy checkpoint values into ``cell``'s parameters.

    Args:
        cell: the target ``nn.Cell``.
        param_dict: dict name -> Parameter/Tensor/ndarray (e.g. from ``load_checkpoint``).
        prefix: only checkpoint names starting with it are used, with it stripped
            (``'backbone.'`` loads a FaceRecognizer checkpoint into a bare backbone).
        strict: raise ``CheckpointMismatchError`` on any missing, unexpected or mis-shaped name.
    Returns:
        (missing, unexpected): cell parameter names not found, checkpoint names not used.
    """
    import mindspore as ms
    source = {}
    for name, value in param_dict.items():
        if prefix:
            if not name.startswith(prefix):
                continue
            name = name[len(prefix):]
        source[name] = value
    targets = dict(cell.parameters_and_names())
    missing = sorted(n for n in targets if n not in source)
    unexpected = sorted(n for n in source if n not in targets)
    mismatched = []
    for name, param in targets.items():
        if name in source:
            value = source[name]
            shape = tuple(value.shape)
            if shape != tuple(param.shape):
                mismatched.append(f'{name}: checkpoint {shape} vs model {tuple(param.shape)}')
    if mismatched or (strict and (missing or unexpected)):
        lines = []
        if mismatched:
            lines.append('shape mismatch: ' + '; '.join(mismatched[:20]))
        if strict and missing:
            lines.append(f'missing in checkpoint ({len(missing)}): ' + ', '.join(missing[:20]))
        if strict and unexpected:
            lines.append(f'not in model ({len(unexpected)}): ' + ', '.join(unexpected[:20]))
        where = f" (prefix '{prefix}')" if prefix else ''
        raise CheckpointMismatchError(f'checkpoint does not match {type(cell).__name__}{where}: '
                                      + ' | '.join(lines))
    for name, param in targets.items():
        if name in source:
            value = source[name]
            if isinstance(value, ms.Parameter):
                value = value.value()
            elif not isinstance(value, ms.Tensor):
                value = ms.Tensor(np.asarray(value))
            param.set_data(value.astype(param.dtype))
    return missing, unexpected
