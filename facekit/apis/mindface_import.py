"""Checkpoints of the earlier MindSpore face toolkit (mindspore-lab/mindface, ``recognition/``) into facekit.

What its scripts write (read from its ``train.py``, ``train_cfg.py``, ``runner/wrapper.py``):
``ModelCheckpoint`` saves the whole *train* network, so a file holds the backbone, the PartialFC
head (``mp_weight`` or ``fc.weight``), the optimizer's clones of every trainable parameter
(``moments.*``, ``accum.*``/``stat.*``, ``adam_m.*``/``adam_v.*`` ...) and counters
(``learning_rate``, ``global_step``, ``momentum``, ...). The backbone's names carry the wrapper's
prefix: none with ``train.py`` (its wrappers use ``auto_prefix=False``), ``_backbone.`` with
``train_cfg.py`` (``Network`` keeps the default prefixing); other wrappers add ``network.``,
``backbone.``, ``model.``. The prefix is found, not assumed: it is the one under which *every*
backbone entry, BatchNorm statistics included, exists. Optimizer clones never hold BatchNorm
statistics, so they never qualify. Everything outside the backbone is ignored and counted.

Mapping rules (facekit name <- mindface name):

- IResNet (iresnet50/100, also 18/34): identical names and layers (BN eps 1e-5, PReLU ``w`` after
  ``bn2`` in each block, ``fc`` -> ``features`` BN1d).
- MobileFaceNet (``get_mbf``): mindface nests what facekit keeps flat. Its ``layers`` list holds
  stem, first conv, then a stride-2 ``DepthWise`` and a ``Residual`` (``.layers.<k>`` of
  ``DepthWise``) per stage; every block is ``<block>.layers.<0 conv|1 bn|2 prelu>`` and a
  ``DepthWise`` is ``.layers.<0 expand|1 depthwise|2 project>``. facekit numbers the residual blocks
  consecutively in ``layers`` and names the three parts ``conv``/``conv_dw``/``project``; the head
  ``features.layers.<0 GDC conv block|2 Dense|3 BN1d>`` is facekit's ``gdc``/``linear``/``features``.
- ViT (vit_t/s/b/l): ``patch_embed.proj`` -> ``patch_embed``; block ``layer1.0.cell.<0 LN|1 attention>``
  -> ``norm1``/``attn``, ``layer2.0.cell.<0 LN|1 MLP>`` -> ``norm2``/``mlp``. mindface splits its
  fused qkv output as ``k, q, v`` (and scores ``q @ k^T``), so facekit's qkv rows are mindface's with
  the first two thirds swapped (weight and bias). Its attention has a qkv bias and every LayerNorm
  keeps MindSpore's default epsilon 1e-7: the facekit backbone must be built with
  ``qkv_bias=True, layer_norm_eps=1e-7`` (``MINDFACE_BACKBONE_OPTIONS``). mindface has no mask token
  (its random mask zeroes tokens), so facekit's ``mask_token`` is set to zeros; it is used only in
  training with ``mask_ratio > 0``.
"""
import re

import numpy as np

__all__ = ['MINDFACE_BACKBONE_OPTIONS', 'MindfaceImportError', 'looks_like_mindface', 'mindface_param_map',
           'convert_mindface_to_backbone']

# Keyword arguments a facekit backbone needs to compute exactly what mindface's model computes.
MINDFACE_BACKBONE_OPTIONS = {
    'iresnet18': {}, 'iresnet34': {}, 'iresnet50': {}, 'iresnet100': {},
    'mobilefacenet': {},
    'vit_t': dict(qkv_bias=True, layer_norm_eps=1e-7), 'vit_s': dict(qkv_bias=True, layer_norm_eps=1e-7),
    'vit_b': dict(qkv_bias=True, layer_norm_eps=1e-7), 'vit_l': dict(qkv_bias=True, layer_norm_eps=1e-7),
}

# Names only mindface's models (or its train wrappers) produce; facekit never writes them.
_MINDFACE_MARKERS = re.compile(
    r'(^|\.)_backbone\.'                      # train_cfg.py's Network
    r'|(^|\.)mp_weight$'                      # PartialFC head
    r'|(^|\.)patch_embed\.proj\.'             # ViT PatchEmbed
    r'|\.layer[12]\.0\.cell\.'                # ViT ResidualCell blocks
    r'|(^|\.)conv_sep\.layers\.'              # MobileFaceNet ConvBlock
    r'|(^|\.)features\.layers\.')             # MobileFaceNet GDC head
