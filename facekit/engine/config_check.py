"""Validate an experiment config before anything is built: cheap, no model, no data.

``check_config(cfg)`` raises ``ConfigCheckError`` (a ``ConfigError``) naming the key, what was
found and what was expected; tools turn it into a ``config error:`` line and exit status 2.
``check_keys(cfg)`` (part of ``check_config``; ``Runner.from_cfg`` runs it for test configs too)
refuses unknown keys at every level with the closest valid names, and simple values of the wrong
type (a string where the constructor's default is a number).
"""
import difflib
import fnmatch

from ..config import ConfigError, to_plain

__all__ = ['ConfigCheckError', 'check_config', 'check_keys', 'accepted_keys']


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
    from .amp import check_amp_level, parse_loss_scale
    from .optim import split_accumulative_counts
    check_model(cfg)
    check_keys(cfg)
    _require(cfg, 'train_dataloader', 'batch_size, dataset, ...')
    bs = _require(cfg, 'train_dataloader.batch_size', 'per-device batch size')
    if not isinstance(bs, int) or isinstance(bs, bool) or bs <= 0:
        raise ConfigCheckError(f'train_dataloader.batch_size must be a positive int, got {bs!r}')
    dataset = _require(cfg, 'train_dataloader.dataset', 'the training set')
    if isinstance(dataset, dict):
        _check_type('train_dataloader.dataset', dataset, DATASETS)
        for i, t in enumerate(dataset.get('pipeline', []) or []):
            _check_type(f'train_dataloader.dataset.pipeline.{i}', t, TRANSFORMS)
    optimizer = _require(cfg, 'optimizer', 'e.g. dict(type="SGD", lr=0.1)')
    _check_type('optimizer', optimizer, OPTIMIZERS)
    try:
        _, accum = split_accumulative_counts(to_plain(optimizer))
    except ValueError as e:
        raise ConfigCheckError(str(e)) from None
    if cfg.get('lr_schedule') is not None:
        _check_type('lr_schedule', to_plain(cfg.lr_schedule), LR_SCHEDULES)
    epochs = _require(cfg, 'train_cfg.max_epochs', 'number of epochs')
    if not isinstance(epochs, (int, float)) or isinstance(epochs, bool) or epochs <= 0:
        raise ConfigCheckError(f'train_cfg.max_epochs must be a positive number, got {epochs!r}')
    max_iters = (to_plain(cfg.get('train_cfg')) or {}).get('max_iters')
    if isinstance(max_iters, int) and max_iters % accum:
        raise ConfigCheckError(f'train_cfg.max_iters={max_iters} must be a multiple of optimizer.accumulative_counts='
                               f'{accum} (iterations count micro-batches; a run may not end inside an accumulation '
                               f'group)')
    for key in ('hooks', 'custom_hooks'):
        for i, h in enumerate(to_plain(cfg.get(key)) or []):
            _check_type(f'{key}.{i}', h, HOOKS)
    check_evaluators(cfg, 'val_evaluators')
    check_runtime(cfg)
    check_visualizer(cfg)
    try:
        parse_loss_scale(to_plain((cfg.get('runtime') or {}).get('loss_scale')))
    except ValueError as e:
        raise ConfigCheckError(f'runtime.loss_scale: {e}') from None
    try:
        check_amp_level((cfg.get('runtime') or {}).get('amp_level', 'auto'))
    except ValueError as e:
        raise ConfigCheckError(str(e)) from None


def check_visualizer(cfg):
    """``visualizer`` names known backends (with 'local'), a positive interval, and 'tensorboard' only
    where tensorboardX is installed (``engine.visualizer.parse_visualizer_cfg``)."""
    from .visualizer import parse_visualizer_cfg
    try:
        parse_visualizer_cfg(to_plain(cfg.get('visualizer')))
    except ValueError as e:
        raise ConfigCheckError(f"{getattr(cfg, 'filename', None) or 'config'}: {e}") from None


