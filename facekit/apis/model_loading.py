"""Build an inference backbone from a config and a weights file of any format facekit knows.

Inference needs only the backbone: the classification head of a training checkpoint can be
hundreds of MB (85,742 x 512 for MS1MV2) and is never built here.

A facekit ``.ckpt`` loads by name under the strict rules of ``load_backbone_weights``; the other
formats (an arcface_torch ``backbone.pth``, a mindface ``.ckpt``, an ONNX model) are converted in
memory by ``facekit.apis.weight_import.import_weights``, so no file is written.
"""
import os
import os.path as osp
import warnings

from ..config import Config
from ..registry import BACKBONES

BACKBONE_PREFIX = 'backbone.'


def backbone_cfg_from_config(config):
    """The backbone dict of a config.

    Args:
        config: a config file path, a ``Config``, or a dict; either a full experiment config
            (``model=dict(type='FaceRecognizer', backbone=dict(...), ...)``) or a backbone dict
            itself (``dict(type='iresnet50', embedding_size=512)``).
    Returns:
        a fresh dict with ``type`` and the backbone's keyword arguments.
    """
    source = config
    if isinstance(config, (str, os.PathLike)):
        config = Config.fromfile(os.fspath(config))
    checked = config
    if isinstance(config, Config):
        config = config.to_dict()
    if not isinstance(config, dict):
        raise TypeError(f'config must be a path, a Config or a dict, got {type(config).__name__}')
    if 'model' in config:
        from ..engine.config_check import check_keys
        check_keys(checked)   # a misspelled backbone key is named here, as in training
        model = config['model']
        if not isinstance(model, dict) or 'backbone' not in model:
            raise KeyError(f"config {source!r}: 'model' has no 'backbone' entry; expected "
                           "model=dict(type='FaceRecognizer', backbone=dict(type=...), ...)")
        return dict(model['backbone'])
    if 'type' in config:
        return dict(config)
    raise KeyError(f"config {source!r} has neither 'model.backbone' nor a backbone 'type'")


def input_size_of(backbone_cfg):
    """Input side in pixels a backbone config asks for (IResNet ``input_size``, ViT ``img_size``; default 112)."""
    return int(backbone_cfg.get('input_size', backbone_cfg.get('img_size', 112)))


def checkpoint_prefix(param_dict):
    """``'backbone.'`` for FaceRecognizer checkpoints, ``''`` for bare-backbone ones."""
    return BACKBONE_PREFIX if any(k.startswith(BACKBONE_PREFIX) for k in param_dict) else ''


def load_backbone_weights(backbone, checkpoint, input_size=112):
    """Load weights into ``backbone``: a facekit checkpoint by name, any other known format converted.

    A facekit checkpoint must hold every backbone parameter with the right shape
    (``CheckpointMismatchError`` otherwise). A FaceRecognizer checkpoint's ``head.*`` entries and
    stored scalars (epoch, ...) are ignored, but a ``backbone.*`` entry the backbone lacks is an
    error (an r100 checkpoint must not load into an r50 silently); in a bare-backbone checkpoint,
    names the backbone lacks give a warning. Other formats (see ``weight_import.detect_format``)
    are converted by their importer, which maps every backbone parameter or raises.

    Args:
        backbone: the ``nn.Cell`` to fill.
        checkpoint: path to a weights file (format detected from its content), or a dict
            name -> Parameter already loaded from a facekit checkpoint.
        input_size: the backbone's input side in pixels (an ONNX graph is traced at this size).
    Returns:
        dict: ``format`` ('facekit', 'pytorch', 'mindface', 'onnx'), ``checked`` (a sentence: what
        was verified against the source), ``prefix`` (stripped from a facekit checkpoint's names),
        plus the importer's own entries (``input_affine`` for ONNX, ...).
    """
    if isinstance(checkpoint, (str, os.PathLike)):
        from .weight_import import detect_format, import_weights
        path = os.fspath(checkpoint)
        if detect_format(path) != 'facekit':
            from ..utils.checkpoint import load_state_into
            params, info = import_weights(path, backbone, input_size=input_size)
            load_state_into(backbone, params, strict=True)
            _check_finite_backbone(backbone, path, '')
            info = dict(info)
            info.setdefault('checked', f"converted from {info['format']}: every parameter of "
                                       f'{type(backbone).__name__} mapped with its shape')
            info.setdefault('prefix', '')
            return info
    prefix = _load_facekit_checkpoint(backbone, checkpoint)
    return dict(format='facekit', prefix=prefix,
                checked=f'every parameter of {type(backbone).__name__} found by name with its shape')


def _load_facekit_checkpoint(backbone, checkpoint):
    """The strict by-name load of a facekit checkpoint (path or dict); returns the stripped prefix."""
    from ..utils.checkpoint import CheckpointMismatchError, load_checkpoint, load_state_into
    params = load_checkpoint(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else checkpoint
    prefix = checkpoint_prefix(params)
    missing, unexpected = load_state_into(backbone, params, prefix=prefix, strict=False)
    where = checkpoint if isinstance(checkpoint, (str, os.PathLike)) else 'the given parameters'
    if missing:
        raise CheckpointMismatchError(
            f'checkpoint {where} lacks {len(missing)} parameters of {type(backbone).__name__} '
            f"(prefix {prefix!r}): {', '.join(missing[:20])}; is it for another backbone?")
    if unexpected and prefix:
        raise CheckpointMismatchError(
            f'checkpoint {where} has {len(unexpected)} backbone parameters that {type(backbone).__name__} lacks '
            f"(prefix {prefix!r}): {', '.join(unexpected[:20])}; is it for another backbone?")
    if unexpected:
        warnings.warn(f'checkpoint {where}: {len(unexpected)} entries are not backbone parameters and were '
                      f"ignored: {', '.join(unexpected[:10])}", stacklevel=3)
    _check_finite_backbone(backbone, where, prefix)
    return prefix


def _check_finite_backbone(backbone, where, prefix):
    """Refuse a backbone whose loaded parameters hold NaN/inf: every embedding would be NaN."""
    from ..utils.checkpoint import NonFiniteCheckpointError, nonfinite_entries
    bad = nonfinite_entries(backbone.parameters_and_names())
    if bad:
        first = ', '.join(f'{prefix}{name} ({n_nan} NaN, {n_inf} inf)' for name, n_nan, n_inf in bad[:5])
        raise NonFiniteCheckpointError(
            f"checkpoint {where} holds non-finite values in {len(bad)} backbone parameter"
            f"{'s' if len(bad) > 1 else ''}: {first}{' ...' if len(bad) > 5 else ''}; a diverged run "
            '(overflowing loss, BatchNorm statistics updated on skipped steps) writes such checkpoints: '
            'use an earlier one')


def build_backbone(config, checkpoint=None):
    """Build the backbone of ``config`` in eval mode and load ``checkpoint`` into it.

    Args:
        config: see ``backbone_cfg_from_config``.
        checkpoint: a weights file of any format ``load_backbone_weights`` takes (facekit
            ``.ckpt``, arcface_torch ``.pth``, mindface ``.ckpt``, ONNX), or None for random
            weights (warned: such embeddings mean nothing).
    Returns:
        the backbone ``nn.Cell``: (B, 3, 112, 112) float32 -> (B, E) float32 raw embeddings.
    """
    import facekit.models  # noqa: F401  (fill BACKBONES)
    cfg = backbone_cfg_from_config(config)
    if checkpoint is not None and not osp.isfile(os.fspath(checkpoint)):
        raise FileNotFoundError(f'checkpoint not found: {checkpoint}')
    backbone = BACKBONES.build(cfg)
    if checkpoint is None:
        warnings.warn(f"no checkpoint given: {cfg['type']} keeps its random initial weights", stacklevel=2)
    else:
        load_backbone_weights(backbone, checkpoint, input_size=input_size_of(cfg))
    backbone.set_train(False)
    return backbone
