"""The README must run as written: its two commands exist, and its plugin example works."""
import os
import re
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def readme():
    with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
        return f.read()


def code_blocks(text):
    return re.findall(r'```(\w*)\n(.*?)```', text, flags=re.S)


def test_readme_opens_with_the_two_commands():
    lang, first = code_blocks(readme())[0]
    commands = [line.split('#')[0].strip() for line in first.strip().splitlines()]
    assert commands == ['bash tools/demo.sh', 'bash tools/run_tests.sh']
    for cmd in commands:
        assert os.path.isfile(os.path.join(ROOT, cmd.split()[1]))
    with open(os.path.join(ROOT, '.ci', 'run')) as f:
        assert 'bash tools/run_tests.sh' in f.read()  # CI runs exactly the README's test command


def _write_readme_example(tmp_path):
    files = {}
    for lang, body in code_blocks(readme()):
        first = body.splitlines()[0]
        m = re.match(r'# ((my_plugins|configs)/\S+\.py)$', first)
        if lang == 'python' and m:
            files[m.group(1)] = body
    assert set(files) == {'my_plugins/linear_cosface.py', 'configs/my_linear_cosface.py'}
    for rel, body in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    (tmp_path / 'my_plugins' / '__init__.py').write_text('')
    # the user's checkout: their config sits beside facekit's configs
    os.symlink(os.path.join(ROOT, 'configs', 'arcface'), tmp_path / 'configs' / 'arcface')
    os.symlink(os.path.join(ROOT, 'configs', '_base_'), tmp_path / 'configs' / '_base_')
    return tmp_path / 'configs' / 'my_linear_cosface.py'


def test_readme_plugin_loss_runs_as_written(tmp_path, monkeypatch):
    import mindspore as ms
    from facekit.config import Config
    from facekit.registry import LOSSES, MODELS

    cfg_path = _write_readme_example(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    LOSSES.module_dict.pop('LinearCosFaceLoss', None)
    sys.modules.pop('my_plugins.linear_cosface', None)
    sys.modules.pop('my_plugins', None)
    cfg = Config.fromfile(str(cfg_path))
    assert cfg.model.loss == {'type': 'LinearCosFaceLoss', 's': 32.0, 'm': 0.3}
    assert 'LinearCosFaceLoss' in LOSSES

    ms.set_context(mode=ms.PYNATIVE_MODE)
    model = MODELS.build(cfg.model)
    model.set_train(False)
    rng = np.random.default_rng(0)
    img = ms.Tensor(rng.standard_normal((4, 3, 112, 112)).astype(np.float32))
    label = ms.Tensor(np.array([0, 5, 7, 199], np.int32))
    loss = float(model(img, label).asnumpy())

    # reference: the formula in the plugin's docstring, written out in NumPy
    emb = model.extract(img).asnumpy().astype(np.float64)
    logits, labels = model.head(model.backbone(img), label)
    cos = logits.asnumpy().astype(np.float64)
    y = labels.asnumpy()
    s, m = 32.0, 0.3
    z = cos.copy()
    rows = np.arange(len(y))
    z[rows, y] = cos[rows, y] - m * (1 - cos[rows, y]) / 2
    z *= s
    z -= z.max(axis=1, keepdims=True)
    ref = float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[rows, y]))
    assert emb.shape == (4, cfg.model.backbone.embedding_size)
    assert loss == pytest.approx(ref, rel=1e-4, abs=1e-4)
    LOSSES.module_dict.pop('LinearCosFaceLoss', None)
