"""Learning-rate schedules stepped per iteration (LR_SCHEDULES registry).

A schedule is a pure function of the global iteration: ``schedule(it) -> lr`` (Python float),
so resuming at iteration ``it`` gives exactly the lr of an uninterrupted run. Configs give
lengths in epochs (``warmup_epochs``, ``milestones_epochs``); ``build_lr_schedule`` converts
them with the dataloader's iterations per epoch.

Warmup (all schedules): for ``it < warmup_iters`` the lr rises linearly from
``base_lr * warmup_start_factor`` to ``base_lr`` (the reference starts at 0).
"""
import abc
import math

from ..registry import LR_SCHEDULES

__all__ = ['LRSchedule', 'PolyLR', 'CosineLR', 'MultiStepLR', 'ConstantLR', 'build_lr_schedule']


class LRSchedule(abc.ABC):
    """Base: linear warmup, then ``self.decay(progress)`` for the remaining iterations.

    Args:
        base_lr: the peak learning rate.
        max_iters: total training iterations.
        warmup_iters: linear-warmup iterations.
        warmup_start_factor: lr at iteration 0 as a fraction of ``base_lr``.
    """

    def __init__(self, base_lr, max_iters, warmup_iters=0, warmup_start_factor=0.0):
        if max_iters <= 0:
            raise ValueError(f'{type(self).__name__}: max_iters must be > 0, got {max_iters}')
        if not 0 <= warmup_iters <= max_iters:
            raise ValueError(f'{type(self).__name__}: warmup_iters={warmup_iters} must be in '
                             f'[0, max_iters={max_iters}]')
        self.base_lr = float(base_lr)
        self.max_iters = int(max_iters)
        self.warmup_iters = int(warmup_iters)
        self.warmup_start_factor = float(warmup_start_factor)

    def __call__(self, it):
        if it < self.warmup_iters:
            f = self.warmup_start_factor + (1.0 - self.warmup_start_factor) * it / self.warmup_iters
            return self.base_lr * f
        span = self.max_iters - self.warmup_iters
        progress = min(1.0, (it - self.warmup_iters) / span) if span > 0 else 1.0
        return self.after_warmup(it, progress)

    @abc.abstractmethod
    def after_warmup(self, it, progress):
        """lr at iteration ``it``; ``progress`` in [0, 1] through the post-warmup span."""

    def __repr__(self):
        return (f'{type(self).__name__}(base_lr={self.base_lr}, max_iters={self.max_iters}, '
                f'warmup_iters={self.warmup_iters})')


@LR_SCHEDULES.register_module()
class PolyLR(LRSchedule):
    """Polynomial decay to ``min_lr`` after warmup: ``min + (base-min) * (1 - p)^power``.

    ``power=1`` is the reference's linear decay to 0. Extra args: ``power``, ``min_lr``.
    """

    def __init__(self, base_lr, max_iters, warmup_iters=0, warmup_start_factor=0.0, power=1.0, min_lr=0.0):
        super().__init__(base_lr, max_iters, warmup_iters, warmup_start_factor)
        self.power = float(power)
        self.min_lr = float(min_lr)

    def after_warmup(self, it, progress):
        return self.min_lr + (self.base_lr - self.min_lr) * (1.0 - progress) ** self.power


@LR_SCHEDULES.register_module()
class CosineLR(LRSchedule):
    """Half-cosine from ``base_lr`` to ``min_lr`` after warmup."""

    def __init__(self, base_lr, max_iters, warmup_iters=0, warmup_start_factor=0.0, min_lr=0.0):
        super().__init__(base_lr, max_iters, warmup_iters, warmup_start_factor)
        self.min_lr = float(min_lr)

    def after_warmup(self, it, progress):
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1.0 + math.cos(math.pi * progress))


@LR_SCHEDULES.register_module()
class MultiStepLR(LRSchedule):
    """``base_lr * gamma^k`` where k = number of milestones (iterations) already reached."""

    def __init__(self, base_lr, max_iters, milestones=(), gamma=0.1, warmup_iters=0, warmup_start_factor=0.0):
        super().__init__(base_lr, max_iters, warmup_iters, warmup_start_factor)
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = float(gamma)

    def after_warmup(self, it, progress):
        k = sum(1 for m in self.milestones if it >= m)
        return self.base_lr * self.gamma ** k


@LR_SCHEDULES.register_module()
class ConstantLR(LRSchedule):
    """``base_lr`` after warmup (debugging and fine-tuning)."""

    def after_warmup(self, it, progress):
        return self.base_lr


def build_lr_schedule(cfg, base_lr, iters_per_epoch, max_epochs):
    """Build a schedule from a config whose lengths may be in epochs.

    Args:
        cfg: e.g. ``dict(type='PolyLR', warmup_epochs=1, power=1.0)``; ``warmup_epochs`` and
            ``milestones_epochs`` (list) are converted to iterations; ``warmup_iters`` /
            ``milestones`` in iterations are accepted as-is.
        base_lr: the optimizer's base lr.
        iters_per_epoch: optimizer steps per epoch (per rank).
        max_epochs: training length.
    """
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise ValueError(f"lr_schedule must be a dict with 'type' (one of {LR_SCHEDULES.keys()}), got {cfg!r}")
    cfg = dict(cfg)
    if 'warmup_epochs' in cfg:
        cfg['warmup_iters'] = int(round(float(cfg.pop('warmup_epochs')) * iters_per_epoch))
    if 'milestones_epochs' in cfg:
        cfg['milestones'] = [int(round(float(e) * iters_per_epoch)) for e in cfg.pop('milestones_epochs')]
    return LR_SCHEDULES.build(cfg, default_args=dict(base_lr=base_lr, max_iters=int(max_epochs * iters_per_epoch)))
