import os.path as osp

import numpy as np

from facekit.config import Config
from facekit.datasets import build_dataloader
from facekit.registry import DATASETS

BASE = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs', '_base_', 'datasets')
TARGETS = ['lfw', 'cfp_fp', 'agedb_30', 'calfw', 'cplfw']


def test_recordio_bases_point_at_their_folders():
    for name, root in (('ms1mv2', 'data/ms1mv2'), ('casia', 'data/casia_webface')):
        cfg = Config.fromfile(osp.join(BASE, name + '.py'))
        ds = cfg.train_dataloader.dataset
        assert ds.type == 'MXFaceDataset' and ds.data_root == root
        assert cfg.train_dataloader.drop_remainder is True
        assert [e['name'] for e in cfg.val_evaluators] == TARGETS
        assert [e['bin_path'] for e in cfg.val_evaluators] == [f'{root}/{t}.bin' for t in TARGETS]
        assert all(e['type'] == 'VerificationEvaluator' for e in cfg.val_evaluators)


def test_synthetic_base_builds_and_holds_out_identities():
    cfg = Config.fromfile(osp.join(BASE, 'synthetic.py'))
    loader_cfg = cfg.to_dict()['train_dataloader']
    loader_cfg['dataset'] = dict(loader_cfg['dataset'], num_classes=4, images_per_class=2)
    loader_cfg['batch_size'] = 4
    img, label = next(iter(build_dataloader(loader_cfg)))
    assert img.shape == (4, 3, 112, 112) and img.dtype == np.float32 and label.max() < 4
    held_cfg = dict(cfg.val_evaluators[0]['dataset'])
    held = DATASETS.build(held_cfg)
    train = DATASETS.build(dict(loader_cfg['dataset'], pipeline=None))
    assert held.identity_offset >= train.identity_offset + cfg.train_dataloader.dataset.num_classes
    # the held-out pairs must pose the same task as training: identical generator knobs
    assert held.knobs == train.knobs and held.knobs['rotation'] == 30
