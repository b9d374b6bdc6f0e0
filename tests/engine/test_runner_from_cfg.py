"""The library owns a run: ``Runner.from_cfg`` on a shipped config trains from plain Python (no tool),
any evaluator kind reports at the end of training, and ``runner.test()`` evaluates the saved weights."""
import json
import os.path as osp

import cv2
import numpy as np
import pytest

import facekit  # noqa: F401
from facekit.config import Config
from facekit.datasets import SyntheticIdentities
from facekit.engine import ConfigCheckError, Runner
from facekit.utils import dist as dist_state

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = osp.join(ROOT, 'configs', 'arcface', 'vit_synthetic_cpu.py')
REDUCED = {'train_cfg.max_epochs': 1, 'train_cfg.max_iters': 6, 'train_dataloader.batch_size': 16,
           'train_dataloader.dataset.num_classes': 12, 'train_dataloader.dataset.images_per_class': 8,
           'model.head.num_classes': 12, 'val_evaluators.0.num_pairs': 40,
           'val_evaluators.0.dataset.num_classes': 8, 'val_evaluators.0.dataset.images_per_class': 4,
           'runtime.log_interval': 3}


def _pair_list(folder):
    """12 aligned faces of 4 held-out identities as PNG files and a pair list over them (6 same, 12 different)."""
    ds = SyntheticIdentities(num_classes=4, images_per_class=3, seed=3, identity_offset=2_000_000)
    for i in range(len(ds)):
        cv2.imwrite(str(folder / f'{i}.png'), cv2.cvtColor(ds.get_image(i), cv2.COLOR_RGB2BGR))
    lines = []
    for c in range(4):
        lines += [f'{3 * c}.png {3 * c + 1}.png 1', f'{3 * c + 1}.png {3 * c + 2}.png 1']
        lines += [f'{3 * c}.png {3 * ((c + k) % 4) + k - 1}.png 0' for k in (1, 2, 3)]
    (folder / 'pairs.txt').write_text('\n'.join(lines) + '\n')
    return str(folder / 'pairs.txt')


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('from_cfg')
    (tmp / 'faces').mkdir()
    pairs = _pair_list(tmp / 'faces')
    cfg = Config.fromfile(DEMO)
    cfg.merge_from_dict(REDUCED)
    tar = dict(type='TarFarEvaluator', name='pairs_tar', pair_list=pairs, image_root=str(tmp / 'faces'),
               fars=(0.1, 0.5), batch_size=8)
    cfg.merge_from_dict({'val_evaluators': cfg.to_dict()['val_evaluators'] + [tar], 'work_dir': str(tmp / 'work')})
    runner = Runner.from_cfg(cfg)
    assert runner.model is None            # nothing is built before train()
    runner.train()
    runner.close()
    return runner, cfg, tmp


def test_from_cfg_trains_a_shipped_config_from_python(trained):
    runner, _, tmp = trained
    assert runner.iter == 6 and len(runner.history) == 6
    assert all(np.isfinite(loss) for _, _, loss in runner.history)
    assert open(tmp / 'work' / 'last_checkpoint').read() == 'epoch_1.ckpt'   # 12 x 8 images / batch 16 = one epoch of 6
    assert osp.isfile(tmp / 'work' / 'vit_synthetic_cpu.py')        # the merged config is dumped


def test_every_evaluator_kind_reports_at_the_end_of_training(trained):
    runner, _, tmp = trained
    log = open(tmp / 'work' / 'train.log').read()
    assert 'verification (10-fold) after 6 iterations' in log and '| pairs_tar |' in log
    assert 'held-out verification vs the raw-pixel floor' in log
    res = json.loads(open(tmp / 'work' / 'eval_results.json').read())
    tar = res['pairs_tar']
    assert set(tar) >= {'tar@far=1e-01', 'tar@far=5e-01', 'auc', 'eer'} and tar['num_genuine'] == 8
    assert tar['num_impostors'] == 12 and 0.0 <= tar['tar@far=5e-01'] <= 1.0
    ver = res['synthetic_heldout']
    assert ver['num_pairs'] == 40 and 0.0 <= ver['raw_pixel_floor'] <= 1.0
    line = [json.loads(ln) for ln in open(tmp / 'work' / 'metrics.jsonl')][-1]
    assert line['iter'] == 6 and line['pairs_tar']['tar@far=5e-01'] == tar['tar@far=5e-01']


def test_test_reproduces_the_final_evaluation_from_the_checkpoint(trained):
    runner, cfg, tmp = trained
    cfg.merge_from_dict({'load_from': str(tmp / 'work' / 'epoch_1.ckpt'),
                         'test_cfg': {'out': str(tmp / 'test.json')}})
    results = Runner.from_cfg(cfg).test()
    final = json.loads(open(tmp / 'work' / 'eval_results.json').read())
    # the final evaluation used the final weights; the checkpoint holds the same weights
    assert results['synthetic_heldout']['accuracy'] == pytest.approx(final['synthetic_heldout']['accuracy'], abs=1e-9)
    assert results['pairs_tar']['auc'] == pytest.approx(final['pairs_tar']['auc'], abs=1e-9)
    saved = json.loads(open(tmp / 'test.json').read())
    assert saved['checkpoint'].endswith('epoch_1.ckpt') and set(saved['results']) == {'synthetic_heldout', 'pairs_tar'}


def test_work_dir_defaults_to_the_config_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = Runner.from_cfg(Config.fromfile(DEMO))
    assert runner.work_dir == osp.join(str(tmp_path), 'work_dirs', 'vit_synthetic_cpu')
    assert dist_state.get_world_size() == 1 and runner.rank == 0
    runner.close()


@pytest.mark.parametrize('options, message', [
    ({'optimizer.type': 'SDG'}, "'SDG' is not registered"),
    ({'train_dataloader.batch_size': 0}, 'train_dataloader.batch_size must be a positive int'),
    ({'runtime.mode': 'eager'}, "runtime.mode must be 'graph' or 'pynative'"),
    ({'resume': '/no/such.ckpt'}, 'resume checkpoint not found: /no/such.ckpt'),
])
def test_from_cfg_refuses_bad_configs_before_building(tmp_path, options, message):
    cfg = Config.fromfile(DEMO)
    cfg.merge_from_dict(dict(options, work_dir=str(tmp_path / 'w')))
    with pytest.raises(ConfigCheckError, match=message):
        Runner.from_cfg(cfg)
    assert not osp.exists(tmp_path / 'w')
