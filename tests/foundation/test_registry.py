import pytest

from facekit.registry import BACKBONES, HEADS, LOSSES, Registry, build_from_cfg


def make_registry():
    reg = Registry('loss')

    @reg.register_module()
    class ArcFace:
        def __init__(self, s=64.0, m=0.5):
            self.s, self.m = s, m

    @reg.register_module(name=['CosFace', 'cosface'])
    class CosFace:
        def __init__(self, m=0.4):
            self.m = m

    return reg, ArcFace, CosFace


def test_register_get_contains_len_repr():
    reg, ArcFace, CosFace = make_registry()
    assert reg.get('ArcFace') is ArcFace
    assert reg.get('CosFace') is CosFace and reg.get('cosface') is CosFace
    assert 'ArcFace' in reg and 'SphereFace' not in reg
    assert len(reg) == 3
    assert repr(reg) == "Registry(name='loss', items=[ArcFace, CosFace, cosface])"


def test_register_call_form_and_functions():
    reg = Registry('backbone')

    def tiny(width=8):
        return ('tiny', width)

    assert reg.register_module(module=tiny) is tiny
    assert reg.build(dict(type='tiny', width=3)) == ('tiny', 3)


def test_duplicate_registration_raises_unless_force():
    reg, ArcFace, _ = make_registry()

    class Other:
        pass

    with pytest.raises(KeyError, match="'ArcFace' is already registered in the loss registry"):
        reg.register_module(name='ArcFace', module=Other)
    reg.register_module(name='ArcFace', module=Other, force=True)
    assert reg.get('ArcFace') is Other


def test_build_passes_kwargs_and_default_args():
    reg, ArcFace, _ = make_registry()
    obj = build_from_cfg(dict(type='ArcFace', m=0.3), reg, default_args=dict(s=32.0, m=0.9))
    assert (obj.s, obj.m) == (32.0, 0.3)  # cfg wins over default_args
    cfg = dict(type='ArcFace')
    build_from_cfg(cfg, reg)
    assert cfg == dict(type='ArcFace')  # the caller's dict is not consumed


def test_build_accepts_class_and_dotted_path():
    reg, ArcFace, _ = make_registry()
    assert isinstance(build_from_cfg(dict(type=ArcFace), reg), ArcFace)
    od = build_from_cfg(dict(type='collections.OrderedDict'), reg)
    assert type(od).__name__ == 'OrderedDict'


def test_unknown_type_lists_close_names():
    reg, _, _ = make_registry()
    with pytest.raises(KeyError) as info:
        build_from_cfg(dict(type='ArcFase'), reg)
    msg = str(info.value)
    assert "'ArcFase' is not registered in the loss registry" in msg
    assert 'Closest registered names: ArcFace' in msg
    assert 'Registered: ArcFace, CosFace, cosface' in msg


def test_bad_dotted_path_names_the_module():
    reg, _, _ = make_registry()
    with pytest.raises(KeyError, match="cannot import module 'no_such_pkg_xyz'"):
        build_from_cfg(dict(type='no_such_pkg_xyz.Loss'), reg)
    with pytest.raises(KeyError, match="module 'collections' has no attribute 'NoSuch'"):
        build_from_cfg(dict(type='collections.NoSuch'), reg)


def test_constructor_failure_names_type_and_config():
    reg, _, _ = make_registry()
    with pytest.raises(TypeError) as info:
        build_from_cfg(dict(type='ArcFace', margin=0.5), reg)
    msg = str(info.value)
    assert msg.startswith('ArcFace (registry loss) failed to build from')
    assert "'margin': 0.5" in msg and 'unexpected keyword' in msg


def test_missing_type_and_non_dict_cfg():
    reg, _, _ = make_registry()
    with pytest.raises(KeyError, match="has no 'type' key"):
        build_from_cfg(dict(m=0.5), reg)
    with pytest.raises(TypeError, match='cfg must be a dict'):
        build_from_cfg(['ArcFace'], reg)


def test_root_registries_exist_with_names():
    import facekit
    names = {r.name for r in (facekit.BACKBONES, facekit.HEADS, facekit.LOSSES, facekit.MODELS,
                              facekit.DATASETS, facekit.TRANSFORMS, facekit.EVALUATORS,
                              facekit.OPTIMIZERS, facekit.LR_SCHEDULES, facekit.HOOKS)}
    assert names == {'backbone', 'head', 'loss', 'model', 'dataset', 'transform', 'evaluator',
                     'optimizer', 'lr_schedule', 'hook'}
    assert BACKBONES is facekit.BACKBONES and HEADS is facekit.HEADS and LOSSES is facekit.LOSSES
