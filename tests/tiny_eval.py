"""A tiny evaluation set-up shared by the tool tests: a small IResNet config, a 60-pair .bin of held-out
synthetic identities and a random-weights checkpoint. The IResNet has every layer kind of the real ones
(stem, four one-block stages, BN-Linear-BN head, PReLUs) and runs in a second."""


def tiny_config(bin_path=None, last_width=16):
    """Config text of a FaceRecognizer with a small IResNet; with ``bin_path`` an ``lfw`` evaluator on it."""
    text = f"""
model = dict(
    type='FaceRecognizer',
    backbone=dict(type='IResNet', layers=(1, 1, 1, 1), widths=(8, 8, 16, {last_width}), stem_channels=8,
                  embedding_size=16),
    head=dict(type='NormFCHead', embedding_size=16, num_classes=10),
    loss=dict(type='ArcFaceLoss'),
)
runtime = dict(device_target='CPU', mode='graph')
"""
    if bin_path is not None:
        text += f"val_evaluators = [dict(type='VerificationEvaluator', bin_path={str(bin_path)!r}, name='lfw', " \
                "batch_size=32)]\n"
    return text


def make_bin(path, num_classes=10, images_per_class=4, num_pairs=60):
    """A verification .bin of held-out synthetic identities (numbers from 5000, never trained on)."""
    from facekit.datasets import SyntheticIdentities, make_verification_bin
    ds = SyntheticIdentities(num_classes=num_classes, images_per_class=images_per_class, seed=0,
                             identity_offset=5000)
    make_verification_bin(ds, num_pairs, 0, path=str(path))
    return str(path)


def write_config_and_checkpoint(folder, name, bin_path=None, last_width=16):
    """``<folder>/<name>.py`` (tiny_config) and ``<folder>/<name>.ckpt`` (its random initial weights)."""
    import facekit  # noqa: F401
    from facekit.config import Config
    from facekit.registry import MODELS
    from facekit.utils.checkpoint import save_checkpoint
    cfg_path = folder / f'{name}.py'
    cfg_path.write_text(tiny_config(bin_path, last_width))
    model = MODELS.build(Config.fromfile(str(cfg_path)).model.to_dict())
    return str(cfg_path), save_checkpoint(model, str(folder / f'{name}.ckpt'))
