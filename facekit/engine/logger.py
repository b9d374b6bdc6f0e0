"""The run's log: console and ``work_dir/train.log`` on rank 0, silent on other ranks."""
import logging
import os.path as osp
import sys

__all__ = ['RunLogger']


class RunLogger:
    """``info(msg)`` writes a timestamped line to stdout and, once ``attach``ed, to a file in ``work_dir``.

    Args:
        work_dir: folder of the log file (created by the caller).
        enabled: False on ranks other than 0: messages are dropped.
    """

    _FORMAT = logging.Formatter('%(asctime)s %(message)s', '%Y-%m-%d %H:%M:%S')

    def __init__(self, work_dir, enabled=True):
        self.work_dir = work_dir
        self.enabled = enabled
        self._files = set()
        self._logger = logging.getLogger(f'facekit.run.{id(self)}')
        self._logger.setLevel(logging.INFO)
        self._logger.propagate = False
        if enabled:
            self._add(logging.StreamHandler(sys.stdout))

    def _add(self, handler):
        handler.setFormatter(self._FORMAT)
        self._logger.addHandler(handler)

    def attach(self, filename):
        """Also write to ``<work_dir>/<filename>`` (train.log, test.log); once per name."""
        if self.enabled and filename not in self._files:
            self._files.add(filename)
            self._add(logging.FileHandler(osp.join(self.work_dir, filename)))

    def info(self, msg):
        self._logger.info(msg)
        for h in self._logger.handlers:
            h.flush()

    def close(self):
        for h in list(self._logger.handlers):
            h.close()
            self._logger.removeHandler(h)
