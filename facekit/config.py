"""Config: Python (or YAML/JSON) experiment files with ``_base_`` inheritance.

Rules:
- ``_base_`` is a path or a list of paths, relative to the file that names it; bases load
  recursively and merge left to right, then the file's own keys merge on top.
- dicts merge recursively (the child wins); lists, tuples and scalars replace.
- ``_delete_=True`` inside a child dict replaces the base dict instead of merging into it.
- a top-level key defined by two sibling bases is an error naming both files.
- a Python config reads a base value with ``{{_base_.dotted.key}}``: the text is replaced by
  the value's Python literal before the file runs (``lr = {{_base_.optimizer.lr}} * 2``).
- ``custom_imports = dict(imports=['my_pkg.my_loss'], allow_failed_imports=False)`` imports
  those modules when the config is loaded, so their ``register_module`` decorators run.
"""
import argparse
import ast
import copy
import importlib
import json
import os
import os.path as osp
import re
import types

from addict import Dict

BASE_KEY = '_base_'
DELETE_KEY = '_delete_'
_BASE_REF = re.compile(r'\{\{\s*_base_\.([\w\.]+)\s*\}\}')


class ConfigError(Exception):
    """A config file or option that cannot be loaded or applied."""


class ConfigFileNotFoundError(ConfigError, FileNotFoundError):
    """A config file (or one of its ``_base_`` files) that does not exist."""


class ConfigDict(Dict):
    """addict.Dict with attribute access that raises on a missing key instead of creating it."""

    def __missing__(self, name):
        raise KeyError(name)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except KeyError:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'") from None

    def to_dict(self):
        return to_plain(self)


def to_plain(obj):
    """Plain dicts/lists/tuples from a Config, ConfigDict or nested mix (values kept)."""
    if isinstance(obj, Config):
        return obj.to_dict()
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_plain(v) for v in obj)
    return obj


def _merge(base, child):
    """Merge ``child`` into a copy of ``base``: dicts recursively, everything else replaced."""
    out = copy.deepcopy(base)
    for key, value in child.items():
        if isinstance(value, dict):
            value = dict(value)
            delete = value.pop(DELETE_KEY, False)
            if not delete and isinstance(out.get(key), dict):
                out[key] = _merge(out[key], value)
            else:
                out[key] = _strip_delete(value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _strip_delete(value):
    if isinstance(value, dict):
        return {k: _strip_delete(v) for k, v in value.items() if k != DELETE_KEY}
    return value


def _lookup(tree, dotted, filename):
    node = tree
    for part in dotted.split('.'):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise ConfigError(f"{filename}: '{{{{_base_.{dotted}}}}}' does not exist in its base configs "
                              f"(no key '{part}')")
    return node


def _read_base_list(filename, text):
    """The ``_base_`` entry of a Python config, read without running the file."""
    try:
        tree = ast.parse(_BASE_REF.sub('None', text), filename=filename)
    except SyntaxError as e:
        raise ConfigError(f'syntax error in config {filename}, line {e.lineno}: {e.msg}') from e
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == BASE_KEY for t in node.targets):
            try:
                return ast.literal_eval(node.value)
            except ValueError as e:
                raise ConfigError(f'{filename}: _base_ must be a string or a list of strings') from e
    return None


def _exec_python(filename, text):
    code = compile(text, filename, 'exec')
    namespace = {'__file__': filename, '__name__': '__facekit_config__'}
    exec(code, namespace)  # configs are the user's own code, run like any script they launch
    return {k: v for k, v in namespace.items()
            if not k.startswith('__') and not isinstance(v, (types.ModuleType, types.FunctionType, type))}