# Clones MindSpore's optimizers make of each trainable parameter.
# (Only prefixes no backbone parameter starts with: FTRL's ``linear.`` clone would match MobileFaceNet's
# ``linear.weight``.)
_OPTIMIZER_PREFIXES = ('moments.', 'accum.', 'stat.', 'adam_m.', 'adam_v.', 'moment1.', 'moment2.', 'mean_grad.',
                       'mean_square.', 'nadam_m.', 'nadam_v.', 'adan_m.', 'adan_v.', 'adan_n.')
_OPTIMIZER_SCALARS = ('learning_rate', 'global_step', 'momentum', 'beta1_power', 'beta2_power', 'scale_sense')
# facekit's own checkpoint prefixes (FaceRecognizer parameters, runner state).
_FACEKIT_PREFIXES = ('backbone.', 'head.', 'optimizer.', 'train_state.', 'hook_state.')


class MindfaceImportError(ValueError):
    """A mindface checkpoint that does not fit the facekit backbone it is converted into."""


def looks_like_mindface(names):
    """Whether a MindSpore checkpoint with parameter ``names`` was written by mindface, not facekit.

    True when a name only mindface writes is present (``_backbone.`` wrapper prefix, PartialFC's
    ``mp_weight``, the nested MobileFaceNet/ViT layouts), or when a file without facekit's prefixes
    holds MindSpore optimizer clones/counters (mindface's ``train.py`` saves its unprefixed train
    network; facekit stores optimizer state under ``optimizer.``). A bare IResNet backbone saved by
    either toolkit has the same names and meaning, and is reported as facekit's.
    """
    names = list(names)
    if any(_MINDFACE_MARKERS.search(n) for n in names):
        return True
    if any(n.startswith(_FACEKIT_PREFIXES) for n in names):
        return False
    return any(n.startswith(_OPTIMIZER_PREFIXES) or n in _OPTIMIZER_SCALARS for n in names)


# ----------------------------------------------------------------------------- name maps

def _family(backbone):
    from ..models.backbones import IResNet, MobileFaceNet, VisionTransformer
    for cls, fam in ((IResNet, 'iresnet'), (MobileFaceNet, 'mobilefacenet'), (VisionTransformer, 'vit')):
        if isinstance(backbone, cls):
            return fam
    raise MindfaceImportError(f'mindface checkpoints hold IResNet, MobileFaceNet or ViT backbones; '
                              f'{type(backbone).__name__} has no mindface counterpart')


def _mobilefacenet_map(backbone):
    """{facekit block prefix: mindface block prefix} for every conv/BN/PReLU block of a facekit MobileFaceNet.

    mindface's ``layers`` is always [stem, first, DW, Residual, DW, Residual, DW, Residual]: the
    stride-2 ``DepthWise`` blocks sit at 2, 4, 6 and each stage's residual blocks inside the next
    index (an empty stage still takes its index); with more than one first-stage block the first
    entry is a ``Residual`` too.
    """
    from ..models.backbones.mobilefacenet import DepthWise
    blocks = {}
    slot, inner = 0, 0           # mindface index of the entry being filled, block inside a Residual
    for k, cell in enumerate(backbone.layers):
        if k == 0:
            mf = 'layers.0'
        elif isinstance(cell, DepthWise) and cell.residual:
            if slot % 2 == 0 and slot >= 2:     # residual run after a stride-2 DepthWise
                slot, inner = slot + 1, 0
            elif slot == 0:                      # residual first stage
                slot, inner = 1, 0
            mf = f'layers.{slot}.layers.{inner}'
            inner += 1
        elif isinstance(cell, DepthWise):
            slot = slot + 1 if slot % 2 == 1 else slot + 2
            mf = f'layers.{slot}'
        else:                                    # first-stage grouped ConvBlock
            slot = 1
            mf = 'layers.1'
        if isinstance(cell, DepthWise):
            for part, j in (('conv', 0), ('conv_dw', 1), ('project', 2)):
                blocks[f'layers.{k}.{part}'] = f'{mf}.layers.{j}.layers'
        else:
            blocks[f'layers.{k}'] = f'{mf}.layers'
    blocks['conv_sep'] = 'conv_sep.layers'
    blocks['gdc'] = 'features.layers.0.layers'
    return blocks


def _swap_qk(value):
    # facekit's qkv rows are (q, k, v); mindface's fused output unstacks as (k, q, v).
    third = value.shape[0] // 3
    return np.concatenate([value[third:2 * third], value[:third], value[2 * third:]], axis=0)


