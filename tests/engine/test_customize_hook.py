"""docs/customize.md's hook example runs as written: built from a config's custom_hooks, it writes the
losses and learning rates the runner actually used."""
import os.path as osp
import sys

import numpy as np
import pytest

import mindspore as ms

from doc_examples import customize_blocks
from engine_tiny import ArrayLoader, TinyRecognizer
from facekit.config import Config
from facekit.engine import Runner
from facekit.engine.lr_schedules import PolyLR
from facekit.engine.optim import SGD
from facekit.engine.runner import default_hooks
from facekit.registry import HOOKS


@pytest.fixture
def plugin_on_path(tmp_path):
    module, config = customize_blocks('A hook')
    assert module.startswith('# my_plugins/loss_csv.py') and config.startswith('# configs/my_loss_csv.py')
    pkg = tmp_path / 'plugins_root' / 'my_plugins'
    pkg.mkdir(parents=True)
    (pkg / '__init__.py').write_text('')
    (pkg / 'loss_csv.py').write_text(module)
    (tmp_path / 'configs').mkdir()
    (tmp_path / 'configs' / 'my_loss_csv.py').write_text(config.replace("_base_ = './arcface/vit_synthetic_cpu.py'\n",
                                                                        ''))
    sys.path.insert(0, str(tmp_path / 'plugins_root'))
    HOOKS.module_dict.pop('LossCSVHook', None)
    yield tmp_path
    sys.path.remove(str(tmp_path / 'plugins_root'))
    HOOKS.module_dict.pop('LossCSVHook', None)
    sys.modules.pop('my_plugins.loss_csv', None)
    sys.modules.pop('my_plugins', None)


def test_hook_example_writes_the_runs_losses(plugin_on_path):
    ms.set_context(mode=ms.GRAPH_MODE)
    cfg = Config.fromfile(str(plugin_on_path / 'configs' / 'my_loss_csv.py'))   # runs custom_imports
    hooks = default_hooks(cfg)
    assert hooks[-1] == dict(type='LossCSVHook', interval=5)
    net = TinyRecognizer()
    loader = ArrayLoader()                                    # 8 batches per epoch
    runner = Runner(net, loader, SGD(net, lr=0.2), PolyLR(0.2, 16, warmup_iters=2), 2,
                    str(plugin_on_path / 'work'), hooks=hooks)
    history = runner.train()
    runner.close()
    rows = open(osp.join(runner.work_dir, 'loss.csv')).read().splitlines()
    assert rows[0] == 'iter,lr,loss'
    got = np.array([[float(v) for v in r.split(',')] for r in rows[1:]])
    assert got[:, 0].tolist() == [5, 10, 15]                 # 16 iterations, every 5th
    by_iter = {it: (lr, loss) for it, lr, loss in history}
    for it, lr, loss in got:
        assert lr == pytest.approx(PolyLR(0.2, 16, warmup_iters=2)(int(it) - 1), rel=1e-7)
        assert loss == pytest.approx(by_iter[int(it)][1], abs=1e-6)
