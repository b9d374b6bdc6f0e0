"""FaceEmbedder / infer(): normalization, flip test, colour order, batching, checkpoints, caching."""

import mindspore as ms
import numpy as np
import pytest

import facekit.apis.embedder as embedder_mod
from facekit.apis import FaceEmbedder, infer
from facekit.registry import BACKBONES
from facekit.utils.checkpoint import CheckpointMismatchError, save_checkpoint

from . import tiny_backbone  # noqa: F401  (registers _apis_test_tiny)

CFG = dict(model=dict(type='FaceRecognizer', backbone=dict(type='_apis_test_tiny', embedding_size=8),
                      head=dict(type='unused', num_classes=10), loss=dict(type='unused')))


def _faces(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 112, 112, 3), dtype=np.uint8)


def _by_hand(net, faces_rgb):
    x = (faces_rgb.astype(np.float32) / 255.0 - 0.5) / 0.5
    return net(ms.Tensor(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).asnumpy()


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
    """A FaceRecognizer-style checkpoint: backbone.* + head.* + an extra scalar."""
    net = BACKBONES.build(dict(type='_apis_test_tiny', embedding_size=8))
    rng = np.random.default_rng(1)
    for _, p in net.parameters_and_names():
        p.set_data(ms.Tensor(rng.normal(0, 0.05, p.shape).astype(np.float32) + (1.0 if 'variance' in p.name else 0)))
    params = {f'backbone.{n}': p for n, p in net.parameters_and_names()}
    params['head.weight'] = np.zeros((10, 8), np.float32)
    path = str(tmp_path_factory.mktemp('ck') / 'model.ckpt')
    save_checkpoint(params, path, extra={'epoch': 3})
    net.set_train(False)
    return path, net


@pytest.fixture(scope='module')
def embedder(ckpt):
    return FaceEmbedder(CFG, ckpt[0], device_target='CPU', batch_size=4)


def test_embed_matches_hand_computation(embedder, ckpt):
    faces = _faces(5)
    emb, norms = embedder.embed(faces, return_norms=True)
    raw = _by_hand(ckpt[1], faces)
    assert emb.shape == (5, 8) and emb.dtype == np.float32
    np.testing.assert_allclose(norms, np.linalg.norm(raw, axis=1), rtol=1e-5)
    np.testing.assert_allclose(emb, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)


def test_batch_size_and_tail_padding_do_not_change_results(embedder, ckpt):
    faces = _faces(7, seed=3)  # batch 4: chunks 4 + 3 (padded to 4)
    other = FaceEmbedder(CFG, ckpt[0], device_target='CPU', batch_size=16)
    np.testing.assert_allclose(embedder.embed(faces), other.embed(faces), atol=1e-6)


def test_flip_test_sums_raw_embeddings(embedder, ckpt):
    faces = _faces(2, seed=4)
    raw = _by_hand(ckpt[1], faces) + _by_hand(ckpt[1], faces[:, :, ::-1])
    expected = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    np.testing.assert_allclose(embedder.embed(faces, flip=True), expected, atol=1e-6)


def test_bgr_flag_and_paths(embedder, tmp_path):
    import cv2
    faces = _faces(2, seed=5)
    cv2.imwrite(str(tmp_path / 'f0.png'), faces[0][:, :, ::-1])
    cv2.imwrite(str(tmp_path / 'f1.png'), faces[1][:, :, ::-1])
    ref = embedder.embed(faces)
    np.testing.assert_allclose(embedder.embed(faces[:, :, :, ::-1].copy(), color='bgr'), ref, atol=1e-6)
    np.testing.assert_allclose(embedder.embed(str(tmp_path)), ref, atol=1e-6)


def test_compare_and_verify(embedder):
    a, b = _faces(1, seed=6)[0], _faces(1, seed=7)[0]
    ea, eb = embedder.embed(a), embedder.embed(b)
    sim = embedder.compare(a, b)
    assert isinstance(sim, float) and sim == pytest.approx(float(ea[0] @ eb[0]), abs=1e-6)
    assert embedder.compare(a, a) == pytest.approx(1.0, abs=1e-6)
    same, s = embedder.verify([a, a], [a, b], threshold=(sim + 1.0) / 2)
    assert same.tolist() == [True, False] and s.shape == (2,)


def test_checkpoint_mismatch_names_the_parameters(tmp_path):
    net = BACKBONES.build(dict(type='_apis_test_tiny', embedding_size=8))
    params = {n: p for n, p in net.parameters_and_names() if 'fc' not in n}
    path = str(tmp_path / 'partial.ckpt')
    save_checkpoint(params, path)
    with pytest.raises(CheckpointMismatchError, match='fc.weight'):
        FaceEmbedder(CFG, path, device_target='CPU')


def test_recognizer_checkpoint_with_extra_backbone_layers_is_refused(tmp_path):
    # a deeper backbone's checkpoint (extra backbone.* entries) must not load into a shallower one silently
    net = BACKBONES.build(dict(type='_apis_test_tiny', embedding_size=8))
    params = {f'backbone.{n}': p for n, p in net.parameters_and_names()}
    params['backbone.layer4.0.conv1.weight'] = np.zeros((4, 4, 3, 3), np.float32)
    params['head.weight'] = np.zeros((10, 8), np.float32)  # head entries are fine: inference ignores them
    path = str(tmp_path / 'deeper.ckpt')
    save_checkpoint(params, path)
    with pytest.raises(CheckpointMismatchError, match='backbone parameters that TinyBackbone lacks.*layer4.0.conv1.weight'):
        FaceEmbedder(CFG, path, device_target='CPU')


def test_bare_backbone_checkpoint_loads(tmp_path, ckpt):
    path = str(tmp_path / 'bare.ckpt')
    save_checkpoint(ckpt[1], path)
    emb = FaceEmbedder(dict(type='_apis_test_tiny', embedding_size=8), path, device_target='CPU')
    faces = _faces(2, seed=8)
    raw = _by_hand(ckpt[1], faces)
    np.testing.assert_allclose(emb.embed(faces), raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)


def test_infer_is_mindface_compatible_and_cached(ckpt, monkeypatch):
    builds = []
    original = embedder_mod.build_backbone
    monkeypatch.setattr(embedder_mod, 'build_backbone', lambda *a, **k: builds.append(1) or original(*a, **k))
    monkeypatch.setattr(embedder_mod, '_INFER_CACHE', {})
    faces = _faces(2, seed=9)
    chw = faces.transpose(0, 3, 1, 2)  # MindFace passes CHW pixel values 0..255
    out1 = infer(chw, backbone='_apis_test_tiny', num_features=8, pretrained=ckpt[0])
    out2 = infer(faces[0], backbone='_apis_test_tiny', num_features=8, pretrained=ckpt[0])
    assert len(builds) == 1
    np.testing.assert_allclose(out1, _by_hand(ckpt[1], faces), rtol=1e-5, atol=1e-6)  # raw, as MindFace
    np.testing.assert_allclose(out2, out1[:1], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match='112x112'):
        infer(np.zeros((3, 96, 96), np.uint8), backbone='_apis_test_tiny', num_features=8, pretrained=ckpt[0])


def test_random_weights_warn():
    with pytest.warns(UserWarning, match='random initial weights') as record:
        emb = FaceEmbedder(dict(type='_apis_test_tiny', embedding_size=8), None, device_target='CPU')
    assert len(record) == 1
    out = emb.embed(_faces(2, seed=3))
    assert out.shape == (2, 8)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)  # still a usable, normalized model


