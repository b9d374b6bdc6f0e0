import argparse
import json
import os
import sys
import textwrap

import pytest

from facekit.config import (Config, ConfigError, add_cfg_options_argument, parse_cfg_options,
                            parse_value)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_three_level_base_chain_with_delete(tmp_path):
    write(tmp_path, '_base_/models/r50.py', """
        model = dict(backbone=dict(type='iresnet50', embedding_size=512, dropout=0.0),
                     head=dict(type='PartialFCHead', num_classes=10, sample_rate=1.0))
        """)
    write(tmp_path, '_base_/runtime.py', """
        runtime = dict(seed=1, log_interval=50)
        """)
    write(tmp_path, 'mid.py', """
        _base_ = ['_base_/models/r50.py', '_base_/runtime.py']
        model = dict(head=dict(num_classes=10572))
        lst = [1, 2, 3]
        """)
    top = write(tmp_path, 'top.py', """
        _base_ = './mid.py'
        model = dict(backbone=dict(_delete_=True, type='vit_t'), head=dict(sample_rate=0.3))
        lst = [9]
        runtime = dict(log_interval=10)
        """)
    cfg = Config.fromfile(top)
    assert cfg.model.backbone == {'type': 'vit_t'}  # replaced, not merged
    assert cfg.model.head == {'type': 'PartialFCHead', 'num_classes': 10572, 'sample_rate': 0.3}
    assert cfg.lst == [9]  # lists replace
    assert cfg.runtime == {'seed': 1, 'log_interval': 10}
    assert cfg['model']['head']['num_classes'] == 10572
    assert '_base_' not in cfg


def test_base_value_reference(tmp_path):
    write(tmp_path, 'base.py', "optimizer = dict(lr=0.1)\nnames = ['lfw', 'cfp_fp']\n")
    child = write(tmp_path, 'child.py', """
        _base_ = 'base.py'
        head_lr = {{_base_.optimizer.lr}} * 10
        first = {{ _base_.names.0 }}
        """)
    cfg = Config.fromfile(child)
    assert cfg.head_lr == pytest.approx(1.0)
    assert cfg.first == 'lfw'
    bad = write(tmp_path, 'bad.py', "_base_ = 'base.py'\nx = {{_base_.optimizer.momentum}}\n")
    with pytest.raises(ConfigError, match="no key 'momentum'"):
        Config.fromfile(bad)


def test_sibling_bases_defining_same_key_is_error(tmp_path):
    a = write(tmp_path, 'a.py', 'model = dict(x=1)\n')
    b = write(tmp_path, 'b.py', 'model = dict(y=2)\n')
    c = write(tmp_path, 'c.py', "_base_ = ['a.py', 'b.py']\n")
    with pytest.raises(ConfigError) as info:
        Config.fromfile(c)
    assert "key 'model' is defined in two base configs" in str(info.value)
    assert a in str(info.value) and b in str(info.value)


def test_base_cycle_is_reported(tmp_path):
    write(tmp_path, 'x.py', "_base_ = 'y.py'\n")
    y = write(tmp_path, 'y.py', "_base_ = 'x.py'\n")
    with pytest.raises(ConfigError, match='_base_ cycle: .*y.py -> .*x.py -> .*y.py'):
        Config.fromfile(y)


def test_missing_file_and_syntax_error_name_path_and_line(tmp_path):
    with pytest.raises(FileNotFoundError, match='config file not found: .*nope.py'):
        Config.fromfile(str(tmp_path / 'nope.py'))
    bad = write(tmp_path, 'broken.py', "a = 1\nb = dict(x=\n")
    with pytest.raises(ConfigError, match=r'syntax error in config .*broken.py, line \d'):
        Config.fromfile(bad)
    missing_base = write(tmp_path, 'mb.py', "_base_ = 'gone.py'\n")
    with pytest.raises(FileNotFoundError, match='gone.py'):
        Config.fromfile(missing_base)


def test_yaml_and_json_configs_with_base(tmp_path):
    write(tmp_path, 'base.json', json.dumps({'model': {'a': 1, 'b': 2}}))
    y = write(tmp_path, 'exp.yaml', "_base_: base.json\nmodel:\n  b: 3\n")
    cfg = Config.fromfile(y)
    assert cfg.model == {'a': 1, 'b': 3}