def mindface_param_map(backbone):
    """``{facekit name: (mindface name or None, transform or None)}`` for every parameter of ``backbone``.

    ``None`` as the mindface name marks a facekit parameter mindface lacks (the ViT mask token).
    """
    fam = _family(backbone)
    names = [n for n, _ in backbone.parameters_and_names()]
    out = {}
    if fam == 'iresnet':
        return {n: (n, None) for n in names}
    if fam == 'mobilefacenet':
        blocks = _mobilefacenet_map(backbone)
        fixed = {'linear.weight': 'features.layers.2.weight'}
        for n in names:
            if n in fixed:
                out[n] = (fixed[n], None)
            elif n.startswith('features.'):
                out[n] = ('features.layers.3.' + n[len('features.'):], None)
            else:
                prefix, index, leaf = n.rsplit('.', 2)
                if prefix not in blocks:
                    raise MindfaceImportError(f'facekit MobileFaceNet parameter {n} has no mindface counterpart')
                out[n] = (f'{blocks[prefix]}.{index}.{leaf}', None)
        return out
    block = re.compile(r'^blocks\.(\d+)\.(norm1|attn|norm2|mlp)\.(.+)$')
    where = {'norm1': 'layer1.0.cell.0', 'attn': 'layer1.0.cell.1', 'norm2': 'layer2.0.cell.0',
             'mlp': 'layer2.0.cell.1'}
    for n in names:
        m = block.match(n)
        if m:
            i, part, rest = m.groups()
            out[n] = (f'blocks.{i}.{where[part]}.{rest}', _swap_qk if rest.startswith('qkv.') else None)
        elif n.startswith('patch_embed.'):
            out[n] = ('patch_embed.proj.' + n[len('patch_embed.'):], None)
        elif n == 'mask_token':
            out[n] = (None, None)
        else:
            out[n] = (n, None)        # pos_embed, norm.*, feature.*
    return out


# ----------------------------------------------------------------------------- architecture checks

def _architecture_mismatches(backbone, fam):
    """Human-readable differences between ``backbone``'s settings and mindface's fixed ones."""
    from mindspore import nn
    problems = []
    for name, cell in backbone.cells_and_names():
        if isinstance(cell, nn.LayerNorm):
            want = 1e-7
            if not np.isclose(cell.epsilon, want, rtol=1e-3, atol=0):
                problems.append(f'LayerNorm {name} epsilon {cell.epsilon:g}, mindface {want:g} '
                                f'(build the ViT with layer_norm_eps=1e-7)')
                break
        elif isinstance(cell, (nn.BatchNorm1d, nn.BatchNorm2d)):
            want = 2e-5 if fam == 'vit' else 1e-5
            eps = float(getattr(cell, 'eps', want))
            if not np.isclose(eps, want, rtol=1e-3, atol=0):
                problems.append(f'BatchNorm {name} eps {eps:g}, mindface {want:g}')
    if fam == 'vit':
        heads = {blk.attn.num_heads for blk in backbone.blocks}
        if heads != {8}:
            problems.append(f'ViT attention heads {sorted(heads)}, mindface 8')
        if backbone.blocks[0].attn.qkv.bias is None:
            problems.append('ViT qkv projection without bias, mindface has one (build with qkv_bias=True)')
    return problems


# ----------------------------------------------------------------------------- conversion

def _spellings(name, fam):
    """The names MindSpore may have written for mindface parameter ``name``.

    MobileFaceNet keeps its blocks in an ``nn.CellList`` filled by ``append``/``extend`` after it is
    attached, and MindSpore names such parameters from the list's own numbering: saved bare or
    through train.py's ``auto_prefix=False`` wrappers, ``layers.0.<rest>`` is written ``0.<rest>`` and
    ``layers.<i>.<rest>`` (i >= 1) ``0.layers.<i>.<rest>``; a wrapper that prefixes (``_backbone.``)
    renames them to the attribute path. Both spellings are accepted.
    """
    out = [name]
    m = re.match(r'^layers\.(\d+)\.(.+)$', name) if fam == 'mobilefacenet' else None
    if m:
        out.append(f'0.{m.group(2)}' if m.group(1) == '0' else f'0.{name}')
    return out


def _find_prefix(ckpt_names, wanted, fam):
    """(prefix, {canonical mindface name: name in the file}) under which every name in ``wanted`` exists."""
    anchor = min((w for w in wanted if len(_spellings(w, fam)) == 1), key=len)
    found = {}
    for n in ckpt_names:
        if n == anchor or n.endswith('.' + anchor):
            prefix = n[:len(n) - len(anchor)]
            resolved = {}
            for w in wanted:
                hit = next((prefix + s for s in _spellings(w, fam) if prefix + s in ckpt_names), None)
                if hit is None:
                    break
                resolved[w] = hit
            else:
                found[prefix] = resolved
    if len(found) > 1:
        raise MindfaceImportError(f'the backbone appears under several prefixes {sorted(found)}: ambiguous checkpoint')
    return next(iter(found.items())) if found else (None, None)


