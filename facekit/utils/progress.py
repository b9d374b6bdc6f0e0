"""Progress bars with ETA for long steps (embedding, converters, benchmarks): the one place that decides
whether a bar is drawn.

A bar is drawn only when its stream (stderr, where tqdm writes) is a terminal and the environment
is not CI (``CI`` set to anything but ``''``, ``0``, ``false`` or ``no``, as CI services set
``CI=true``). Logs captured to a file or a pipe therefore never fill with carriage-return frames.
A caller may also turn bars off (``enabled=False``, e.g. a tool's ``--no-progress``).
"""
import os
import sys

__all__ = ['progress_enabled', 'progress_bar']

_FALSE = ('', '0', 'false', 'no', 'off')


def progress_enabled(stream=None, environ=None):
    """True when a bar on ``stream`` (default ``sys.stderr``) would be seen by a person.

    Args:
        stream: the stream the bar writes to; it must have ``isatty()`` returning True.
        environ: the environment to read ``CI`` from (default ``os.environ``).
    """
    stream = sys.stderr if stream is None else stream
    environ = os.environ if environ is None else environ
    if str(environ.get('CI', '')).strip().lower() not in _FALSE:
        return False
    isatty = getattr(stream, 'isatty', None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):    # a closed stream
        return False


def progress_bar(iterable=None, total=None, desc=None, unit='it', enabled=True, stream=None, **kwargs):
    """A ``tqdm`` bar over ``iterable`` (or updated by hand with ``total``), silent unless
    ``enabled`` and ``progress_enabled(stream)``. Extra keyword arguments go to ``tqdm``.

    The bar is a no-op object when disabled, so callers write the same code either way.
    """
    from tqdm import tqdm
    stream = sys.stderr if stream is None else stream
    show = bool(enabled) and progress_enabled(stream)
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not show, file=stream, dynamic_ncols=True,
                **kwargs)
