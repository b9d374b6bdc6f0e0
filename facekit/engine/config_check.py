"""Validate an experiment config before anything is built: cheap, no model, no data.

``check_config(cfg)`` raises ``ConfigCheckError`` (a ``ConfigError``) naming the key, what was
found and what was expected; tools turn it into a ``config error:`` line and exit status 2.
"""
from ..config import ConfigError, to_plain

__all__ = ['ConfigCheckError', 'check_config']


class ConfigCheckError(ConfigError):
    """A config problem found before training starts."""


def _require(cfg, key, what):
    node = to_plain(cfg)
    for part in key.split('.'):
        if not isinstance(node, dict) or part not in node:
            raise ConfigCheckError(f"{getattr(cfg, 'filename', None) or 'config'}: missing '{key}' ({what})")
        node = node[part]
    return node


def _check_type(section, value, registry):
    if not isinstance(value, dict) or 'type' not in value:
        raise ConfigCheckError(f"'{section}' must be a dict with a 'type' key, got {value!r}")
    t = value['type']
    if isinstance(t, str) and t not in registry and '.' not in t:
        try:
            registry.get(t)
        except KeyError as e:
            raise ConfigCheckError(f'{section}.type: {e.args[0]}') from None


def check_model(cfg):
    """``model`` and its backbone/head/loss resolve in their registries."""
    from ..registry import BACKBONES, HEADS, LOSSES, MODELS
    model = _require(cfg, 'model', 'the FaceRecognizer config')
    _check_type('model', model, MODELS)
    for part, reg in (('backbone', BACKBONES), ('head', HEADS), ('loss', LOSSES)):
        if isinstance(model.get(part), dict):
            _check_type(f'model.{part}', model[part], reg)


def check_evaluators(cfg, key):
    """Every entry of ``cfg[key]`` (val_evaluators / test_evaluators) resolves, datasets included."""
    from ..registry import DATASETS, EVALUATORS
    for i, ev in enumerate(to_plain(cfg.get(key)) or []):
        _check_type(f'{key}.{i}', ev, EVALUATORS)
        if isinstance(ev.get('dataset'), dict):
            _check_type(f'{key}.{i}.dataset', ev['dataset'], DATASETS)


def check_config(cfg):
    """Validate what training needs. Raises ConfigCheckError."""
    from ..registry import DATASETS, HOOKS, LR_SCHEDULES, OPTIMIZERS, TRANSFORMS
    from .amp import AMP_LEVELS, parse_loss_scale
    check_model(cfg)
    _require(cfg, 'train_dataloader', 'batch_size, dataset, ...')
    bs = _require(cfg, 'train_dataloader.batch_size', 'per-device batch size')
    if not isinstance(bs, int) or isinstance(bs, bool) or bs <= 0:
        raise ConfigCheckError(f'train_dataloader.batch_size must be a positive int, got {bs!r}')
    dataset = _require(cfg, 'train_dataloader.dataset', 'the training set')
    if isinstance(dataset, dict):
        _check_type('train_dataloader.dataset', dataset, DATASETS)
        for i, t in enumerate(dataset.get('pipeline', []) or []):
            _check_type(f'train_dataloader.dataset.pipeline.{i}', t, TRANSFORMS)
    _check_type('optimizer', _require(cfg, 'optimizer', 'e.g. dict(type="SGD", lr=0.1)'), OPTIMIZERS)
    if cfg.get('lr_schedule') is not None:
        _check_type('lr_schedule', to_plain(cfg.lr_schedule), LR_SCHEDULES)
    epochs = _require(cfg, 'train_cfg.max_epochs', 'number of epochs')
    if not isinstance(epochs, (int, float)) or isinstance(epochs, bool) or epochs <= 0:
        raise ConfigCheckError(f'train_cfg.max_epochs must be a positive number, got {epochs!r}')
    for key in ('hooks', 'custom_hooks'):
        for i, h in enumerate(to_plain(cfg.get(key)) or []):
            _check_type(f'{key}.{i}', h, HOOKS)
    check_evaluators(cfg, 'val_evaluators')
    check_runtime(cfg)
    try:
        parse_loss_scale(to_plain((cfg.get('runtime') or {}).get('loss_scale')))
    except ValueError as e:
        raise ConfigCheckError(f'runtime.loss_scale: {e}') from None
    level = str((cfg.get('runtime') or {}).get('amp_level', 'O0')).upper()
    if level not in AMP_LEVELS:
        raise ConfigCheckError(f"runtime.amp_level must be one of {AMP_LEVELS}, got {level!r}")


def check_runtime(cfg):
    """``runtime.mode`` and ``runtime.device_target`` name real choices."""
    runtime = to_plain(cfg.get('runtime')) or {}
    if str(runtime.get('mode', 'graph')).lower() not in ('graph', 'pynative'):
        raise ConfigCheckError(f"runtime.mode must be 'graph' or 'pynative', got {runtime.get('mode')!r}")
    target = str(runtime.get('device_target', 'auto'))
    if target.lower() not in ('cpu', 'gpu', 'ascend', 'auto'):
        raise ConfigCheckError(f"runtime.device_target must be one of CPU, GPU, Ascend, auto; got {target!r}")
