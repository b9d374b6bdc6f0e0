"""A user plugin for test_launcher.py: a hook that raises on one rank at one iteration."""
from facekit.engine.hooks import Hook
from facekit.registry import HOOKS


@HOOKS.register_module()
class RaiseOnRankHook(Hook):
    """Raise RuntimeError on ``rank`` after iteration ``at_iter`` (a worker dying mid-run)."""

    def __init__(self, rank=1, at_iter=2):
        self.rank, self.at_iter = int(rank), int(at_iter)

    def after_train_iter(self, runner):
        if runner.rank == self.rank and runner.iter >= self.at_iter:
            raise RuntimeError(f'planted fault on rank {self.rank} at iteration {runner.iter}')