def _load_file(filename, stack):
    filename = osp.abspath(osp.expanduser(filename))
    if not osp.isfile(filename):
        raise ConfigFileNotFoundError(f'config file not found: {filename}')
    if filename in stack:
        chain = ' -> '.join(stack + [filename])
        raise ConfigError(f'_base_ cycle: {chain}')
    ext = osp.splitext(filename)[1].lower()
    if ext not in ('.py', '.yaml', '.yml', '.json'):
        raise ConfigError(f'unsupported config type {ext!r} for {filename}; use .py, .yaml or .json')
    with open(filename, encoding='utf-8') as f:
        text = f.read()

    if ext == '.py':
        bases = _read_base_list(filename, text)
    else:
        raw = _parse_data_file(filename, text, ext)
        bases = raw.pop(BASE_KEY, None)

    base_cfg, owner = {}, {}
    if bases is not None:
        if isinstance(bases, str):
            bases = [bases]
        if not isinstance(bases, (list, tuple)) or not all(isinstance(b, str) for b in bases):
            raise ConfigError(f'{filename}: _base_ must be a string or a list of strings, got {bases!r}')
        for base in bases:
            base_path = osp.join(osp.dirname(filename), base)
            sub = _load_file(base_path, stack + [filename])
            for key in sub:
                if key in owner:
                    raise ConfigError(f"key '{key}' is defined in two base configs of {filename}: "
                                      f'{owner[key]} and {osp.abspath(base_path)}')
                owner[key] = osp.abspath(base_path)
            base_cfg.update(sub)

    if ext == '.py':
        if base_cfg:
            text = _BASE_REF.sub(lambda m: repr(_lookup(base_cfg, m.group(1), filename)), text)
        elif _BASE_REF.search(text):
            raise ConfigError(f'{filename} uses {{{{_base_...}}}} but has no _base_')
        try:
            own = _exec_python(filename, text)
        except SyntaxError as e:
            raise ConfigError(f'syntax error in config {filename}, line {e.lineno}: {e.msg}') from e
        own.pop(BASE_KEY, None)
    else:
        own = raw
    return _merge(base_cfg, own)


def _parse_data_file(filename, text, ext):
    try:
        if ext == '.json':
            data = json.loads(text)
        else:
            import yaml
            data = yaml.safe_load(text)
    except Exception as e:
        raise ConfigError(f'cannot parse config {filename}: {e}') from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f'{filename}: a config must be a mapping at top level, got {type(data).__name__}')
    return data


def import_custom_modules(custom_imports):
    """Import the modules listed in ``custom_imports=dict(imports=[...], allow_failed_imports=False)``."""
    if not custom_imports:
        return []
    if isinstance(custom_imports, str):
        custom_imports = dict(imports=[custom_imports])
    imports = custom_imports.get('imports', [])
    if isinstance(imports, str):
        imports = [imports]
    allow_failed = custom_imports.get('allow_failed_imports', False)
    modules = []
    for name in imports:
        try:
            modules.append(importlib.import_module(name))
        except ImportError as e:
            if not allow_failed:
                raise ImportError(f"custom_imports: cannot import '{name}': {e}") from e
            import warnings
            warnings.warn(f"custom_imports: '{name}' failed to import and is skipped: {e}")
    return modules


