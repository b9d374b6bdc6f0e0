"""docs/inference.md runs as written: its python and bash blocks execute in order."""
import importlib.util
import os
import os.path as osp
import re

import cv2
import numpy as np
import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DOC = osp.join(ROOT, 'docs', 'inference.md')


def doc_blocks(path):
    """(language, code) for each fenced python/bash block, minus those after '<!-- skip-test -->'."""
    text = open(path, encoding='utf-8').read()
    blocks = []
    for m in re.finditer(r'(<!-- skip-test -->\s*)?```(python|bash)\n(.*?)```', text, re.S):
        if not m.group(1):
            blocks.append((m.group(2), m.group(3)))
    return blocks


def _prepare(folder):
    import facekit.models  # noqa: F401
    from facekit.registry import BACKBONES
    from facekit.utils.checkpoint import save_checkpoint
    from .calibration import calibrate_bn
    rng = np.random.default_rng(0)
    net = BACKBONES.build(dict(type='mobilefacenet'))
    calibrate_bn(net, rng.uniform(-1, 1, (8, 3, 112, 112)).astype(np.float32))
    save_checkpoint({f'backbone.{n}': p for n, p in net.parameters_and_names()}, osp.join(folder, 'mbf_casia.ckpt'))
    for name in ('face1.jpg', 'face2.jpg'):
        cv2.imwrite(osp.join(folder, name), rng.integers(0, 256, (112, 112, 3), dtype=np.uint8))
    os.makedirs(osp.join(folder, 'faces'))
    for k in range(3):
        cv2.imwrite(osp.join(folder, 'faces', f'{k}.png'), rng.integers(0, 256, (112, 112, 3), dtype=np.uint8))
    cv2.imwrite(osp.join(folder, 'photo.jpg'), rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
    for name in ('configs', 'tools'):
        os.symlink(osp.join(ROOT, name), osp.join(folder, name))


def _tool(relpath):
    spec = importlib.util.spec_from_file_location('doc_' + osp.basename(relpath)[:-3], osp.join(ROOT, relpath))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_doc_has_the_promised_blocks():
    langs = [lang for lang, _ in doc_blocks(DOC)]
    assert langs.count('python') >= 5 and langs.count('bash') >= 3


@pytest.mark.slow
def test_inference_doc_runs(tmp_path, monkeypatch):
    _prepare(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('FACEKIT_CACHE', str(tmp_path / 'cache'))   # onnxruntime exports stay in tmp_path
    namespace = {}
    for lang, code in doc_blocks(DOC):
        if lang == 'python':
            exec(compile(code, DOC, 'exec'), namespace)
            continue
        for line in code.splitlines():
            line = line.strip()
            if not line or line.startswith('#'):
                continue
            words = line.split()
            assert words[0] == 'python' and words[1].startswith('tools/'), line
            # In-process (same as `python tools/X.py ...`, without re-importing MindSpore each time).
            assert _tool(words[1]).main(words[2:]) == 0, line
    # What the blocks produced, checked independently of the blocks' own prints.
    assert namespace['feats'].shape == (3, 512)
    assert np.load(tmp_path / 'feats.npy').shape == (3, 512)
    assert namespace['out'].shape == (8, 512)
    assert np.abs(namespace['emb'] - namespace['embedder'].embed(['face1.jpg', 'face2.jpg'])).max() < 1e-4
    # The round trip export -> convert_weights gives back the same model.
    from facekit.apis import FaceEmbedder
    back = FaceEmbedder('configs/arcface/mbf_casia.py', 'mbf_from_onnx.ckpt')
    faces = ['face1.jpg', 'face2.jpg', 'faces/']
    assert np.abs(back.embed(faces) - namespace['embedder'].embed(faces)).max() < 1e-4
