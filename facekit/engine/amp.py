"""Mixed precision: which part of the model runs in fp16, and the loss scale.

``runtime.amp_level`` and ``runtime.loss_scale`` say what a config wants; ``resolve_precision``
turns them and the device into what the run uses (``Runner.from_cfg`` calls it once, logs the
result and writes it into the dumped config as ``runtime.precision_resolved``):

    amp_level   device        level   loss scale when runtime.loss_scale is None
    'auto'      CPU           O0      none
    'auto'      GPU, Ascend   O2      dynamic: 65536, x2 after 100 clean steps, /2 on overflow
    'O0' 'O2' 'O3' any        as set  none

An explicit ``loss_scale`` is kept in every row. 'auto' on GPU/Ascend is the reference PyTorch
trainer's recipe: its backbone runs under fp16 autocast and its ``GradScaler(growth_interval=100)``
starts at 2**16, doubles after 100 overflow-free steps and halves on an overflow. On CPU fp16 was
measured ~1.6x slower than fp32, so 'auto' stays fp32 there, and an fp16 level on CPU is refused
unless ``runtime.allow_cpu_fp16=True`` (for debugging).

A level acts on the backbone only, through MindSpore's ``amp.auto_mixed_precision``: O2 fp16 except
BatchNorm and LayerNorm, O3 everything fp16. O1 (fp16 for white-listed ops) is refused: MindSpore
implements it by rewriting the backbone's source, which re-runs facekit's registry decorators and
fails ("'IResNetOpt' is already registered"). The backbone's output is cast back to fp32, so the embedding norms,
the head's cosine logits and the margin loss always run in fp32: an fp16 softmax over s=64 logits
overflows, and fp16 sums of 512 squared embedding values can too.
"""
__all__ = ['AMP_LEVELS', 'PRECISION_LEVELS', 'DEFAULT_AMP_LEVEL', 'AUTO_MIXED_LOSS_SCALE', 'check_amp_level',
           'resolve_precision', 'describe_loss_scale', 'apply_amp', 'LossScaleConfig', 'parse_loss_scale']

AMP_LEVELS = ('O0', 'O2', 'O3')
PRECISION_LEVELS = ('auto',) + AMP_LEVELS
DEFAULT_AMP_LEVEL = 'auto'
# What 'auto' uses on GPU/Ascend when the config gives no loss_scale (the reference trainer's GradScaler).
AUTO_MIXED_LOSS_SCALE = dict(mode='dynamic', init_scale=65536.0, factor=2.0, window=100)

_LEVEL_TEXT = {
    'O0': 'fp32',
    'O2': 'mixed (O2): fp16 backbone with fp32 BatchNorm/LayerNorm; fp32 embedding norms, head and loss',
    'O3': 'fp16 backbone (O3, norms included); fp32 embedding norms, head and loss',
}


def check_amp_level(level):
    """``level`` as 'auto', 'O0', 'O2' or 'O3' (case-insensitive); ValueError naming ``runtime.amp_level`` otherwise."""
    text = str(level)
    if text.lower() == 'auto':
        return 'auto'
    if text.upper() == 'O1':
        raise ValueError("runtime.amp_level='O1' is not supported: MindSpore's O1 rewrites the backbone's source, "
                         "which re-registers facekit's backbone classes and fails; use 'auto' (O2 on GPU/Ascend), "
                         "'O2' or 'O3'")
    if text.upper() in AMP_LEVELS:
        return text.upper()
    raise ValueError(f"runtime.amp_level must be one of {PRECISION_LEVELS}, got {level!r}")


def _refuse_cpu_fp16(level, device_target, allow_cpu_fp16):
    if level != 'O0' and device_target == 'CPU' and not allow_cpu_fp16:
        raise ValueError(f"runtime.amp_level={level!r} on CPU: fp16 is ~1.6x slower than fp32 on CPU and "
                         "MindSpore's CPU kernels lack fp16 for several ops; use amp_level='auto' or 'O0' "
                         "(or set runtime.allow_cpu_fp16=True to force it)")