class Config:
    """A loaded experiment config: attribute and item access over nested dicts.

    Use ``Config.fromfile(path)`` to load; ``Config(dict)`` to wrap a dict.
    """

    def __init__(self, cfg_dict=None, filename=None):
        if cfg_dict is None:
            cfg_dict = {}
        if not isinstance(cfg_dict, dict):
            raise TypeError(f'cfg_dict must be a dict, got {type(cfg_dict).__name__}')
        super().__setattr__('_cfg_dict', ConfigDict(cfg_dict))
        super().__setattr__('_filename', filename)

    @staticmethod
    def fromfile(filename, import_custom=True):
        """Load a .py/.yaml/.json config with its ``_base_`` chain and run its custom_imports."""
        cfg_dict = _load_file(str(filename), [])
        if import_custom and cfg_dict.get('custom_imports'):
            import_custom_modules(cfg_dict['custom_imports'])
        return Config(cfg_dict, filename=osp.abspath(str(filename)))

    @property
    def filename(self):
        return self._filename

    def to_dict(self):
        return self._cfg_dict.to_dict()

    # --- access -------------------------------------------------------------------------
    def __getattr__(self, name):
        return getattr(self._cfg_dict, name)

    def __setattr__(self, name, value):
        if isinstance(value, dict) and not isinstance(value, ConfigDict):
            value = ConfigDict(value)
        self._cfg_dict[name] = value

    def __getitem__(self, name):
        return self._cfg_dict[name]

    def __setitem__(self, name, value):
        self.__setattr__(name, value)

    def __contains__(self, name):
        return name in self._cfg_dict

    def __iter__(self):
        return iter(self._cfg_dict)

    def __len__(self):
        return len(self._cfg_dict)

    def __eq__(self, other):
        if isinstance(other, Config):
            return self.to_dict() == other.to_dict()
        if isinstance(other, dict):
            return self.to_dict() == to_plain(other)
        return NotImplemented

    def get(self, name, default=None):
        return self._cfg_dict.get(name, default)

    def keys(self):
        return self._cfg_dict.keys()

    def items(self):
        return self._cfg_dict.items()

    def copy(self):
        return Config(copy.deepcopy(self.to_dict()), filename=self._filename)

    def __repr__(self):
        return f'Config (path: {self._filename}):\n{self.pretty_text}'

    # --- overrides ----------------------------------------------------------------------
    def merge_from_dict(self, options):
        """Apply ``{'a.b.c': 1, 'lst.0.x': 2}``: dotted keys, digits index into lists.

        A dict value merges into an existing dict (like a config child) unless it holds
        ``_delete_=True``; anything else replaces.
        """
        for full_key, value in options.items():
            parts = full_key.split('.')
            node = self._cfg_dict
            for i, part in enumerate(parts[:-1]):
                node = self._step(node, part, full_key, create=True)
            last = parts[-1]
            if isinstance(node, list):
                idx = self._index(node, last, full_key)
                node[idx] = self._apply(node[idx], value)
            else:
                node[last] = self._apply(node.get(last), value)

    @staticmethod
    def _apply(old, value):
        if isinstance(value, dict) and isinstance(old, dict) and not value.get(DELETE_KEY, False):
            return ConfigDict(_merge(to_plain(old), value))
        if isinstance(value, dict):
            return ConfigDict(_strip_delete(value))
        return value

    @staticmethod
    def _index(node, part, full_key):
        if not part.lstrip('-').isdigit():
            raise ConfigError(f"option '{full_key}': '{part}' indexes a list, so it must be an integer")
        idx = int(part)
        if not -len(node) <= idx < len(node):
            raise ConfigError(f"option '{full_key}': index {idx} is out of range for a list of {len(node)}")
        return idx

    def _step(self, node, part, full_key, create):
        if isinstance(node, (list, tuple)):
            return node[self._index(node, part, full_key)]
        if not isinstance(node, dict):
            raise ConfigError(f"option '{full_key}': cannot descend into '{part}' of a {type(node).__name__}")
        if part not in node:
            if not create:
                raise ConfigError(f"option '{full_key}': no key '{part}'")
            node[part] = ConfigDict()
        return node[part]

    # --- output -------------------------------------------------------------------------
    @property
    def pretty_text(self):
        return ''.join(f'{k} = {_format_value(v, 0)}\n' for k, v in self.to_dict().items())

    def dump(self, path):
        """Write the config to ``path`` (.py, .json or .yaml by extension); it loads back equal."""
        path = str(path)
        ext = osp.splitext(path)[1].lower()
        data = self.to_dict()
        os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
        tmp = path + '.tmp'
        with open(tmp, 'w', encoding='utf-8') as f:
            if ext == '.py':
                f.write(self.pretty_text)
            elif ext == '.json':
                json.dump(data, f, indent=2)
            elif ext in ('.yaml', '.yml'):
                import yaml
                yaml.safe_dump(_lists_for_yaml(data), f, sort_keys=False)
            else:
                raise ConfigError(f'cannot dump config as {ext!r} ({path}); use .py, .json or .yaml')
        os.replace(tmp, path)