def _describe_checkpoint(names):
    if any('patch_embed.proj.' in n for n in names):
        depth = len({m.group(1) for n in names for m in [re.search(r'blocks\.(\d+)\.layer1', n)] if m})
        return f'a mindface ViT with {depth} blocks'
    if any('conv_sep.layers.' in n for n in names):
        return 'a mindface MobileFaceNet'
    if any(re.search(r'(^|\.)layer4\.\d+\.bn3\.', n) for n in names):
        depth = len({m.group(1) for n in names for m in [re.search(r'(?:^|\.)layer3\.(\d+)\.bn1\.gamma$', n)] if m})
        return f'a mindface IResNet with {depth} blocks in stage 3'
    return 'no mindface backbone layout this importer knows'


def convert_mindface_to_backbone(path, backbone):
    """Convert a mindface ``.ckpt`` for the facekit ``backbone`` (an IResNet, MobileFaceNet or ViT cell).

    Returns:
        (params, info): ``params`` maps every ``backbone`` parameter name to an ndarray of that
        parameter's shape and dtype; ``info`` is ``dict(format='mindface', checked=<sentence>,
        prefix=<backbone prefix in the file>, renamed=<n names that differ>, ignored=<n entries not
        used>)``.
    Raises:
        MindfaceImportError naming what does not fit (architecture setting, missing names, shapes).
    """
    from ..utils.checkpoint import load_checkpoint
    fam = _family(backbone)
    problems = _architecture_mismatches(backbone, fam)
    if problems:
        raise MindfaceImportError(f'{path}: {type(backbone).__name__} differs from mindface\'s {fam}: '
                                  + '; '.join(problems))
    ckpt = load_checkpoint(path)
    names = set(ckpt)
    mapping = mindface_param_map(backbone)
    wanted = sorted({mf for mf, _ in mapping.values() if mf is not None})
    prefix, resolved = _find_prefix(names, wanted, fam)
    if prefix is None:
        best = max(('', *{n[:n.index(w)] for w in wanted[:1] for n in names if n.endswith(w)}),
                   key=lambda p: sum(p + w in names for w in wanted))
        missing = [w for w in wanted if best + w not in names]
        raise MindfaceImportError(
            f'{path} holds {_describe_checkpoint(names)}, not the layout of this {type(backbone).__name__} '
            f'({len(wanted)} parameters): {len(missing)} missing'
            + (f" under prefix '{best}'" if best else '') + ', e.g. ' + ', '.join(missing[:6]))
    params, mismatched, renamed = {}, [], 0
    shapes = {n: (tuple(p.shape), p.dtype) for n, p in backbone.parameters_and_names()}
    for fk_name, (mf_name, transform) in mapping.items():
        shape, dtype = shapes[fk_name]
        if mf_name is None:
            params[fk_name] = np.zeros(shape, np.float32)
            continue
        value = ckpt[resolved[mf_name]].asnumpy()
        if transform is not None:
            value = transform(value)
        if tuple(value.shape) != shape:
            mismatched.append(f'{resolved[mf_name]} {tuple(value.shape)} -> {fk_name} {shape}')
            continue
        params[fk_name] = value.astype(np.float32)
        renamed += mf_name != fk_name
    if mismatched:
        raise MindfaceImportError(f'{path}: shapes do not fit {type(backbone).__name__} '
                                  f'({len(mismatched)}): ' + '; '.join(mismatched[:8]))
    used = set(resolved.values())
    ignored = sorted(names - used)
    absent = [n for n, (mf, _) in mapping.items() if mf is None]
    checked = (f'names and shapes of all {len(wanted)} backbone entries matched mindface\'s {fam} layout'
               f" (prefix '{prefix}'){', qkv rows reordered k,q,v -> q,k,v' if fam == 'vit' else ''}; "
               f'BatchNorm/LayerNorm epsilons{" and ViT qkv bias, 8 heads" if fam == "vit" else ""} checked; '
               f'{len(ignored)} entries ignored (optimizer state, head, counters)'
               + (f'; {", ".join(absent)} not in mindface, set to zeros (training-only)' if absent else '')
               + '; no forward pass through mindface itself was run')
    return params, dict(format='mindface', checked=checked, prefix=prefix, renamed=renamed, ignored=len(ignored),
                        ignored_names=ignored)
