"""Import an arcface_torch PyTorch checkpoint (``backbone.pth``) into a facekit backbone, without torch.

A ``torch.save(backbone.state_dict(), path)`` file is a pickle plus raw storage bytes, in one of two
layouts:

``zip`` (PyTorch >= 1.6, the default)
    ``<name>/data.pkl`` (the pickle), ``<name>/data/<key>`` (one raw storage each), ``<name>/byteorder``
    (``little`` or ``big``; absent in files older than the field: little), ``<name>/version``.
``legacy`` (``_use_new_zipfile_serialization=False``, and every file before 1.6)
    five things back to back: a pickled magic number, a pickled protocol version (1001), a pickled
    ``sys_info`` dict (byte order, type sizes), the object pickle, a pickled list of storage keys,
    then for each key in that order an int64 element count and the raw storage bytes.

In both the object pickle is an ``OrderedDict`` of ``torch._utils._rebuild_tensor_v2(storage, offset,
size, stride, requires_grad, hooks)`` calls whose storages are persistent ids
``('storage', torch.FloatStorage, key, location, numel[, view_metadata])``. The unpickler below admits
exactly those globals (plus ``_rebuild_parameter`` and the typed storage classes) and refuses any
other one in ``find_class``, i.e. when the pickle names it, before anything could call it. Tensors
come back as NumPy arrays built from the storage with the recorded offset, size and stride.

The name mapping is a rename of module paths (per backbone family) plus the leaf names MindSpore
uses: BatchNorm ``weight/bias/running_mean/running_var`` -> ``gamma/beta/moving_mean/moving_variance``
(``num_batches_tracked`` is a training counter and is dropped), PReLU ``weight`` -> ``w``, LayerNorm
``weight/bias`` -> ``gamma/beta``; convolutions and linears keep ``weight``/``bias`` (same layouts:
(O, I/g, kh, kw) and (out, in)). Where a BatchNorm epsilon differs between the source and the facekit
cell, the running variance is shifted by the difference, which leaves ``var + eps`` (and so the layer)
exactly unchanged.
"""
import collections
import os
import pickle
import re
import struct
import zipfile

import numpy as np

from ..datasets.verification_bin import UnsafeFileError

__all__ = ['PthConversionError', 'UnsafeFileError', 'load_pth_state_dict', 'convert_pth_to_backbone',
           'map_state_dict']

_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL = 1001


class PthConversionError(ValueError):
    """A PyTorch checkpoint that is not (or does not fit) the facekit backbone asked for."""


# ---------------------------------------------------------------------------------------------
# Restricted unpickling
# ---------------------------------------------------------------------------------------------

class _StorageType:
    """Stands in for a ``torch.<Type>Storage`` class: only its element type matters."""

    def __init__(self, name, dtype):
        self.name, self.dtype = name, dtype

    def __repr__(self):
        return f'torch.{self.name}'


# bfloat16 has no NumPy dtype: read as uint16, widened to float32 when the tensor is built.
_STORAGE_TYPES = {name: _StorageType(name, dtype) for name, dtype in (
    ('FloatStorage', 'f4'), ('DoubleStorage', 'f8'), ('HalfStorage', 'f2'), ('BFloat16Storage', 'bf16'),
    ('LongStorage', 'i8'), ('IntStorage', 'i4'), ('ShortStorage', 'i2'), ('CharStorage', 'i1'),
    ('ByteStorage', 'u1'), ('BoolStorage', '?'))}


class _Storage:
    """One storage named by a persistent id; ``array`` (1-D, ``numel`` elements) is filled later."""

    def __init__(self, key, storage_type, numel):
        self.key, self.storage_type, self.numel = key, storage_type, numel
        self.array = None


class _TensorRef:
    """A ``_rebuild_tensor_v2`` call, resolved into an ndarray once the storages are read."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _int_tuple(value, what):
    if not (isinstance(value, tuple) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise UnsafeFileError(f'tensor {what} must be a tuple of ints, got {value!r}')
    return value


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    if not isinstance(storage, _Storage):
        raise UnsafeFileError(f'_rebuild_tensor_v2 needs a storage, got {type(storage).__name__}')
    if not isinstance(storage_offset, int) or storage_offset < 0:
        raise UnsafeFileError(f'tensor storage offset must be an int >= 0, got {storage_offset!r}')
    size, stride = _int_tuple(size, 'size'), _int_tuple(stride, 'stride')
    if len(size) != len(stride):
        raise UnsafeFileError(f'tensor size {size} and stride {stride} differ in length')
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    if not isinstance(data, _TensorRef):
        raise UnsafeFileError(f'_rebuild_parameter needs a tensor, got {type(data).__name__}')
    return data


_SAFE_GLOBALS = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor_v2,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
}
_SAFE_GLOBALS.update({('torch', name): st for name, st in _STORAGE_TYPES.items()})


class _StateDictUnpickler(pickle.Unpickler):
    """Admits only what a state_dict pickle needs; storages are collected in ``self.storages``."""

    def __init__(self, file, source, storages=None):
        super().__init__(file, encoding='utf-8')
        self._source = source
        self.storages = {} if storages is None else storages

    def find_class(self, module, name):
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeFileError(
                f'{self._source}: refusing to load global {module}.{name}; a PyTorch state_dict may hold only '
                'collections.OrderedDict, torch._utils._rebuild_tensor_v2/_rebuild_parameter and typed '
                'storages (torch.FloatStorage, ...): a file that needs more is a pickled model or code, '
                'not weights (save model.state_dict())') from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == 'storage'):
            raise UnsafeFileError(f'{self._source}: refusing persistent id {pid!r} (only storages are expected)')
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise UnsafeFileError(f'{self._source}: storage of type {storage_type!r} is not a typed storage')
        if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise UnsafeFileError(f'{self._source}: malformed storage id {pid!r}')
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = _Storage(key, storage_type, numel)
        view = pid[5] if len(pid) == 6 else None
        if view is None:
            return storage
        # legacy files: a view of another storage, (view_key, element offset, element count)
        view_key, offset, view_size = view
        viewed = _Storage(view_key, storage_type, view_size)
        viewed.base, viewed.base_offset = storage, offset
        self.storages.setdefault(('view', view_key), viewed)
        return self.storages[('view', view_key)]


def _element_dtype(storage_type, byteorder):
    if storage_type.dtype == 'bf16':
        return np.dtype(byteorder + 'u2')
    return np.dtype(byteorder + storage_type.dtype if storage_type.dtype not in ('?', 'i1', 'u1')
                    else storage_type.dtype)


def _to_array(ref, source, name):
    storage = ref.storage
    base = storage.array
    if base is None:   # a legacy view
        base = storage.base.array[storage.base_offset:storage.base_offset + storage.numel]
    if any(s < 0 for s in ref.size) or any(s < 0 for s in ref.stride):
        raise PthConversionError(f'{source}: tensor {name!r} has a negative size or stride {ref.size}/{ref.stride}')
    count = int(np.prod(ref.size)) if ref.size else 1
    if count:
        last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
        if last >= base.size:
            raise PthConversionError(f'{source}: tensor {name!r} (offset {ref.offset}, size {ref.size}, stride '
                                     f'{ref.stride}) reaches past its storage of {base.size} elements')
    item = base.itemsize
    arr = np.lib.stride_tricks.as_strided(base[ref.offset:] if count else base[:0], shape=ref.size,
                                          strides=tuple(s * item for s in ref.stride), writeable=False)
    arr = np.array(arr, dtype=arr.dtype.newbyteorder('=') if arr.dtype.byteorder not in ('=', '|') else arr.dtype)
    if storage.storage_type.dtype == 'bf16':
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr


def _read_zip(path):
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        pkl = [n for n in names if n == 'data.pkl' or n.endswith('/data.pkl')]
        if len(pkl) != 1:
            raise PthConversionError(f'{path}: a zip archive needs exactly one data.pkl to be a PyTorch checkpoint, '
                                     f'found {len(pkl)}')
        prefix = pkl[0][:-len('data.pkl')]
        byteorder = 'little'
        if prefix + 'byteorder' in names:
            byteorder = z.read(prefix + 'byteorder').decode('ascii', 'replace').strip()
            if byteorder not in ('little', 'big'):
                raise PthConversionError(f'{path}: unknown byteorder {byteorder!r}')
        with z.open(pkl[0]) as f:
            unpickler = _StateDictUnpickler(f, path)
            obj = unpickler.load()
        order = '<' if byteorder == 'little' else '>'
        for key, storage in unpickler.storages.items():
            if isinstance(key, tuple):
                continue
            entry = f'{prefix}data/{key}'
            if entry not in names:
                raise PthConversionError(f'{path}: storage {key!r} is missing ({entry})')
            dtype = _element_dtype(storage.storage_type, order)
            raw = z.read(entry)
            if len(raw) < storage.numel * dtype.itemsize:
                raise PthConversionError(f'{path}: storage {key!r} holds {len(raw)} bytes, expected '
                                         f'{storage.numel} x {dtype.itemsize}')
            storage.array = np.frombuffer(raw, dtype=dtype, count=storage.numel)
    return obj, unpickler.storages


def _read_legacy(path):
    with open(path, 'rb') as f:
        magic = _StateDictUnpickler(f, path).load()
        if magic != _LEGACY_MAGIC:
            raise PthConversionError(f'{path}: a pickle, but not a PyTorch checkpoint (first object {magic!r:.60} '
                                     'is not the torch.save magic number)')
        protocol = _StateDictUnpickler(f, path).load()
        if protocol != _LEGACY_PROTOCOL:
            raise PthConversionError(f'{path}: legacy torch.save protocol {protocol!r} is not supported '
                                     f'(only {_LEGACY_PROTOCOL})')
        sys_info = _StateDictUnpickler(f, path).load()
        little = not isinstance(sys_info, dict) or sys_info.get('little_endian', True)
        unpickler = _StateDictUnpickler(f, path)
        obj = unpickler.load()
        keys = _StateDictUnpickler(f, path).load()
        if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
            raise PthConversionError(f'{path}: malformed storage key list')
        order = '<' if little else '>'
        for key in keys:
            storage = unpickler.storages.get(key)
            if storage is None:
                raise PthConversionError(f'{path}: storage {key!r} is listed but not used by the pickle')
            head = f.read(8)
            if len(head) != 8:
                raise PthConversionError(f'{path}: truncated before storage {key!r}')
            (numel,) = struct.unpack(order + 'q', head)
            dtype = _element_dtype(storage.storage_type, order)
            if numel < storage.numel:
                raise PthConversionError(f'{path}: storage {key!r} holds {numel} elements, the pickle says '
                                         f'{storage.numel}')
            raw = f.read(numel * dtype.itemsize)
            if len(raw) != numel * dtype.itemsize:
                raise PthConversionError(f'{path}: truncated inside storage {key!r}')
            storage.array = np.frombuffer(raw, dtype=dtype)
        missing = [k for k, s in unpickler.storages.items() if not isinstance(k, tuple) and s.array is None]
        if missing:
            raise PthConversionError(f'{path}: storages {missing[:5]} are used by the pickle but not stored')
    return obj, unpickler.storages


def _pick_state_dict(obj, path):
    """The state_dict inside what was pickled: the object itself, or arcface_torch's training checkpoint's
    ``state_dict_backbone`` (``checkpoint_gpu_<rank>.pt``)."""
    if not isinstance(obj, dict):
        raise PthConversionError(f'{path}: holds a {type(obj).__name__}, not a state_dict (a dict of tensors)')
    if not all(isinstance(v, _TensorRef) for v in obj.values()):
        for key in ('state_dict_backbone', 'state_dict'):
            if isinstance(obj.get(key), dict):
                return obj[key]
        other = [k for k, v in obj.items() if not isinstance(v, _TensorRef)]
        raise PthConversionError(f'{path}: entries {other[:5]} are not tensors; expected a state_dict '
                                 '(torch.save(backbone.state_dict(), path)) or a training checkpoint with '
                                 "'state_dict_backbone'")
    return obj


def load_pth_state_dict(path):
    """Read a ``torch.save``'d state_dict without torch.

    Returns:
        (state, layout): ``state`` an OrderedDict name -> ndarray (dtype of the stored tensor, bfloat16
        widened to float32) with any ``module.`` (DDP) prefix removed; ``layout`` 'zip' or 'legacy'.
    Raises:
        UnsafeFileError: the pickle names a global other than a tensor/storage rebuild or OrderedDict
            (nothing from it has run).
        PthConversionError: not a PyTorch state_dict, or a malformed one.
    """
    path = os.fspath(path)
    if zipfile.is_zipfile(path):
        obj, _ = _read_zip(path)
        layout = 'zip'
    else:
        with open(path, 'rb') as f:
            first = f.read(1)
        if first != b'\x80':
            raise PthConversionError(f'{path}: neither a zip archive nor a pickle stream: not a torch.save file')
        obj, _ = _read_legacy(path)
        layout = 'legacy'
    refs = _pick_state_dict(obj, path)
    state = collections.OrderedDict()
    for name, ref in refs.items():
        if not isinstance(name, str) or not isinstance(ref, _TensorRef):
            raise PthConversionError(f'{path}: entry {name!r} is not a named tensor')
        key = name
        while key.startswith('module.'):
            key = key[len('module.'):]
        if key in state:
            raise PthConversionError(f'{path}: {name!r} and another entry are both {key!r} once "module." is removed')
        state[key] = _to_array(ref, path, name)
    return state, layout


# ---------------------------------------------------------------------------------------------
# arcface_torch names -> facekit names
# ---------------------------------------------------------------------------------------------

# BatchNorm buffers the facekit cells have no place for (a training counter).
_DROPPED_LEAVES = ('num_batches_tracked',)


def _mbf_module_map(torch_modules):
    """arcface_torch MobileFaceNet module path -> facekit path.

    arcface_torch nests ``layers.<i>`` as ConvBlock / DepthWise / Residual(``layers.<j>`` DepthWise)
    with every block's cells in ``.layers.<k>``; facekit flattens the residual stacks into one
    ``layers`` sequence and names a DepthWise's three parts ``conv``/``conv_dw``/``project``.
    """
    depth = {}     # torch index i -> (kind, number of facekit units)
    for m in torch_modules:
        parts = m.split('.')
        if parts[0] != 'layers' or len(parts) < 4:
            continue
        i = int(parts[1])
        kind = {4: 'conv', 6: 'depthwise', 8: 'residual'}.get(len(parts))
        units = int(parts[3]) + 1 if kind == 'residual' else 1
        old_kind, old_units = depth.get(i, (kind, 0))
        if old_kind != kind:
            raise PthConversionError(f'MobileFaceNet layers.{i} mixes module layouts ({old_kind}, {kind})')
        depth[i] = (kind, max(units, old_units))
    start, offset = {}, 0
    for i in sorted(depth):
        start[i] = offset
        offset += depth[i][1]
    parts_of_dw = ('conv', 'conv_dw', 'project')

    def rename(m):
        p = m.split('.')
        if p[0] == 'layers' and len(p) >= 4 and p[2] == 'layers' and int(p[1]) in depth:
            kind, f = depth[int(p[1])][0], start[int(p[1])]
            if kind == 'conv' and len(p) == 4:
                return f'layers.{f}.{p[3]}'
            if kind == 'depthwise' and len(p) == 6 and p[4] == 'layers' and int(p[3]) < 3:
                return f'layers.{f}.{parts_of_dw[int(p[3])]}.{p[5]}'
            if kind == 'residual' and len(p) == 8 and p[4] == 'layers' and p[6] == 'layers' and int(p[5]) < 3:
                return f'layers.{f + int(p[3])}.{parts_of_dw[int(p[5])]}.{p[7]}'
            return None
        if re.fullmatch(r'conv_sep\.layers\.\d+', m):
            return 'conv_sep.' + p[2]
        if re.fullmatch(r'features\.layers\.0\.layers\.\d+', m):
            return 'gdc.' + p[4]
        return {'features.layers.2': 'linear', 'features.layers.3': 'features'}.get(m)
    return rename


def _family(backbone):
    from ..models.backbones.iresnet import IResNet
    from ..models.backbones.mobilefacenet import MobileFaceNet
    from ..models.backbones.vit import VisionTransformer
    for cls, fam in ((IResNet, 'iresnet'), (MobileFaceNet, 'mobilefacenet'), (VisionTransformer, 'vit')):
        if isinstance(backbone, cls):
            return fam
    raise PthConversionError(f'no arcface_torch name mapping for {type(backbone).__name__}; known: IResNet '
                             '(r18/34/50/100/200), MobileFaceNet (mbf, mbf_large), VisionTransformer (vit_t/s/b/l)')


def _module_mapper(family, torch_modules):
    if family == 'mobilefacenet':
        return _mbf_module_map(torch_modules)
    if family == 'vit':
        return lambda m: 'patch_embed' if m == 'patch_embed.proj' else m
    return lambda m: m


def _source_bn_eps(family, torch_module):
    # arcface_torch: every BatchNorm is PyTorch's default 1e-5 except the ViT head's two BN1d (2e-5).
    if family == 'vit' and torch_module in ('feature.1', 'feature.3'):
        return 2e-5
    return 1e-5


_SOURCE_LN_EPS = 1e-5   # arcface_torch's ViT LayerNorms: PyTorch's default


def _leaf_name(cell, leaf):
    from mindspore import nn
    from ..models.backbones.layers import PReLU
    if isinstance(cell, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return {'weight': 'gamma', 'bias': 'beta', 'running_mean': 'moving_mean',
                'running_var': 'moving_variance'}.get(leaf)
    if isinstance(cell, nn.LayerNorm):
        return {'weight': 'gamma', 'bias': 'beta'}.get(leaf)
    if isinstance(cell, (PReLU, nn.PReLU)):
        return 'w' if leaf == 'weight' else None
    return leaf if leaf in ('weight', 'bias') else None


def _as_backbone(backbone):
    from mindspore import nn
    if isinstance(backbone, nn.Cell):
        return backbone
    import facekit.models  # noqa: F401  (fill BACKBONES)
    from ..registry import BACKBONES
    cfg = dict(type=backbone) if isinstance(backbone, str) else dict(backbone)
    return BACKBONES.build(cfg)


def map_state_dict(state, backbone, source='the state_dict'):
    """Map an arcface_torch state_dict (``module.`` already removed) onto ``backbone``'s parameter names.

    Args:
        state: name -> ndarray as ``load_pth_state_dict`` returns it.
        backbone: the facekit backbone cell (IResNet, MobileFaceNet or VisionTransformer).
        source: what to call the checkpoint in messages.
    Returns:
        (params, stats): ``params`` facekit name -> float32 ndarray of that parameter's shape, for every
        parameter; ``stats`` dict with ``renamed`` (names that changed), ``dropped`` (buffers skipped),
        ``eps_adjusted`` (BatchNorms whose variance was shifted for a different epsilon).
    Raises:
        PthConversionError: a source tensor that maps nowhere (named), a shape that differs, or a
            backbone parameter left unfilled (named).
    """
    from mindspore import nn
    family = _family(backbone)
    cells = dict(backbone.cells_and_names())
    expected = {n: tuple(p.shape) for n, p in backbone.parameters_and_names()}
    modules = {k.rsplit('.', 1)[0] for k in state if '.' in k}
    rename = _module_mapper(family, modules)
    params, leftovers, shape_errors, dropped, renamed, eps_adjusted = {}, [], [], 0, 0, 0
    for key, value in state.items():
        module, _, leaf = key.rpartition('.')
        if leaf in _DROPPED_LEAVES:
            dropped += 1
            continue
        if not module:   # a top-level parameter: ViT pos_embed / mask_token
            target = key if key in expected and key not in cells else None
            cell = None
        else:
            ours = rename(module)
            cell = cells.get(ours) if ours is not None else None
            new_leaf = _leaf_name(cell, leaf) if cell is not None else None
            target = f'{ours}.{new_leaf}' if new_leaf is not None else None
        if target is None or target not in expected:
            leftovers.append(f'{key}{tuple(value.shape)}')
            continue
        if tuple(value.shape) != expected[target]:
            shape_errors.append(f'{key}{tuple(value.shape)} -> {target}{expected[target]}')
            continue
        value = np.asarray(value, dtype=np.float32)
        if isinstance(cell, (nn.BatchNorm1d, nn.BatchNorm2d)) and leaf == 'running_var':
            shift = _source_bn_eps(family, module) - float(cell.eps)
            if shift != 0.0:
                # exact: var + eps_source == (var + shift) + eps_facekit
                value = (value.astype(np.float64) + shift).astype(np.float32)
                eps_adjusted += 1
                if (value < 0).any():
                    raise PthConversionError(f'{source}: {key} cannot be moved from BatchNorm eps '
                                             f'{_source_bn_eps(family, module)} to {cell.eps} (variance < 0)')
        if isinstance(cell, nn.LayerNorm) and abs(float(cell.epsilon) - _SOURCE_LN_EPS) > 0:
            raise PthConversionError(f'{source}: {key}: LayerNorm eps {_SOURCE_LN_EPS} in the source, '
                                     f'{cell.epsilon} in facekit; an epsilon inside a LayerNorm cannot be '
                                     'folded into its weights')
        renamed += target != key
        params[target] = value
    problems = []
    if shape_errors:
        problems.append(f'{len(shape_errors)} shapes differ: {"; ".join(shape_errors[:8])}')
    if leftovers:
        problems.append(f'{len(leftovers)} source tensors map to no {type(backbone).__name__} parameter: '
                        f'{", ".join(leftovers[:12])}{" ..." if len(leftovers) > 12 else ""}')
    missing = [n for n in expected if n not in params]
    if missing:
        problems.append(f'{len(missing)} {type(backbone).__name__} parameters are not in the file: '
                        f'{", ".join(missing[:12])}{" ..." if len(missing) > 12 else ""}')
    if problems:
        raise PthConversionError(f'{source} does not fit {type(backbone).__name__} ({family}): '
                                 + ' | '.join(problems) + '; is it a checkpoint of another backbone or size?')
    return params, dict(renamed=renamed, dropped=dropped, eps_adjusted=eps_adjusted)


def convert_pth_to_backbone(path, backbone):
    """Convert an arcface_torch ``backbone.pth`` for a facekit backbone.

    Args:
        path: the ``torch.save`` file (zip or legacy layout; ``module.`` prefixes allowed).
        backbone: a facekit backbone cell, a registered backbone name (``'iresnet50'``) or config dict.
    Returns:
        (params, info): ``params`` maps every backbone parameter name to a float32 ndarray of its shape;
        ``info`` dict(format='pytorch', layout='zip'|'legacy', checked=<what was verified>, renamed=n,
        dropped=n, eps_adjusted=n).
    """
    path = os.fspath(path)
    cell = _as_backbone(backbone)
    state, layout = load_pth_state_dict(path)
    params, stats = map_state_dict(state, cell, source=path)
    checked = (f'{len(state) - stats["dropped"]} PyTorch tensors mapped one-to-one onto the {len(params)} '
               f'parameters of {type(cell).__name__}: names and shapes checked, every parameter filled, every '
               f'tensor used ({stats["dropped"]} num_batches_tracked counters skipped); the PyTorch forward '
               'pass was not run (that needs torch)')
    return params, dict(format='pytorch', layout=layout, checked=checked, **stats)
