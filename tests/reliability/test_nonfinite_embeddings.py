"""A checkpoint with NaN BatchNorm statistics (what a diverged run saves) is refused by name, and NaN
embeddings never become a similarity or an accuracy: tools exit non-zero and say why."""
import os
import os.path as osp
import subprocess
import sys

import cv2
import mindspore as ms
import numpy as np
import pytest

import facekit  # noqa: F401  (fill the registries)
from facekit.apis import FaceEmbedder
from facekit.evaluation import NonFiniteEmbeddingError, VerificationEvaluator, embed_images
from facekit.utils.checkpoint import NonFiniteCheckpointError, save_checkpoint
from tiny_eval import make_bin, tiny_config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    from facekit.config import Config
    from facekit.datasets import SyntheticIdentities
    from facekit.registry import MODELS
    tmp = tmp_path_factory.mktemp('nonfinite')
    bin_path = make_bin(tmp / 'lfw.bin', num_classes=6, num_pairs=20)
    ds = SyntheticIdentities(num_classes=6, images_per_class=4, seed=0, identity_offset=5000)
    cfg = tmp / 'tiny.py'
    cfg.write_text(tiny_config(bin_path))
    model = MODELS.build(Config.fromfile(str(cfg)).model.to_dict())
    good = save_checkpoint(model, str(tmp / 'good.ckpt'))
    params = {n: p.asnumpy().copy() for n, p in model.parameters_and_names()}
    bn = 'backbone.features.moving_mean'  # the last BatchNorm: a NaN there reaches every embedding
    params[bn][:] = np.nan
    bad = save_checkpoint(params, str(tmp / 'diverged.ckpt'))
    img = str(tmp / 'face.png')
    cv2.imwrite(img, ds.get_image(0)[:, :, ::-1])
    return dict(tmp=tmp, cfg=str(cfg), good=good, bad=bad, bn=bn, bin=bin_path, img=img)


def _tool(name, args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, osp.join(ROOT, 'tools', name)] + args, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_test_tool_refuses_a_checkpoint_with_nan_bn_statistics(files):
    proc = _tool('test.py', [files['cfg'], files['bad'], '--work-dir', str(files['tmp'] / 'wd')])
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert 'non-finite' in proc.stderr and files['bn'] in proc.stderr and 'diverged.ckpt' in proc.stderr
    assert 'accuracy' not in proc.stdout.lower()


def test_infer_tool_refuses_a_checkpoint_with_nan_bn_statistics(files):
    proc = _tool('infer.py', [files['cfg'], files['bad'], files['img'], files['img'], '--threshold', '0.3'])
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert 'non-finite' in proc.stderr and files['bn'] in proc.stderr
    assert 'similarity' not in proc.stdout


def test_face_embedder_refuses_the_checkpoint_naming_the_parameter(files):
    with pytest.raises(NonFiniteCheckpointError, match=r'diverged\.ckpt.*' + files['bn'].replace('.', r'\.')):
        FaceEmbedder(files['cfg'], files['bad'], device_target='CPU')


def test_face_embedder_raises_on_nan_embeddings_naming_the_file(files):
    emb = FaceEmbedder(files['cfg'], files['good'], device_target='CPU', mode='pynative')
    name = files['bn'][len('backbone.'):]
    param = dict(emb.backbone.parameters_and_names())[name]
    param.set_data(ms.Tensor(np.full(param.shape, np.nan, np.float32)))  # poisoned after loading
    with pytest.raises(NonFiniteEmbeddingError, match=r'1 of 1 embeddings are not finite.*face\.png.*checkpoint'):
        emb.embed(files['img'])
    with pytest.raises(NonFiniteEmbeddingError):
        emb.forward(emb.prepare(files['img']))


def test_embed_images_counts_non_finite_rows():
    def embed_fn(batch):
        out = np.ones((len(batch), 4), np.float32)
        out[batch[:, 0, 0, 0] > 0] = np.inf  # images whose first pixel is bright
        return out
    images = np.zeros((6, 112, 112, 3), np.uint8)
    images[[1, 4], 0, 0, 0] = 255
    with pytest.raises(NonFiniteEmbeddingError, match=r'^my_target: 2 of 6 embeddings .* rows 1, 4;'):
        embed_images(6, lambda i: images[i], embed_fn, batch_size=4, flip=False, source='my_target')
    raw, _ = embed_images(6, lambda i: np.zeros_like(images[i]), embed_fn, batch_size=4, flip=False)
    assert np.isfinite(raw).all()


def test_verification_evaluator_reports_no_accuracy_from_nan(files):
    ev = VerificationEvaluator(bin_path=files['bin'], name='lfw', batch_size=8)
    with pytest.raises(NonFiniteEmbeddingError, match=r'^lfw \(.*lfw\.bin\): 40 of 40 embeddings'):
        ev.evaluate(lambda b: np.full((len(b), 4), np.nan, np.float32))