def _lists_for_yaml(obj):
    if isinstance(obj, dict):
        return {k: _lists_for_yaml(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_lists_for_yaml(v) for v in obj]
    return obj


def _format_value(value, indent):
    pad = ' ' * (indent + 4)
    if isinstance(value, dict):
        if not value:
            return 'dict()'
        if all(isinstance(k, str) and k.isidentifier() and k not in _KEYWORDS for k in value):
            items = [f'{pad}{k}={_format_value(v, indent + 4)}' for k, v in value.items()]
            return 'dict(\n' + ',\n'.join(items) + ')'
        items = [f'{pad}{k!r}: {_format_value(v, indent + 4)}' for k, v in value.items()]
        return '{\n' + ',\n'.join(items) + '}'
    if isinstance(value, list):
        if not any(isinstance(v, (dict, list, tuple)) for v in value):
            return repr(value)
        return '[\n' + ',\n'.join(pad + _format_value(v, indent + 4) for v in value) + ']'
    if isinstance(value, tuple):
        if len(value) == 1:
            return f'({_format_value(value[0], indent)},)'
        return '(' + ', '.join(_format_value(v, indent + 4) for v in value) + ')'
    text = repr(value)
    try:
        ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise ConfigError(f'cannot write config value {text} as a Python literal') from None
    return text


_KEYWORDS = {'False', 'None', 'True', 'and', 'as', 'assert', 'async', 'await', 'break', 'class',
             'continue', 'def', 'del', 'elif', 'else', 'except', 'finally', 'for', 'from', 'global',
             'if', 'import', 'in', 'is', 'lambda', 'nonlocal', 'not', 'or', 'pass', 'raise',
             'return', 'try', 'while', 'with', 'yield', 'dict'}


# --- command line ------------------------------------------------------------------------
def parse_value(text):
    """Parse one ``--cfg-options`` value: int, float, bool, None, list, tuple or string.

    ``[1,2]`` and ``(a,b)`` split at top-level commas, each item parsed again, so unquoted
    strings work inside them; ``true/false/none`` are accepted in any case. Unbalanced
    brackets or quotes (``[a,b``, ``'x``, ``a]``) raise ConfigError instead of becoming a string.
    """
    text = text.strip()
    lowered = text.lower()
    if lowered in ('true', 'false'):
        return lowered == 'true'
    if lowered in ('none', 'null'):
        return None
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            continue
    if text[:1] in '"\'' and text:
        if len(text) < 2 or text[-1] != text[0]:
            raise ConfigError(f'unbalanced quote in value {text!r} (it opens with {text[0]} but does not close)')
        return text[1:-1]
    closes_at = _bracket_scan(text)
    if text[:1] in '[(':
        if closes_at != len(text) - 1:
            raise ConfigError(f'value {text!r} is not one list or tuple: the bracket opened at its start closes '
                              f'at character {closes_at + 1} of {len(text)}; quote it to pass a string')
        inner = text[1:-1].strip()
        items = [parse_value(p) for p in _split_top_level(inner)] if inner else []
        return items if text[0] == '[' else tuple(items)
    return text


_PAIRS = {'[': ']', '(': ')'}


def _bracket_scan(text):
    """Check brackets and quotes of ``text`` are balanced; return where the first bracket group closes (or -1)."""
    stack, quote, first_close = [], None, -1
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in '"\'' and (i == 0 or not (text[i - 1].isalnum())):
            quote = ch     # a quote opening an item; an apostrophe inside a word (O'Brien) is text
        elif ch in _PAIRS:
            stack.append(ch)
        elif ch in ')]':
            if not stack:
                raise ConfigError(f'unbalanced brackets in value {text!r}: {ch!r} at character {i + 1} '
                                  f'closes nothing that is open')
            opened = stack.pop()
            if _PAIRS[opened] != ch:
                raise ConfigError(f'unbalanced brackets in value {text!r}: {ch!r} at character {i + 1} '
                                  f'closes {opened!r}')
            if not stack and first_close < 0:
                first_close = i
    if quote:
        raise ConfigError(f'unbalanced quotes in value {text!r}: {quote} is never closed')
    if stack:
        raise ConfigError(f'unbalanced brackets in value {text!r}: {stack[-1]!r} is never closed')
    return first_close


def _split_top_level(text):
    _bracket_scan(text)
    parts, depth, cur, quote = [], 0, [], None
    for i, ch in enumerate(text):
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in '"\'' and (i == 0 or not text[i - 1].isalnum()):
            quote = ch
        elif ch in '[(':
            depth += 1
        elif ch in '])':
            depth -= 1
        elif ch == ',' and depth == 0:
            parts.append(''.join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append(''.join(cur))
    return [p for p in parts if p.strip() != '' or len(parts) == 1]


def parse_cfg_options(pairs):
    """``['a.b=1', 'c=[1,2]']`` -> ``{'a.b': 1, 'c': [1, 2]}``."""
    options = {}
    for pair in pairs or []:
        if '=' not in pair:
            raise ConfigError(f"--cfg-options expects KEY=VALUE, got {pair!r}")
        key, value = pair.split('=', 1)
        if not key:
            raise ConfigError(f"--cfg-options: empty key in {pair!r}")
        try:
            options[key] = parse_value(value)
        except ConfigError as e:
            raise ConfigError(f'--cfg-options {key}: {e}') from None
    return options


class DictAction(argparse.Action):
    """argparse action: ``--cfg-options a.b=1 c=[1,2] d=True`` -> dict with typed values."""

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            options = parse_cfg_options(values)
        except ConfigError as e:
            parser.error(str(e))
        merged = dict(getattr(namespace, self.dest, None) or {})
        merged.update(options)
        setattr(namespace, self.dest, merged)


def add_cfg_options_argument(parser):
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config keys: a.b=1 c=[1,2] d=True lst.0.x=str')
    return parser


__all__ = ['Config', 'ConfigDict', 'ConfigError', 'ConfigFileNotFoundError', 'to_plain', 'DictAction', 'parse_value', 'parse_cfg_options',
           'add_cfg_options_argument', 'import_custom_modules', 'load_config']


def load_config(filename, cfg_options=None):
    """``Config.fromfile(filename)`` with ``--cfg-options`` style overrides (``{'a.b': 1}``) merged in."""
    cfg = Config.fromfile(filename)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg
