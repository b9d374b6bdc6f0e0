"""Build an inference backbone from a config and a checkpoint.

Inference needs only the backbone: the classification head of a training checkpoint can be
hundreds of MB (85,742 x 512 for MS1MV2) and is never built here.
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


def load_backbone_weights(backbone, checkpoint):
    """Load a checkpoint's backbone parameters into ``backbone``.

    Every backbone parameter must be present with the right shape (``CheckpointMismatchError``
    otherwise). A FaceRecognizer checkpoint's ``head.*`` entries and stored scalars (epoch, ...)
    are ignored, but a ``backbone.*`` entry the backbone lacks is an error (an r100 checkpoint
    must not load into an r50 silently); in a bare-backbone checkpoint, names the backbone
    lacks give a warning.

    Args:
        backbone: the ``nn.Cell`` to fill.
        checkpoint: path to a ``.ckpt`` file, or a dict name -> Parameter already loaded.
    Returns:
        the prefix that was stripped (``'backbone.'`` or ``''``).
    """
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
                      f"ignored: {', '.join(unexpected[:10])}", stacklevel=2)
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
        checkpoint: ``.ckpt`` path (FaceRecognizer or bare backbone), or None for random weights
            (warned: such embeddings mean nothing).
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
        load_backbone_weights(backbone, checkpoint)
    backbone.set_train(False)
    return backbone
