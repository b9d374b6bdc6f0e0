"""Which evaluators a test run builds: the config's, or targets by name: verification ``.bin`` files
(``lfw``, ``cfp_fp`` ...) and the IJB releases (``ijbb``, ``ijbc``).

``test_evaluator_cfgs`` is the library half of ``tools/test.py --target/--data-root/--batch-size/
--no-flip/--nfolds``; it only checks that files exist, it reads none.
"""
import importlib
import inspect
import os.path as osp

from ..datasets.ijb import find_ijb_release
from ..registry import EVALUATORS
from .evaluators import VerificationEvaluator
from .ijb import IJBEvaluator

__all__ = ['data_roots', 'test_evaluator_cfgs', 'evaluator_class', 'IJB_TARGETS']

# target name -> IJB set folder
IJB_TARGETS = {'ijbb': 'IJBB', 'ijbc': 'IJBC'}


def evaluator_class(type_):
    """The class (or function) an evaluator cfg's ``type`` names: a registered name, a dotted
    import path, or the class itself, resolved as ``EVALUATORS.build`` does."""
    if not isinstance(type_, str):
        return type_
    if type_ in EVALUATORS or '.' not in type_:
        return EVALUATORS.get(type_)  # KeyError with the closest registered names
    module, _, attr = type_.rpartition('.')
    return getattr(importlib.import_module(module), attr)


def _accepts(cls, arg):
    """Whether ``cls(**{arg: ...})`` is accepted: a parameter of that name or ``**kwargs``."""
    params = inspect.signature(cls).parameters.values()
    return any(p.name == arg or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _is_verification(ev_cfg):
    cls = evaluator_class(ev_cfg.get('type'))
    return inspect.isclass(cls) and issubclass(cls, VerificationEvaluator)


def _is_ijb(ev_cfg):
    cls = evaluator_class(ev_cfg.get('type'))
    return inspect.isclass(cls) and issubclass(cls, IJBEvaluator)


def _ijb_cfg(name, set_name, roots, base):
    """``(evaluator cfg, [])`` for the first root holding the release, else ``(None, [paths searched])``."""
    searched = []
    for root in roots:
        folder, looked = find_ijb_release(root, set_name)
        searched.extend(p for p in looked if p not in searched)
        if folder is not None:
            ev = dict(base, root=folder, set_name=set_name, name=name)
            ev.setdefault('type', 'IJBEvaluator')
            return ev, []
    return None, searched


def _configured(cfg):
    return [dict(e) for e in (cfg.get('test_evaluators') or cfg.get('val_evaluators') or [])]


def data_roots(cfg, data_root=None):
    """Folders searched for ``<target>.bin``, in order, without duplicates, as absolute paths:
    ``data_root``, the config's ``data_root``, the folders of the config's evaluator ``bin_path``s
    (test_evaluators, then val_evaluators); ``data`` when none of these exists."""
    roots = []
    if data_root:
        roots.append(data_root)
    if cfg.get('data_root'):
        roots.append(cfg.get('data_root'))
    for ev in list(cfg.get('test_evaluators') or []) + list(cfg.get('val_evaluators') or []):
        if ev.get('bin_path'):
            roots.append(osp.dirname(ev['bin_path']) or '.')
    if not roots:
        roots.append('data')
    out = []
    for r in roots:
        r = osp.abspath(osp.expanduser(str(r)))
        if r not in out:
            out.append(r)
    return out


def test_evaluator_cfgs(cfg, targets=None, data_root=None, batch_size=None, flip=None, nfolds=None):
    """Evaluator config dicts for a test run, and the targets whose files are missing.

    Args:
        cfg: the experiment config (``Config`` or dict): ``test_evaluators``, else
            ``val_evaluators``; ``data_root``.
        targets: target names (list, or a comma-separated string such as ``'lfw,cfp_fp'``); each
            becomes a ``VerificationEvaluator`` on the first existing ``<root>/<name>.bin`` over
            ``data_roots(cfg, data_root)``, then the ``bin_path`` of a configured verification
            evaluator of that name (whose other settings it keeps). ``ijbb`` / ``ijbc`` (any case)
            become an ``IJBEvaluator`` on the first root holding ``IJBB/meta`` / ``IJBC/meta`` (or
            being that folder), then the ``root`` of a configured IJB evaluator of that name.
            None: the configured evaluators.
        data_root: folder searched first for ``<name>.bin``.
        batch_size, flip: set on every selected evaluator whose class accepts the argument.
        nfolds: set on every selected evaluator whose class accepts ``nfolds`` (verification).
        None leaves an argument as configured.
    Returns:
        ``(cfgs, missing)``: evaluator config dicts in order; ``[(name, [absolute paths
        searched])]`` for targets (or configured ``bin_path``s) whose file does not exist.
    Raises:
        ValueError: no targets given and the config has no test_evaluators / val_evaluators, or
            ``targets`` names nothing.
    """
    configured = _configured(cfg)
    selected, missing = [], []
    if targets is not None:
        names = [t.strip() for t in targets.split(',')] if isinstance(targets, str) else list(targets)
        names = [n for n in names if n]
        if not names:
            raise ValueError(f'no target names in {targets!r}; give names such as lfw,cfp_fp')
        by_name = {e.get('name'): e for e in configured if _is_verification(e)}
        ijb_by_name = {e.get('name'): e for e in configured if _is_ijb(e)}
        roots = data_roots(cfg, data_root)
        for name in names:
            if name.lower() in IJB_TARGETS:
                base = ijb_by_name.get(name, {})
                ev, searched = _ijb_cfg(name, IJB_TARGETS[name.lower()],
                                        roots + ([base['root']] if base.get('root') else []), base)
                if ev is None:
                    missing.append((name, searched))
                else:
                    selected.append(ev)
                continue
            searched = [osp.join(root, f'{name}.bin') for root in roots]
            base = by_name.get(name, {})
            if base.get('bin_path'):
                searched.append(osp.abspath(base['bin_path']))
            found = next((p for p in searched if osp.isfile(p)), None)
            if found is None:
                missing.append((name, searched))
                continue
            ev = dict(base, bin_path=found, name=name)
            ev.setdefault('type', 'VerificationEvaluator')
            ev.pop('dataset', None)
            selected.append(ev)
    else:
        if not configured:
            source = getattr(cfg, 'filename', None) or 'the config'
            raise ValueError(f'{source} has no test_evaluators or val_evaluators; pass target names '
                             '(tools/test.py --target lfw,cfp_fp)')
        for ev in configured:
            if ev.get('bin_path') and not osp.isfile(ev['bin_path']):
                missing.append((ev.get('name') or osp.basename(ev['bin_path']), [osp.abspath(ev['bin_path'])]))
                continue
            if ev.get('root') and _is_ijb(ev):
                folder, searched = find_ijb_release(ev['root'], ev.get('set_name', 'IJBC'))
                if folder is None:
                    missing.append((ev.get('name') or str(ev.get('set_name', 'IJBC')).lower(), searched))
                    continue
            selected.append(ev)
    overrides = {k: v for k, v in dict(batch_size=batch_size, flip=flip, nfolds=nfolds).items() if v is not None}
    for ev in selected:
        if overrides:
            cls = evaluator_class(ev.get('type'))
            ev.update({k: v for k, v in overrides.items() if _accepts(cls, k)})
    return selected, missing