def test_infer_tool_similarity_and_npy(ckpt, tmp_path, capsys):
    import importlib.util
    import os.path as osp

    import cv2
    spec = importlib.util.spec_from_file_location(
        'infer_tool', osp.join(osp.dirname(__file__), '..', '..', 'tools', 'infer.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    cfg = tmp_path / 'cfg.py'
    cfg.write_text("model = dict(type='FaceRecognizer', backbone=dict(type='_apis_test_tiny', embedding_size=8))\n")
    faces = _faces(2, seed=10)
    for i in range(2):
        cv2.imwrite(str(tmp_path / f'{i}.png'), faces[i][:, :, ::-1])
    raw = _by_hand(ckpt[1], faces)
    expected = float(raw[0] @ raw[1] / np.linalg.norm(raw[0]) / np.linalg.norm(raw[1]))
    assert tool.main([str(cfg), ckpt[0], str(tmp_path / '0.png'), str(tmp_path / '1.png'),
                      '--threshold', str(expected - 0.01)]) == 0
    out = capsys.readouterr().out
    assert f'cosine similarity {expected:.4f}' in out and 'same person' in out
    npy = str(tmp_path / 'e.npy')
    folder = tmp_path / 'faces'
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f'{i}.png'), faces[i][:, :, ::-1])
    assert tool.main([str(cfg), ckpt[0], str(folder), '--save-npy', npy]) == 0
    np.testing.assert_allclose(np.load(npy), raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)


def test_facerecognizer_checkpoint_from_a_shipped_config(tmp_path):
    # A whole FaceRecognizer (backbone + head + loss) saved as the engine saves it: the embedder
    # must build only the backbone and reproduce model.extract(), L2-normalized.
    import os.path as osp

    from facekit.config import Config
    from facekit.registry import MODELS
    cfg_path = osp.join(osp.dirname(__file__), '..', '..', 'configs', 'arcface', 'vit_synthetic_cpu.py')
    cfg = Config.fromfile(cfg_path)
    model = MODELS.build(cfg.to_dict()['model'])
    model.set_train(False)
    path = str(tmp_path / 'recognizer.ckpt')
    save_checkpoint(model, path, extra={'epoch': 1})
    faces = _faces(3, seed=11)
    x = (faces.astype(np.float32) / 255.0 - 0.5) / 0.5
    raw = model.extract(ms.Tensor(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).asnumpy()
    emb = FaceEmbedder(cfg_path, path, device_target='CPU').embed(faces)
    assert emb.shape == (3, cfg.model.backbone.embedding_size)
    np.testing.assert_allclose(emb, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)
