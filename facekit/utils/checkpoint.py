"""Checkpoint files: atomic writes and strict, explained loading.

A checkpoint is a MindSpore ``.ckpt`` file. Model parameters keep the names of
``cell.parameters_and_names()`` (``backbone.*``, ``head.*`` for a FaceRecognizer); ``extra``
entries (epoch, iteration, loss scale, optimizer moments ...) are stored beside them.
"""
import os
import os.path as osp

import numpy as np


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


def save_checkpoint(params_or_cell, path, extra=None):
    """Write a checkpoint atomically: a temporary file in the same folder, then rename.

    Args:
        params_or_cell: an ``nn.Cell``, a dict name -> Parameter/Tensor/ndarray, or (name, value) pairs.
        path: destination ``.ckpt`` path; its folder is created.
        extra: dict name -> scalar, ndarray or Tensor stored alongside (e.g. ``{'epoch': 3}``).
    An interruption leaves either the previous file or the new one, never half of one.
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
    tmp = osp.join(folder, f'.{osp.basename(path)}.tmp-{os.getpid()}.ckpt')
    try:
        ms.save_checkpoint(entries, tmp)
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
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
