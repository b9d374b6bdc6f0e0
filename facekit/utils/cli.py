"""The command-line contract shared by every tool: a user error is one line, never a traceback.

    parser = cli.ArgumentParser(description=...)      # adds --debug; usage errors are one line too
    ...
    if __name__ == '__main__':
        sys.exit(cli.run_tool(main))

``run_tool(main, argv)`` calls ``main(argv)`` and turns the library's user-error exceptions into
one line on stderr: ``config error: <message>`` (exit 2) for a config problem, ``error: <message>``
(exit 1) for a bad file or input, a divergent run, a wrong checkpoint, and (exit 2) for a wrong launch
(several mpirun copies without msrun). Anything else is a bug and
keeps its traceback. ``--debug`` anywhere on the command line re-raises, traceback included.

The exception types are looked up by name in ``sys.modules`` only (a module not imported cannot
have raised), so this foundation module imports nothing else of facekit.
"""
import argparse
import sys

__all__ = ['ArgumentParser', 'run_tool', 'error_line', 'fail', 'shown_path', 'USER_ERRORS']

# (module, class name, exit status): the library's exceptions that describe the user's input.
USER_ERRORS = (
    ('facekit.config', 'ConfigError', 2),
    ('facekit.utils.checkpoint', 'CheckpointMismatchError', 1),
    ('facekit.datasets.verification_bin', 'UnsafeFileError', 1),
    ('facekit.datasets.recordio', 'RecordIOError', 1),
    ('facekit.apis.onnx_import', 'ConversionError', 1),
    ('facekit.engine.runner', 'NonFiniteLossError', 1),
    ('facekit.engine.dist', 'LaunchError', 2),
)
# Built-in types that facekit raises for bad input files and values (a missing file, an unreadable
# image, a truncated .bin, a custom_imports module that does not import, a registry name that
# does not exist: KeyError with the close names).
BUILTIN_USER_ERRORS = ((ImportError, 2), (SyntaxError, 2), (OSError, 1), (ValueError, 1), (KeyError, 1))


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with ``--debug`` and one-line usage errors (``error: ...``, exit 2)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument('--debug', action='store_true',
                          help='show the full traceback of an error instead of one line')

    def error(self, message):
        print(f'error: {_one_line(message)} (usage: {self.prog} -h)', file=sys.stderr)
        sys.exit(2)


def _one_line(text):
    return ' '.join(str(text).split())


def _message(exc):
    # KeyError('msg') prints as "'msg'"; the registry's messages are whole sentences.
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]
    text = str(exc)
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in text:
        text = f'{text}: {exc.filename}'
    return text or type(exc).__name__


def _classify(exc):
    """Exit status for a user error, or None for a bug."""
    for module, name, code in USER_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(exc, cls):
            return code
    for cls, code in BUILTIN_USER_ERRORS:
        if isinstance(exc, cls):
            return code
    return None


def error_line(exc):
    """The one line printed for ``exc``: ``config error: ...`` for config problems, else ``error: ...``."""
    config_error = getattr(sys.modules.get('facekit.config'), 'ConfigError', None)
    prefix = 'config error' if config_error is not None and isinstance(exc, config_error) else 'error'
    return f'{prefix}: {_one_line(_message(exc))}'


def shown_path(path):
    """``path`` as a user would type it here: relative to the current folder when inside it, else unchanged."""
    import os.path as osp
    path = str(path)
    if osp.isabs(path):
        rel = osp.relpath(path)
        if not rel.startswith('..'):
            return rel
    return path


def fail(message, code=1):
    """Print ``error: message`` on stderr and return ``code`` (for a tool's own checks)."""
    print(f'error: {_one_line(message)}', file=sys.stderr)
    return code


def run_tool(main, argv=None):
    """``main(argv)`` with user errors as one line; returns the exit status for ``sys.exit``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if '--debug' in argv:
        return main(argv)
    try:
        return main(argv)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 -- sorted into user errors and bugs just below
        code = _classify(exc)
        if code is None:
            raise
        print(error_line(exc), file=sys.stderr)
        return code
