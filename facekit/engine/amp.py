"""Mixed precision: amp levels and the loss-scale configuration.

Levels follow MindSpore's ``amp.auto_mixed_precision``: O0 fp32, O1 fp16 for white-listed ops,
O2 fp16 except BN and loss, O3 everything fp16. On CPU fp16 was measured ~1.6x slower than
fp32, so CPU configs use O0 and a non-O0 level on CPU is refused with a message unless
``allow_cpu_fp16=True``.
"""
__all__ = ['AMP_LEVELS', 'apply_amp', 'LossScaleConfig', 'parse_loss_scale']

AMP_LEVELS = ('O0', 'O1', 'O2', 'O3')


def apply_amp(model, level, device_target, allow_cpu_fp16=False):
    """Cast ``model`` for amp ``level`` and return it (O0 returns it untouched).

    Args:
        model: ``nn.Cell`` (the FaceRecognizer).
        level: 'O0' | 'O1' | 'O2' | 'O3'.
        device_target: the resolved target ('CPU', 'GPU', 'Ascend').
        allow_cpu_fp16: permit fp16 levels on CPU (slow there; for debugging only).
    """
    level = str(level).upper()
    if level not in AMP_LEVELS:
        raise ValueError(f"runtime.amp_level must be one of {AMP_LEVELS}, got {level!r}")
    if level == 'O0':
        return model
    if device_target == 'CPU' and not allow_cpu_fp16:
        raise ValueError(f"runtime.amp_level={level!r} on CPU: fp16 is ~1.6x slower than fp32 on CPU and "
                         "MindSpore's CPU kernels lack fp16 for several ops; use amp_level='O0' "
                         "(or set runtime.allow_cpu_fp16=True to force it)")
    from mindspore import amp
    return amp.auto_mixed_precision(model, level)


class LossScaleConfig:
    """Loss-scale settings consumed by ``TrainStep``.

    Args:
        mode: 'none' (scale 1, still skips non-finite steps), 'fixed' or 'dynamic'.
        init_scale: starting scale (dynamic) or the constant scale (fixed).
        factor: dynamic: divide on overflow, multiply after ``window`` clean steps.
        window: dynamic: clean steps before growing the scale.
        min_scale: dynamic: the scale never drops below this.
    """

    def __init__(self, mode='none', init_scale=2.0 ** 16, factor=2.0, window=2000, min_scale=1.0):
        if mode not in ('none', 'fixed', 'dynamic'):
            raise ValueError(f"loss_scale mode must be 'none', 'fixed' or 'dynamic', got {mode!r}")
        self.mode = mode
        self.init_scale = float(init_scale) if mode != 'none' else 1.0
        self.factor = float(factor)
        self.window = int(window)
        self.min_scale = float(min_scale)

    def __repr__(self):
        return (f'LossScaleConfig(mode={self.mode!r}, init_scale={self.init_scale}, factor={self.factor}, '
                f'window={self.window})')


def parse_loss_scale(cfg):
    """``None`` | ``'dynamic'`` | number | ``dict(mode=..., init_scale=...)`` -> LossScaleConfig."""
    if cfg is None or cfg == 'none':
        return LossScaleConfig('none')
    if isinstance(cfg, str):
        return LossScaleConfig(cfg)
    if isinstance(cfg, (int, float)):
        return LossScaleConfig('fixed', init_scale=cfg)
    if isinstance(cfg, dict):
        try:
            return LossScaleConfig(**cfg)
        except TypeError as e:
            raise ValueError(f'runtime.loss_scale={cfg!r}: {e}') from e
    raise ValueError(f"runtime.loss_scale must be None, 'dynamic', a number or a dict, got {cfg!r}")