def check_runtime(cfg):
    """``runtime.mode`` and ``runtime.device_target`` name real choices."""
    runtime = to_plain(cfg.get('runtime')) or {}
    if str(runtime.get('mode', 'graph')).lower() not in ('graph', 'pynative'):
        raise ConfigCheckError(f"runtime.mode must be 'graph' or 'pynative', got {runtime.get('mode')!r}")
    target = str(runtime.get('device_target', 'auto'))
    if target.lower() not in ('cpu', 'gpu', 'ascend', 'auto'):
        raise ConfigCheckError(f"runtime.device_target must be one of CPU, GPU, Ascend, auto; got {target!r}")


# --- unknown keys and value types -----------------------------------------------------------------
# The keys each plain section accepts: what the code reads (runner, build_dataloader, test()).
# A value of None means "any type"; otherwise the accepted types (None inside a tuple: None allowed).
# A helper that makes the code read a new key adds it here, or every config using it is refused.
_NUM = (int, float)
TOP_LEVEL_KEYS = ('model', 'train_dataloader', 'optimizer', 'lr_schedule', 'train_cfg', 'test_cfg', 'runtime',
                  'val_evaluators', 'test_evaluators', 'hooks', 'custom_hooks', 'custom_imports', 'work_dir',
                  'data_root', 'resume', 'load_from', 'allow_unknown_keys', 'visualizer')
SECTION_KEYS = {
    'runtime': dict(device_target=None, mode=None, seed=(int, None), log_interval=int, checkpoint_interval=int,
                    max_keep_ckpts=int, eval_interval=(_NUM, None), amp_level=None, loss_scale=None,
                    clip_grad_norm=(_NUM, None), clip_prefixes=(list, tuple), nan_patience=int,
                    jit_level=None, comm_backend=None, allow_cpu_fp16=bool, device_target_resolved=None,
                    precision_resolved=None),
    'train_cfg': dict(max_epochs=None, max_iters=(int, None), final_eval=bool, raw_pixel_floor=bool),
    'test_cfg': dict(targets=(list, tuple, None), data_root=(str, None), batch_size=(int, None),
                     flip=(bool, None), nfolds=(int, None), out=(str, None), roc=bool,
                     backend=(str, None), report=(str, bool, None)),
    'visualizer': dict(backends=(list, tuple), interval=int, plot=bool),
    'train_dataloader': dict(dataset=None, batch_size=None, num_workers=int, shuffle=bool, drop_remainder=bool,
                             seed=(int, None), python_multiprocessing=bool, native_transforms=bool,
                             num_images=(int, None)),
}
# Keys a builder consumes before calling the registered constructor.
_BUILDER_KEYS = {'lr_schedule': ('warmup_epochs', 'milestones_epochs'), 'dataset': ('pipeline',),
                 'optimizer': ('accumulative_counts',)}


def _type_names(types):
    names = []
    for t in types:
        if t is None:
            names.append('None')
        elif isinstance(t, tuple):
            names.append(' or '.join(x.__name__ for x in t))
        else:
            names.append(t.__name__)
    return ' or '.join(names)


def _type_ok(value, types):
    flat = []
    for t in types:
        flat.extend(t if isinstance(t, tuple) else (t,))
    if value is None:
        return None in flat
    if isinstance(value, bool):      # bool is an int in Python; a flag is not a count
        return bool in flat
    return any(t is not None and isinstance(value, t) for t in flat)


def _default_mismatch(value, default):
    """What a value should be when it plainly contradicts a number/flag default, else None.

    Only the plain cases are refused (a string or a dict for a number or flag, a fraction for a count,
    a float for a flag); sequences pass, since several constructors take a scalar or a per-channel
    sequence (``Normalize(mean=...)``, ``Resize(size=...)``). None always passes.
    """
    if value is None or isinstance(default, str) or not isinstance(default, (bool, int, float)):
        return None
    if isinstance(value, (str, bytes, dict)):
        return 'bool' if isinstance(default, bool) else 'int' if isinstance(default, int) else 'int or float'
    if isinstance(default, bool):
        return 'bool' if isinstance(value, float) else None
    if isinstance(default, int) and isinstance(value, float) and not value.is_integer():
        return 'int'
    return None