def describe_loss_scale(loss_scale):
    """One phrase for a ``loss_scale`` config value (anything ``parse_loss_scale`` accepts)."""
    ls = parse_loss_scale(loss_scale)
    if ls.mode == 'none':
        return 'no loss scale'
    if ls.mode == 'fixed':
        return f'fixed loss scale {ls.init_scale:g}'
    return (f'dynamic loss scale from {ls.init_scale:g}, x{ls.factor:g} after {ls.window} clean steps, '
            f'/{ls.factor:g} on overflow (min {ls.min_scale:g})')


def resolve_precision(amp_level, loss_scale, device_target, allow_cpu_fp16=False):
    """What a run uses for ``runtime.amp_level`` and ``runtime.loss_scale`` on ``device_target``.

    Args:
        amp_level: 'auto', 'O0', 'O2' or 'O3' (case-insensitive).
        loss_scale: the config's value: None (level's default), 'none', 'dynamic', a number or a dict
            (``parse_loss_scale``).
        device_target: the resolved target, 'CPU', 'GPU' or 'Ascend'.
        allow_cpu_fp16: permit an explicit fp16 level on CPU.
    Returns:
        ``(level, loss_scale, description)``: level 'O0', 'O2' or 'O3'; loss_scale a value ``parse_loss_scale``
        accepts (None: no scaling); description one line for the log.
    Raises:
        ValueError: an unknown level or loss scale, or an fp16 level on CPU without ``allow_cpu_fp16``.
    """
    requested = check_amp_level(amp_level)
    parse_loss_scale(loss_scale)     # refuse a malformed value before anything is built
    if device_target not in ('CPU', 'GPU', 'Ascend'):
        raise ValueError(f"device_target must be 'CPU', 'GPU' or 'Ascend' to resolve the precision, got "
                         f'{device_target!r}')
    if requested == 'auto':
        level = 'O0' if device_target == 'CPU' else 'O2'
        if loss_scale is None and level != 'O0':
            loss_scale = dict(AUTO_MIXED_LOSS_SCALE)
        why = (f"amp_level 'auto' on {device_target}"
               + (': fp16 is ~1.6x slower than fp32 on CPU' if device_target == 'CPU' else ''))
    else:
        level = requested
        _refuse_cpu_fp16(level, device_target, allow_cpu_fp16)
        why = f"amp_level '{level}' as set"
    return level, loss_scale, f'{_LEVEL_TEXT[level]}, {describe_loss_scale(loss_scale)} ({why})'


def apply_amp(model, level, device_target, allow_cpu_fp16=False):
    """Cast ``model.backbone`` for amp ``level`` and return ``model`` (O0 returns it untouched).

    The backbone's output is cast back to fp32; the rest of the model (embedding norms, head, loss)
    keeps running in fp32. Parameter names are unchanged, so checkpoints load either way.

    Args:
        model: ``nn.Cell`` with a ``backbone`` cell (the FaceRecognizer).
        level: 'O0' | 'O2' | 'O3' (a resolved level: see ``resolve_precision``).
        device_target: the resolved target ('CPU', 'GPU', 'Ascend').
        allow_cpu_fp16: permit fp16 levels on CPU (slow there; for debugging only).
    """
    level = check_amp_level(level)
    if level == 'auto':
        raise ValueError("apply_amp needs a resolved level (O0, O2, O3); resolve 'auto' with resolve_precision first")
    if level == 'O0':
        return model
    _refuse_cpu_fp16(level, device_target, allow_cpu_fp16)
    backbone = getattr(model, 'backbone', None)
    from mindspore import amp, nn
    if not isinstance(backbone, nn.Cell):
        raise ValueError(f'runtime.amp_level={level!r} casts the model\'s backbone to fp16, but '
                         f'{type(model).__name__} has no backbone cell')
    names = [p.name for p in backbone.get_parameters()]
    cast = amp.auto_mixed_precision(backbone, level)
    # Put the wrapped backbone in place without Cell.__setattr__, which would prefix its parameter
    # names a second time; the wrapper's own names are those of the backbone (checked below).
    model._cells['backbone'] = cast
    renamed = [(a, p.name) for a, p in zip(names, cast.get_parameters()) if a != p.name]
    if renamed:
        raise RuntimeError(f'mixed precision {level} renamed backbone parameters, e.g. {renamed[0]}; '
                           f'checkpoints would no longer match')
    return model


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
