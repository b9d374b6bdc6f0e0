"""Config mistakes are named before anything is built: unknown keys at every level with the closest
valid name, simple values of the wrong type, malformed --cfg-options; plugin keys pass through
``allow_unknown_keys``; every shipped config passes."""
import glob
import os.path as osp

import pytest

import facekit  # noqa: F401  (every registry filled)
from facekit.config import Config, ConfigError, parse_cfg_options, parse_value
from facekit.engine.config_check import ConfigCheckError, accepted_keys, check_config, check_keys
from facekit.registry import BACKBONES

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = osp.join(ROOT, 'configs', 'arcface', 'vit_synthetic_cpu.py')
R50 = osp.join(ROOT, 'configs', 'arcface', 'r50_casia.py')


def _check(path, options):
    cfg = Config.fromfile(path)
    cfg.merge_from_dict(options)
    check_config(cfg)


@pytest.mark.parametrize('path, options, named, suggested', [
    (DEMO, {'optimzer': dict(lr=10.)}, "'optimzer'", "'optimizer'"),
    (DEMO, {'train_cfgg': dict(max_epochs=1)}, "'train_cfgg'", "'train_cfg'"),
    (DEMO, {'runtime.chekpoint_interval': 100}, "'runtime.chekpoint_interval'", "'checkpoint_interval'"),
    (DEMO, {'model.backbone.dept': 3}, "'model.backbone.dept'", "'depth'"),
    # iresnet50(**kwargs) forwards to IResNet: its keywords are the valid ones
    (R50, {'model.backbone.embeding_size': 3}, "'model.backbone.embeding_size'", "'embedding_size'"),
    (DEMO, {'model.head.num_clases': 3}, "'model.head.num_clases'", "'num_classes'"),
    (DEMO, {'model.loss.margin': 0.3}, "'model.loss.margin'", None),
    (DEMO, {'train_dataloader.num_worker': 2}, "'train_dataloader.num_worker'", "'num_workers'"),
    # SyntheticIdentities(**knobs): its KNOBS are the valid extra names
    (DEMO, {'train_dataloader.dataset.rotatoin': 5}, "'train_dataloader.dataset.rotatoin'", "'rotation'"),
    (DEMO, {'train_dataloader.dataset.pipeline.0.probability': 0.1},
     "'train_dataloader.dataset.pipeline.0.probability'", "'prob'"),
    (DEMO, {'val_evaluators.0.num_pair': 10}, "'val_evaluators.0.num_pair'", "'num_pairs'"),
    (DEMO, {'val_evaluators.0.dataset.shfit': 3}, "'val_evaluators.0.dataset.shfit'", "'shift'"),
    (DEMO, {'lr_schedule.warmup_epoch': 1}, "'lr_schedule.warmup_epoch'", "'warmup_epochs'"),
    (DEMO, {'optimizer.weight_decy': 0.1}, "'optimizer.weight_decy'", "'weight_decay'"),
    (DEMO, {'train_cfg.max_iter': 3}, "'train_cfg.max_iter'", "'max_iters'"),
    (DEMO, {'test_cfg.nfold': 3}, "'test_cfg.nfold'", "'nfolds'"),
    (DEMO, {'custom_hooks': [dict(type='CheckpointHook', intervall=2)]}, "'custom_hooks.0.intervall'", "'interval'"),
])
def test_unknown_key_is_named_with_the_closest_valid_name(path, options, named, suggested):
    with pytest.raises(ConfigCheckError) as info:
        _check(path, options)
    msg = str(info.value)
    assert f'unknown key {named}' in msg, msg
    if suggested:
        assert f'did you mean {suggested}' in msg, msg
    assert osp.basename(path) in msg and '\n' not in msg


@pytest.mark.parametrize('options, key, value, expected', [
    ({'optimizer.lr': 'abc'}, 'optimizer.lr', "'abc'", 'int or float'),
    ({'model.backbone.depth': 'two'}, 'model.backbone.depth', "'two'", 'int'),
    ({'model.loss.s': dict(value=1)}, 'model.loss.s', "{'value': 1}", 'int or float'),
    ({'model.backbone.depth': 2.5}, 'model.backbone.depth', '2.5', 'int'),
    ({'runtime.checkpoint_interval': '5'}, 'runtime.checkpoint_interval', "'5'", 'int'),
    ({'runtime.clip_prefixes': 'backbone.'}, 'runtime.clip_prefixes', "'backbone.'", 'list or tuple'),
    ({'train_dataloader.shuffle': 'yes'}, 'train_dataloader.shuffle', "'yes'", 'bool'),
    ({'val_evaluators.0.flip': 1.5}, 'val_evaluators.0.flip', '1.5', 'bool'),
])
def test_wrong_value_type_is_named(options, key, value, expected):
    with pytest.raises(ConfigCheckError) as info:
        _check(DEMO, options)
    msg = str(info.value)
    assert f"'{key}' = {value}" in msg and f'expected {expected}' in msg, msg