def _forward_target(func, seen=None):
    """The one facekit class a ``**kwargs`` constructor function forwards to (``iresnet50 -> IResNet``), or None."""
    import inspect
    seen = set() if seen is None else seen
    if func in seen or not inspect.isfunction(func) or not func.__module__.startswith('facekit.'):
        return set()
    seen.add(func)
    found = set()
    for name in func.__code__.co_names:
        obj = func.__globals__.get(name)
        if obj is None or not getattr(obj, '__module__', '').startswith('facekit.'):
            continue
        if inspect.isclass(obj):
            found.add(obj)
        elif inspect.isfunction(obj):
            found |= _forward_target(obj, seen)
    return found


def accepted_keys(obj):
    """``(names -> inspect.Parameter or None, open)`` for a registered class or function.

    ``open`` is True when any keyword is accepted: a ``**kwargs`` the checker cannot follow. A facekit
    constructor function that forwards ``**kwargs`` to one facekit class (``iresnet50 -> IResNet``) accepts
    that class's keywords; a class with ``**kwargs`` and a ``KNOBS`` tuple accepts those names.
    """
    import inspect
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return {}, True
    names = {n: p for n, p in sig.parameters.items()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        return names, False
    if inspect.isclass(obj) and isinstance(getattr(obj, 'KNOBS', None), (tuple, list)):
        names.update({k: None for k in obj.KNOBS if k not in names})
        return names, False
    targets = _forward_target(obj)
    if len(targets) != 1:
        return names, True
    sub, open_ = accepted_keys(targets.pop())
    return {**sub, **names}, open_


def _close(key, valid):
    close = difflib.get_close_matches(str(key), sorted(valid), n=3, cutoff=0.5)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ''


class _KeyChecker:
    """Walks a plain config dict and collects every unknown key and mistyped value as a message."""

    def __init__(self, allowed):
        self.allowed = allowed
        self.problems = []

    def is_allowed(self, path):
        return path.split('.')[-1].startswith('_') or any(fnmatch.fnmatchcase(path, pat) for pat in self.allowed)

    def unknown(self, path, key, valid, what):
        valid = sorted(set(valid))
        self.problems.append(f"unknown key '{path}' in {what}{_close(key, valid)} (valid: {', '.join(valid)})")

    def mistyped(self, path, value, expected, why=''):
        if not isinstance(expected, str):
            expected = _type_names(expected)
        self.problems.append(f"'{path}' = {value!r} is a {type(value).__name__}; expected {expected}{why}")

    def section(self, path, value, spec):
        if not isinstance(value, dict):
            return
        for key, sub in value.items():
            full = f'{path}.{key}'
            if self.is_allowed(full):
                continue
            if key not in spec:
                self.unknown(full, key, spec, f"'{path}'")
            elif spec[key] is not None:
                types = spec[key] if isinstance(spec[key], tuple) else (spec[key],)
                if not _type_ok(sub, types):
                    self.mistyped(full, sub, types)

    def built(self, path, value, registry, role=None):
        """A registry-built dict: its keys against the constructor's keywords, recursively."""
        from ..registry import BACKBONES, DATASETS, HEADS, LOSSES, TRANSFORMS
        if not isinstance(value, dict) or 'type' not in value or self.is_allowed(path):
            return
        obj = _resolve(value['type'], registry)
        if obj is None:      # an unknown name is reported by _check_type / the build
            return
        names, open_ = accepted_keys(obj)
        extra = _BUILDER_KEYS.get(role, ())
        type_name = value['type'] if isinstance(value['type'], str) else getattr(obj, '__name__', repr(obj))
        for key, sub in value.items():
            full = f'{path}.{key}'
            if key == 'type' or self.is_allowed(full):
                continue
            if key not in names and key not in extra:
                if not open_:
                    self.unknown(full, key, [n for n in names if n != 'model'] + list(extra),
                                 f"{type_name}'s arguments")
                continue
            param = names.get(key)
            expected = _default_mismatch(sub, param.default) if param is not None else None
            if expected:
                self.mistyped(full, sub, expected, f' (the default of {type_name}.{key} is {param.default!r})')
            nested = {'backbone': BACKBONES, 'head': HEADS, 'loss': LOSSES, 'dataset': DATASETS}.get(key)
            if isinstance(sub, dict) and 'type' in sub:
                self.built(full, sub, nested, key)
            elif key == 'pipeline' and isinstance(sub, (list, tuple)):
                for i, t in enumerate(sub):
                    self.built(f'{full}.{i}', t, TRANSFORMS)

    def built_list(self, path, value, registry, role=None):
        for i, item in enumerate(value if isinstance(value, (list, tuple)) else []):
            self.built(f'{path}.{i}', item, registry, role)


def _resolve(type_, registry):
    """The class/function a config ``type`` names (registered, dotted path or the object), or None."""
    from .. import registry as reg
    if not isinstance(type_, str):
        return type_ if callable(type_) else None
    if registry is not None and type_ in registry:
        return registry.get(type_)
    if '.' in type_:
        try:
            return reg._import_dotted(type_)
        except KeyError:
            return None
    if registry is None:     # a nested dict of unknown role: a name registered exactly once
        found = [r.get(type_) for r in (reg.BACKBONES, reg.HEADS, reg.LOSSES, reg.MODELS, reg.DATASETS,
                                        reg.TRANSFORMS, reg.EVALUATORS, reg.OPTIMIZERS, reg.LR_SCHEDULES,
                                        reg.HOOKS) if type_ in r]
        return found[0] if len(found) == 1 else None
    return None


def check_keys(cfg):
    """Every key of ``cfg`` is one the code reads; simple values have the right type.

    Unknown keys at any level (top level, ``runtime``, ``train_cfg``, ``test_cfg``, ``train_dataloader`` and
    the arguments of every registry-built dict, recursively) are refused with the closest valid names.
    ``allow_unknown_keys=['my_key', 'runtime.my_key', 'custom_hooks.*.my_arg']`` (fnmatch patterns over
    dotted paths) lets a plugin's keys through; keys starting with ``_`` always pass.
    """
    from ..registry import DATASETS, EVALUATORS, HOOKS, LR_SCHEDULES, MODELS, OPTIMIZERS
    plain = to_plain(cfg)
    allowed = plain.get('allow_unknown_keys') or []
    if isinstance(allowed, str) or not all(isinstance(a, str) for a in allowed):
        raise ConfigCheckError(f'allow_unknown_keys must be a list of dotted key paths, got {allowed!r}')
    checker = _KeyChecker(list(allowed))
    for key, value in plain.items():
        if checker.is_allowed(key):
            continue
        if key not in TOP_LEVEL_KEYS:
            checker.unknown(key, key, TOP_LEVEL_KEYS, 'the config')
        elif key in SECTION_KEYS:
            checker.section(key, value, SECTION_KEYS[key])
    if isinstance(plain.get('model'), dict):
        checker.built('model', plain['model'], MODELS)
    dataset = (plain.get('train_dataloader') or {}).get('dataset') if isinstance(plain.get('train_dataloader'),
                                                                                dict) else None
    checker.built('train_dataloader.dataset', dataset, DATASETS, 'dataset')
    checker.built('optimizer', plain.get('optimizer'), OPTIMIZERS, 'optimizer')
    checker.built('lr_schedule', plain.get('lr_schedule'), LR_SCHEDULES, 'lr_schedule')
    for key in ('val_evaluators', 'test_evaluators'):
        checker.built_list(key, plain.get(key), EVALUATORS)
    for key in ('hooks', 'custom_hooks'):
        checker.built_list(key, plain.get(key), HOOKS)
    if checker.problems:
        name = getattr(cfg, 'filename', None) or 'config'
        hint = ' (a plugin key can be allowed with allow_unknown_keys=[...], docs/config.md)' \
            if any(p.startswith('unknown') for p in checker.problems) else ''
        raise ConfigCheckError(f'{name}: ' + '; '.join(checker.problems) + hint)
