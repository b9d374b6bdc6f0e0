"""The dataset contract: docs/customize.md's dataset runs as written; BaseFaceDataset; the layering rule."""
import ast
import os
import os.path as osp
import re
import sys

import numpy as np
import pytest

from doc_examples import customize_blocks
from facekit.config import Config, import_custom_modules
from facekit.datasets import BaseFaceDataset, as_face_dataset, build_dataloader, make_verification_bin
from facekit.datasets.builder import DEFAULT_TRAIN_PIPELINE

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _grey_value(label):
    # GreyFaces: identity c is the flat level 51 * c; by hand (51c/255 - 0.5)/0.5 = 0.4c - 1
    return 0.4 * label - 1.0


@pytest.fixture(scope='module')
def doc_dataset_cfg(tmp_path_factory):
    """The doc's plugin module and config written to files, loaded through Config as a user would."""
    module, config, _ = customize_blocks('A dataset')
    tmp = tmp_path_factory.mktemp('doc_dataset')
    (tmp / 'my_plugins').mkdir()
    (tmp / 'my_plugins' / '__init__.py').write_text('')
    (tmp / 'my_plugins' / 'grey_faces.py').write_text(module)
    (tmp / 'configs').mkdir()
    # the doc's config lives in configs/; point its relative base at the repository's configs
    cfg_text = config.replace("'./arcface/", repr(osp.join(ROOT, 'configs', 'arcface', ''))[:-1])
    (tmp / 'configs' / 'my_grey_faces.py').write_text(cfg_text)
    sys.path.insert(0, str(tmp))
    saved = {k: v for k, v in sys.modules.items() if k == 'my_plugins' or k.startswith('my_plugins.')}
    for k in saved:
        del sys.modules[k]
    try:
        cfg = Config.fromfile(str(tmp / 'configs' / 'my_grey_faces.py'), import_custom=False)
        import_custom_modules(cfg.custom_imports)
        yield cfg
    finally:
        sys.path.remove(str(tmp))
        for k in [k for k in sys.modules if k == 'my_plugins' or k.startswith('my_plugins.')]:
            del sys.modules[k]
        sys.modules.update(saved)


@pytest.mark.parametrize('native', [True, False])
def test_doc_dataset_runs_through_the_loader(doc_dataset_cfg, native):
    loader_cfg = doc_dataset_cfg.train_dataloader.to_dict()
    assert loader_cfg['dataset']['type'] == 'GreyFaces' and 'pipeline' not in loader_cfg['dataset']
    assert doc_dataset_cfg.model.head.num_classes == 5
    loader = build_dataloader(dict(loader_cfg, native_transforms=native, num_workers=1))
    assert type(loader.dataset.dataset).__name__ == 'GreyFaces'        # built without pipeline=
    assert len(loader) == 5                                             # 40 samples, batch 8
    labels = []
    for img, label in loader:
        assert img.shape == (8, 3, 112, 112) and img.dtype == np.float32 and label.dtype == np.int32
        assert img.min() >= -1.0 and img.max() <= 1.0
        for b in range(8):   # flat images: flipping changes nothing, every pixel is the hand value
            np.testing.assert_allclose(img[b], _grey_value(int(label[b])), atol=1e-6)
        labels.extend(label.tolist())
    assert sorted(labels) == sorted(list(range(5)) * 8)                 # one whole epoch, each sample once


def test_minimal_dataset_gets_the_configured_pipeline_not_a_kwarg(doc_dataset_cfg):
    loader_cfg = doc_dataset_cfg.train_dataloader.to_dict()
    loader_cfg['dataset']['pipeline'] = [dict(type='Normalize', mean=0.0, std=1.0), dict(type='ToCHW')]
    img, label = next(iter(build_dataloader(dict(loader_cfg, native_transforms=False))))
    np.testing.assert_allclose(img[0, 0, 0, 0], 51 * int(label[0]) / 255, atol=1e-6)  # x/255, no shift


class _BadMinimal:
    num_classes = 1

    def __len__(self):
        return 1

    def __getitem__(self, i):
        return np.zeros((3, 4, 4), np.float32), 0   # already CHW float: not the documented raw image


def test_adapter_rejects_a_non_raw_image_by_name():
    ds = as_face_dataset(_BadMinimal(), DEFAULT_TRAIN_PIPELINE)
    with pytest.raises(TypeError, match=r'_BadMinimal\[0\].*\(H, W, 3\) uint8'):
        ds[0]
    with pytest.raises(TypeError, match=r"lacks \['num_classes'\]"):
        as_face_dataset([(np.zeros((2, 2, 3), np.uint8), 0)])


def _doc_base_class():
    namespace = {}
    exec(compile(customize_blocks('A dataset')[2], 'docs/customize.md', 'exec'), namespace)
    return namespace['GreyFacesByLabel']


@pytest.fixture(scope='module')
def grey_by_label():
    return _doc_base_class()


def test_base_subclass_with_only_the_four_members(grey_by_label):
    ds = grey_by_label(num_classes=3, images_per_class=2, image_size=4,
                       pipeline=[dict(type='Normalize'), dict(type='ToCHW')])
    assert isinstance(ds, BaseFaceDataset) and len(ds) == 6
    img, label = ds[-1]                                     # sample 5: label 2, level 102
    assert label == 2 and img.shape == (3, 4, 4) and img.dtype == np.float32
    np.testing.assert_allclose(img, -0.2, atol=1e-6)        # (102/255 - 0.5)/0.5
    assert ds.get_image(5)[0, 0].tolist() == [102, 102, 102]  # raw, before the pipeline
    assert {c: ix.tolist() for c, ix in ds.indices_by_class().items()} == {0: [0, 1], 1: [2, 3], 2: [4, 5]}
    assert ds.build_native(shuffle=True, seed=0, rank=0, world_size=1, num_workers=1) is None
    with pytest.raises(IndexError, match=r'GreyFacesByLabel index 6 out of range \[0, 6\)'):
        ds[6]
    # raw pixels for verification pairs come from get_image even though the pipeline outputs CHW float
    images, issame = make_verification_bin(ds, 4, seed=0, img_format='.png')
    assert len(images) == 8 and issame.tolist().count(True) == 2


def test_base_subclass_through_the_loader(grey_by_label):
    loader = build_dataloader(dict(batch_size=3, shuffle=False, native_transforms=False,
                                   dataset=dict(type='GreyFacesByLabel', num_classes=2, images_per_class=3)))
    img, label = next(iter(loader))                         # default pipeline set by the loader
    assert img.shape == (3, 3, 112, 112) and label.tolist() == [0, 0, 0]
    np.testing.assert_allclose(img, -1.0)


def _imported_modules(path):
    """Absolute names of the modules ``path`` (a facekit/datasets file) imports."""
    tree = ast.parse(open(path, encoding='utf-8').read(), path)
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ''
            else:   # relative to facekit.datasets (level 1) or facekit (level 2) ...
                base = '.'.join(['facekit', 'datasets'][:3 - node.level] + ([node.module] if node.module else []))
            names.append(base)
            names.extend(f'{base}.{a.name}' for a in node.names)
    return names


def test_datasets_never_import_evaluation():
    folder = osp.join(ROOT, 'facekit', 'datasets')
    files = [osp.join(folder, f) for f in sorted(os.listdir(folder)) if f.endswith('.py')]
    assert len(files) >= 10
    bad = {osp.basename(p): [n for n in _imported_modules(p) if n.startswith(('facekit.evaluation', 'facekit.engine',
                                                                               'facekit.apis'))]
           for p in files}
    assert {k: v for k, v in bad.items() if v} == {}