def test_ints_are_accepted_for_floats_and_none_for_optional_numbers():
    _check(DEMO, {'optimizer.lr': 1, 'model.loss.s': 30, 'runtime.clip_grad_norm': None, 'runtime.seed': None})
    # scalar-or-sequence arguments keep working
    _check(DEMO, {'train_dataloader.dataset.pipeline': [dict(type='Resize', size=(112, 112)),
                                                        dict(type='Normalize', mean=[0.5, 0.5, 0.5]),
                                                        dict(type='ToCHW')]})


def test_every_problem_is_reported_in_one_message():
    with pytest.raises(ConfigCheckError) as info:
        _check(DEMO, {'optimzer': dict(lr=10.), 'runtime.chekpoint_interval': 100, 'model.backbone.depth': 'two'})
    msg = str(info.value)
    assert "'optimzer'" in msg and "'runtime.chekpoint_interval'" in msg and "'model.backbone.depth'" in msg


def test_forwarding_constructors_take_their_target_class_keywords():
    names, open_ = accepted_keys(BACKBONES.get('iresnet50'))
    assert not open_ and {'embedding_size', 'dropout', 'widths'} <= set(names)
    names, open_ = accepted_keys(BACKBONES.get('vit_t'))       # vit_t -> _vit -> VisionTransformer
    assert not open_ and 'depth' in names and names['depth'].default == 12


def test_escape_hatch_for_plugin_keys():
    options = {'my_plugin_key': 1, 'runtime.my_key': 2, 'custom_hooks': [dict(type='LoggerHook', my_arg=3)],
               '_scratch': 4, 'runtime._note': 'x'}
    with pytest.raises(ConfigCheckError):
        _check(DEMO, options)
    _check(DEMO, dict(options, allow_unknown_keys=['my_plugin_key', 'runtime.my_key', 'custom_hooks.*.my_arg']))
    with pytest.raises(ConfigCheckError, match='allow_unknown_keys must be a list'):
        _check(DEMO, {'allow_unknown_keys': 'my_plugin_key'})


def test_a_plugin_with_var_kwargs_passes_extra_keys(tmp_path):
    from facekit.registry import HOOKS
    from facekit.engine.hooks import Hook

    @HOOKS.register_module(force=True)
    class _AnyKwargsHook(Hook):
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    _check(DEMO, {'custom_hooks': [dict(type='_AnyKwargsHook', whatever=1)]})


def test_test_configs_are_checked_too(tmp_path):
    # A config without train_dataloader (tools/test.py, FaceEmbedder-style): Runner.from_cfg checks keys.
    from facekit.engine import Runner
    cfg = Config(dict(model=dict(type='FaceRecognizer', backbone=dict(type='iresnet18', dropuot=0.1),
                                 head=dict(type='NormFCHead', num_classes=2), loss=dict(type='ArcFaceLoss')),
                      work_dir=str(tmp_path)))
    with pytest.raises(ConfigCheckError, match="unknown key 'model.backbone.dropuot'.*did you mean 'dropout'"):
        Runner.from_cfg(cfg)


SHIPPED = sorted(glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True))


@pytest.mark.parametrize('path', SHIPPED, ids=lambda p: osp.relpath(p, ROOT))
def test_every_shipped_config_passes(path):
    cfg = Config.fromfile(path)
    if 'train_dataloader' in cfg and 'model' in cfg and 'optimizer' in cfg:
        check_config(cfg)
    else:  # a base file: only its keys
        check_keys(cfg)


@pytest.mark.parametrize('value', ['[backbone.,head.', 'backbone.,head.]', '(a,b', '[a,(b]', "'abc", '"abc',
                                   '[a],[b]', "[a,'b]"])
def test_malformed_cfg_option_is_an_error_naming_the_option(value):
    with pytest.raises(ConfigError) as info:
        parse_cfg_options([f'runtime.clip_prefixes={value}'])
    msg = str(info.value)
    assert msg.startswith('--cfg-options runtime.clip_prefixes:') and repr(value) in msg, msg


def test_well_formed_cfg_options_still_parse():
    assert parse_value('[backbone.,head.]') == ['backbone.', 'head.']
    assert parse_value("['a,b', c]") == ['a,b', 'c']
    assert parse_value("O'Brien") == "O'Brien" and parse_value('f(1)') == 'f(1)'
    assert parse_value('[[1,2],(3,)]') == [[1, 2], (3,)]