def test_merge_from_dict_dotted_and_list_index(tmp_path):
    cfg = Config(dict(model=dict(head=dict(num_classes=10)),
                      pipeline=[dict(type='Decode'), dict(type='Flip', prob=0.5)]))
    cfg.merge_from_dict({'model.head.num_classes': 7, 'pipeline.1.prob': 0.0, 'model.neck.x': 1,
                         'model.head': dict(sample_rate=0.2)})
    assert cfg.model.head == {'num_classes': 7, 'sample_rate': 0.2}
    assert cfg.pipeline[1] == {'type': 'Flip', 'prob': 0.0}
    assert cfg.model.neck.x == 1
    cfg.merge_from_dict({'model.head': dict(_delete_=True, type='NormFCHead')})
    assert cfg.model.head == {'type': 'NormFCHead'}  # replaced, and the marker is not left behind
    with pytest.raises(ConfigError, match="index 5 is out of range for a list of 2"):
        cfg.merge_from_dict({'pipeline.5.prob': 1})
    with pytest.raises(ConfigError, match="'prob' indexes a list"):
        cfg.merge_from_dict({'pipeline.prob': 1})


def test_parse_value_types():
    assert parse_value('1') == 1 and isinstance(parse_value('1'), int)
    assert parse_value('1e-3') == 0.001 and parse_value('-0.5') == -0.5
    assert parse_value('True') is True and parse_value('false') is False
    assert parse_value('None') is None
    assert parse_value('[1,2]') == [1, 2]
    assert parse_value('(1, 2.5)') == (1, 2.5)
    assert parse_value('[a,[b,3],(c,)]') == ['a', ['b', 3], ('c',)]
    assert parse_value('[]') == []
    assert parse_value("'01'") == '01' and parse_value('lfw') == 'lfw'
    with pytest.raises(ConfigError, match='unbalanced'):
        parse_value('[1,(2]')


def test_cfg_options_cli():
    parser = add_cfg_options_argument(argparse.ArgumentParser())
    args = parser.parse_args(['--cfg-options', 'a.b=1', 'c=[1,2]', 'd=True', 'e=lfw,cfp_fp'])
    assert args.cfg_options == {'a.b': 1, 'c': [1, 2], 'd': True, 'e': 'lfw,cfp_fp'}
    assert parser.parse_args([]).cfg_options == {}
    with pytest.raises(ConfigError, match="expects KEY=VALUE, got 'oops'"):
        parse_cfg_options(['oops'])


def test_dump_load_round_trip(tmp_path):
    src = write(tmp_path, 'exp.py', """
        model = dict(type='FaceRecognizer', backbone=dict(type='iresnet50', embedding_size=512),
                     head={'type': 'NormFCHead', 'class': 3})
        shape = (3, 112, 112)
        targets = ['lfw', 'cfp_fp']
        lr = 1e-3
        flag = None
        nested = [dict(a=[1, (2, 3)]), 'x']
        """)
    cfg = Config.fromfile(src)
    for name in ('dumped.py', 'dumped.json', 'dumped.yaml'):
        cfg.dump(tmp_path / name)
        again = Config.fromfile(str(tmp_path / name))
        if name.endswith('.py'):
            assert again == cfg
            assert again.shape == (3, 112, 112)
        else:  # JSON/YAML have no tuples
            assert again.model == cfg.model and again.lr == cfg.lr
    assert 'backbone=dict(' in cfg.pretty_text


def test_attribute_access_errors_and_setting():
    cfg = Config(dict(a=dict(b=1)))
    assert cfg.a.b == 1
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        cfg.missing
    with pytest.raises(KeyError):
        cfg['missing']
    cfg.new = dict(x=2)
    assert cfg.new.x == 2 and cfg.get('nothing', 5) == 5


def test_custom_imports_register_plugin(tmp_path, monkeypatch):
    pkg = tmp_path / 'plugins'
    (pkg / 'my_losses_pkg').mkdir(parents=True)
    (pkg / 'my_losses_pkg' / '__init__.py').write_text('')
    (pkg / 'my_losses_pkg' / 'focal.py').write_text(textwrap.dedent("""
        from facekit.registry import LOSSES

        @LOSSES.register_module(force=True)
        class PluginFocalLoss:
            def __init__(self, gamma=2.0):
                self.gamma = gamma
        """))
    monkeypatch.syspath_prepend(str(pkg))
    cfg_path = write(tmp_path, 'exp.py', """
        custom_imports = dict(imports=['my_losses_pkg.focal'], allow_failed_imports=False)
        loss = dict(type='PluginFocalLoss', gamma=3.0)
        """)
    cfg = Config.fromfile(cfg_path)
    from facekit.registry import LOSSES
    loss = LOSSES.build(cfg.loss)
    assert type(loss).__name__ == 'PluginFocalLoss' and loss.gamma == 3.0
    bad = write(tmp_path, 'bad.py', "custom_imports = dict(imports=['no_such_plugin_mod'])\n")
    with pytest.raises(ImportError, match="custom_imports: cannot import 'no_such_plugin_mod'"):
        Config.fromfile(bad)
    sys.modules.pop('my_losses_pkg.focal', None)
    sys.modules.pop('my_losses_pkg', None)
