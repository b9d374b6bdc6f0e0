"""Registries: the one way facekit objects come to life from config dicts.

A registry maps names to classes (or factory functions). ``build_from_cfg`` pops
``type`` from a config dict, resolves it and calls it with the remaining keys as
keyword arguments.
"""
import copy
import difflib
import importlib
import inspect

__all__ = [
    'Registry', 'build_from_cfg', 'BACKBONES', 'HEADS', 'LOSSES', 'MODELS',
    'DATASETS', 'TRANSFORMS', 'EVALUATORS', 'OPTIMIZERS', 'LR_SCHEDULES', 'HOOKS'
]


class Registry:
    """A name -> class (or function) table.

    Args:
        name: the registry's name, used in error messages (e.g. ``'loss'``).
    """

    def __init__(self, name):
        self._name = name
        self._module_dict = {}

    @property
    def name(self):
        return self._name

    @property
    def module_dict(self):
        return self._module_dict

    def __len__(self):
        return len(self._module_dict)

    def __contains__(self, key):
        return key in self._module_dict

    def __repr__(self):
        names = ', '.join(sorted(self._module_dict))
        return f'Registry(name={self._name!r}, items=[{names}])'

    def keys(self):
        return sorted(self._module_dict)

    def get(self, key):
        """Return the registered object for ``key``, or raise KeyError listing close names."""
        if key in self._module_dict:
            return self._module_dict[key]
        raise KeyError(self._unknown_message(key))

    def _unknown_message(self, key):
        close = difflib.get_close_matches(str(key), list(self._module_dict), n=5, cutoff=0.4)
        msg = f"'{key}' is not registered in the {self._name} registry."
        if close:
            msg += f" Closest registered names: {', '.join(close)}."
        msg += f" Registered: {', '.join(sorted(self._module_dict)) or '(none)'}."
        return msg

    def _register(self, module, names, force):
        if not (inspect.isclass(module) or inspect.isfunction(module)):
            raise TypeError(f'{self._name} registry accepts classes or functions, got {type(module)!r}')
        if names is None:
            names = [module.__name__]
        elif isinstance(names, str):
            names = [names]
        for n in names:
            if not force and n in self._module_dict:
                existing = self._module_dict[n]
                raise KeyError(
                    f"'{n}' is already registered in the {self._name} registry "
                    f"(by {existing.__module__}.{existing.__qualname__}); pass force=True to replace it")
        for n in names:
            self._module_dict[n] = module

    def register_module(self, name=None, force=False, module=None):
        """Register a class or function, as a decorator or a direct call.

        Args:
            name: a name or list of names (aliases); default the object's ``__name__``.
            force: replace an existing entry of the same name instead of raising KeyError.
            module: register this object now (call form) instead of returning a decorator.
        """
        if name is not None and not isinstance(name, (str, list, tuple)):
            raise TypeError(f'name must be None, a str or a list of str, got {type(name)!r}')
        if module is not None:
            self._register(module, name, force)
            return module

        def _decorator(obj):
            self._register(obj, name, force)
            return obj
        return _decorator

    def build(self, cfg, default_args=None):
        return build_from_cfg(cfg, self, default_args)


def _import_dotted(path):
    module_name, _, attr = path.rpartition('.')
    if not module_name:
        raise KeyError(f"'{path}' is not a dotted import path")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise KeyError(f"cannot import module '{module_name}' for type '{path}': {e}") from e
    try:
        return getattr(module, attr)
    except AttributeError as e:
        raise KeyError(f"module '{module_name}' has no attribute '{attr}' (type '{path}')") from e


def build_from_cfg(cfg, registry, default_args=None):
    """Build an object from a config dict.

    Args:
        cfg: dict with key ``type``: a registered name, a class/function, or a dotted
            import path such as ``'my_pkg.losses.MyLoss'``. Other keys become kwargs.
        registry: the Registry to resolve names in.
        default_args: dict of kwargs used where ``cfg`` does not set them.
    """
    if not isinstance(cfg, dict):
        raise TypeError(f'cfg must be a dict, got {type(cfg).__name__}: {cfg!r}')
    if 'type' not in cfg and (default_args is None or 'type' not in default_args):
        raise KeyError(f"cfg for the {registry.name} registry has no 'type' key: {dict(cfg)!r}")
    args = {k: v for k, v in cfg.items()}
    if default_args:
        for k, v in default_args.items():
            args.setdefault(k, v)
    obj_type = args.pop('type')
    if isinstance(obj_type, str):
        if obj_type in registry:
            obj_cls = registry.get(obj_type)
        elif '.' in obj_type:
            obj_cls = _import_dotted(obj_type)
        else:
            obj_cls = registry.get(obj_type)  # raises KeyError with close names
        type_name = obj_type
    elif inspect.isclass(obj_type) or callable(obj_type):
        obj_cls = obj_type
        type_name = getattr(obj_type, '__name__', repr(obj_type))
    else:
        raise TypeError(f"'type' must be a str, class or callable, got {type(obj_type).__name__}")
    try:
        return obj_cls(**args)
    except Exception as e:
        msg = (f'{type_name} (registry {registry.name}) failed to build from {dict(cfg)!r}: '
               f'{type(e).__name__}: {e}')
        try:
            wrapped = type(e)(msg)
        except Exception:  # exception types whose constructor needs other arguments
            wrapped = RuntimeError(msg)
        raise wrapped from e


BACKBONES = Registry('backbone')
HEADS = Registry('head')
LOSSES = Registry('loss')
MODELS = Registry('model')
DATASETS = Registry('dataset')
TRANSFORMS = Registry('transform')
EVALUATORS = Registry('evaluator')
OPTIMIZERS = Registry('optimizer')
LR_SCHEDULES = Registry('lr_schedule')
HOOKS = Registry('hook')
