"""IJB-B / IJB-C from the official release layout: reading, alignment, the template protocol and the
TAR@FAR numbers against an independent NumPy computation, target selection and tools/test.py."""
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from facekit.datasets.ijb import IJBFormatError, IJBRelease, find_ijb_release
from facekit.evaluation import IJBEvaluator
from facekit.evaluation.targets import test_evaluator_cfgs as evaluator_cfgs
from facekit.registry import EVALUATORS
from ijb_release import write_release

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 0.2, 0.3)


@pytest.fixture(scope='module')
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp('ijb')
    return dict(root=str(root), **write_release(root))


class PixelProjection:
    """A stand-in model: a fixed random projection of the pixels, ``(B,3,112,112) -> (B,32)``.

    It recovers the integer pixels from the normalized input and rounds its float64 output to 6
    decimals, so an image gets bit-identical features whether it is embedded alone or in a batch.
    It is not mirror-symmetric, so the flip test changes the features.
    """

    def __init__(self, dim=32, seed=0):
        self.weight = np.random.default_rng(seed).standard_normal((3 * 112 * 112, dim)) / 100.0

    def __call__(self, batch):
        pixels = np.rint((np.asarray(batch, dtype=np.float64) * 0.5 + 0.5) * 255.0)
        return np.round(pixels.reshape(len(pixels), -1) @ self.weight, 6).astype(np.float32)


def model_input(rgb):
    """(112,112,3) uint8 -> (1,3,112,112): (x/255 - 0.5)/0.5, written here, not taken from facekit."""
    return ((rgb.astype(np.float64) / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)[None]


def embed_one_by_one(rec, embed):
    """(crop, mirror) embeddings of every aligned crop, one image at a time; cached in ``rec``."""
    if 'embeddings' not in rec:
        rel = IJBRelease(rec['root'], 'IJBC')
        faces = [rel.aligned_face(i) for i in range(len(rec['names']))]
        rec['embeddings'] = ([embed(model_input(f))[0] for f in faces],
                             [embed(model_input(f[:, ::-1]))[0] for f in faces])
    return rec['embeddings']


def independent_scores(rec, embed, flip=True, use_norm_score=True, use_detector_score=True, by_media=True):
    """The protocol in plain Python/NumPy from the written record: feature per image, then for
    each template the mean of each media's features, summed over media, L2-normalized; cosine.
    ``by_media=False`` averages all images of a template instead (the fault to catch)."""
    crops, mirrors = embed_one_by_one(rec, embed)
    per_template = {}
    for i in range(len(rec['names'])):
        feat = crops[i]
        if flip:
            feat = feat + mirrors[i]  # float32 + float32, as the reference's arrays
        feat = feat.astype(np.float64)
        if not use_norm_score:
            feat = feat / np.sqrt(np.sum(feat ** 2))
        if use_detector_score:
            feat = feat * np.float64(rec['scores'][i])  # read as float32 by the reference
        media = int(rec['medias'][i]) if by_media else 0
        per_template.setdefault(int(rec['templates'][i]), {}).setdefault(media, []).append(feat)
    template_feat = {}
    for tid, medias in per_template.items():
        total = sum(np.mean(np.stack(f), axis=0) for f in medias.values())
        template_feat[tid] = total / np.sqrt(np.sum(total ** 2))
    return np.array([float(template_feat[a] @ template_feat[b]) for a, b in zip(rec['t1'], rec['t2'])])


def tar_reference_rule(scores, labels, far, last_on_ties=True):
    """TAR at ``far`` by the IJB scripts' rule, from scores without ties, in plain Python.

    The ROC walks the scores from high to low (one point per score); a point whose step in equals
    its step out is dropped (sklearn's default), (0, 0) comes first. The TAR is the TPR of the point
    whose FPR is closest to ``far``; the scripts reverse the ROC before taking the first minimum, so
    of equally close points the last one wins (``last_on_ties=False`` is the fault to catch).
    """
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    points, tp, fp = [], 0, 0
    for i in order:
        tp += int(labels[i])
        fp += int(not labels[i])
        points.append((fp, tp))
    kept = [points[0]]
    for i in range(1, len(points) - 1):
        step_in = (points[i][0] - points[i - 1][0], points[i][1] - points[i - 1][1])
        step_out = (points[i + 1][0] - points[i][0], points[i + 1][1] - points[i][1])
        if step_in != step_out:
            kept.append(points[i])
    kept = [(0, 0)] + kept + [points[-1]]
    n_pos, n_neg = sum(map(bool, labels)), sum(not y for y in labels)
    best = None
    for fp, tp in kept:
        d = abs(fp / n_neg - far)
        if best is None or d < best[0] or (last_on_ties and d == best[0]):
            best = (d, tp / n_pos)
    return best[1]


# --- reading the release -------------------------------------------------------------------------

def test_reader_returns_what_was_written(release):
    rel = IJBRelease(release['root'], 'ijbc')
    assert rel.folder == release['folder'] and len(rel) == len(release['names'])
    assert rel.names == release['names']
    np.testing.assert_array_equal(rel.templates, release['templates'])
    np.testing.assert_array_equal(rel.medias, release['medias'])
    np.testing.assert_array_equal(rel.detector_scores, release['scores'])
    np.testing.assert_allclose(rel.landmarks, release['landmarks'], atol=1e-4)
    np.testing.assert_array_equal(rel.pair_t1, release['t1'])
    np.testing.assert_array_equal(rel.pair_t2, release['t2'])
    np.testing.assert_array_equal(rel.pair_labels, release['labels'])
    # the set folder itself is accepted as root (arcface_torch's --image-path convention)
    assert IJBRelease(release['folder'], 'IJBC').folder == release['folder']


def test_alignment_uses_the_landmarks(release):
    rel = IJBRelease(release['root'], 'IJBC')
    inner = (slice(10, 102), slice(10, 102))
    for i in (0, 7, 23):
        face = release['faces'][i].astype(np.float64)
        aligned = rel.aligned_face(i)
        assert aligned.shape == (112, 112, 3) and aligned.dtype == np.uint8
        # the inverse of the known placement, warped here with OpenCV, gives the same crop
        loose = cv2.cvtColor(cv2.imread(rel.image_path(i)), cv2.COLOR_BGR2RGB)
        inverse = cv2.warpAffine(loose, cv2.invertAffineTransform(release['matrices'][i]), (112, 112))
        assert np.abs(aligned.astype(np.float64) - inverse)[inner].mean() < 0.6
        # the rendered face comes back, up to JPEG and two resamplings (which smooth its pixel
        # noise away, hence the comparison after a 1-px blur of both: measured 0.9-1.4)
        smooth = cv2.GaussianBlur(face, (0, 0), 1.0)
        ok = np.abs(cv2.GaussianBlur(aligned.astype(np.float64), (0, 0), 1.0) - smooth)[inner].mean()
        assert ok < 2.0
        # landmarks moved by 6 px in the loose crop move the crop: far from the face (measured 7-15)
        moved = rel.aligned_face(i, landmarks=rel.landmarks[i] + np.array([6.0, 0.0], dtype=np.float32))
        assert np.abs(cv2.GaussianBlur(moved.astype(np.float64), (0, 0), 1.0) - smooth)[inner].mean() > 3 * ok


# --- the protocol and the numbers ----------------------------------------------------------------

@pytest.mark.parametrize('switches', [dict(), dict(use_detector_score=False), dict(use_norm_score=False),
                                      dict(flip=False)])
def test_pair_scores_match_independent_computation(release, switches):
    ev = IJBEvaluator(release['root'], 'IJBC', fars=FARS, batch_size=16, **switches)
    embed = PixelProjection()
    result = ev.evaluate(embed)
    expected = independent_scores(release, embed, **switches)
    assert len(set(expected.tolist())) == expected.size  # no tied scores: the rule below needs none
    # TAR at every FAR, AUC and pair counts against the independent scores
    n_neg = int((~release['labels']).sum())
    for far in FARS:
        got = result['tar_at_far'][far]
        if far < 1.0 / n_neg:
            assert got == 'n/a'
        else:
            assert got == tar_reference_rule(expected.tolist(), release['labels'].tolist(), far), far
    genuine, impostor = expected[release['labels']], expected[~release['labels']]
    auc = np.mean(genuine[:, None] > impostor[None, :])  # Mann-Whitney: no ties
    assert result['auc'] == pytest.approx(auc, abs=1e-12)
    assert result['num_genuine'] == genuine.size and result['num_impostors'] == impostor.size
    assert result['num_images'] == len(release['names'])
    assert result['num_templates'] == np.unique(release['templates']).size


def test_switches_and_aggregation_order_matter_on_this_release(release):
    """The data must tell the planted faults apart, or the test above could not catch them."""
    embed = PixelProjection()
    reference = independent_scores(release, embed)
    for other in (dict(flip=False), dict(use_norm_score=False), dict(use_detector_score=False)):
        assert np.abs(independent_scores(release, embed, **other) - reference).max() > 1e-3, other
    # averaging all images of a template (ignoring media) gives other scores
    assert np.abs(independent_scores(release, embed, by_media=False) - reference).max() > 1e-3
    # the reversed-ROC tie rule differs from taking the first closest point at some FAR
    labels = release['labels'].tolist()
    assert any(tar_reference_rule(reference.tolist(), labels, f) !=
               tar_reference_rule(reference.tolist(), labels, f, last_on_ties=False) for f in FARS if f >= 1e-3)


def test_pair_scores_equal_independent_scores_to_rounding(release):
    ev = IJBEvaluator(release['root'], 'IJBC', batch_size=16)
    embed = PixelProjection()
    rel = ev.release()
    from facekit.evaluation.embedding import embed_images
    raw, raw_flip = embed_images(len(rel), rel.aligned_face, embed, batch_size=16)
    scores, labels = ev.pair_scores(raw, raw_flip)
    np.testing.assert_allclose(scores, independent_scores(release, embed), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(labels, release['labels'])


def test_table_summary_and_plot(release, tmp_path):
    ev = EVALUATORS.build(dict(type='IJBEvaluator', root=release['root'], set_name='ijbc', batch_size=32))
    result = ev.evaluate(PixelProjection())
    lines = IJBEvaluator.table({ev.name: result}).splitlines()
    assert [c.strip() for c in lines[1].split('|')[1:-1]] == ['Methods', '1e-06', '1e-05', '0.0001', '0.001',
                                                              '0.01', '0.1']
    cells = [c.strip() for c in lines[3].split('|')[1:-1]]
    assert cells[0] == 'ijbc-IJBC'
    tars = [result['tar_at_far'][f] for f in (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)]
    assert cells[1:] == [t if t == 'n/a' else '%.2f' % (t * 100) for t in tars]
    assert cells[1:4] == ['n/a'] * 3 and cells[4] != 'n/a'   # ~3000 impostor pairs: 1e-3 is the smallest FAR
    summary = ev.summary(result)
    assert summary['tar@far=1e-02'] == result['tar_at_far'][1e-2] and summary['tar@far=1e-04'] is None
    assert summary['set_name'] == 'IJBC' and summary['use_detector_score'] is True
    assert ev.primary_key(result) == 'tar@far=1e-04'
    png = ev.plot(result, str(tmp_path / 'roc.png'))
    with open(png, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


# --- malformed releases --------------------------------------------------------------------------

@pytest.fixture
def small_release(tmp_path):
    rec = write_release(tmp_path, num_subjects=2, templates_per_subject=2, seed=1)
    return dict(root=str(tmp_path), **rec)


def rewrite_line(path, lineno, text):
    with open(path) as f:
        lines = f.read().splitlines()
    lines[lineno - 1] = text
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')


def first_line(path, lineno=1):
    with open(path) as f:
        return f.read().splitlines()[lineno - 1]


def test_malformed_landmark_line_names_file_and_line(small_release):
    path = small_release['files']['name_5pts_score']
    rewrite_line(path, 2, ' '.join(first_line(path, 2).split()[:-1]))   # score column dropped
    with pytest.raises(IJBFormatError, match=re.escape(path) + ':2: expected 12 space-separated columns .*got 11'):
        IJBRelease(small_release['root'], 'IJBC')


def test_non_numeric_template_id_names_file_and_line(small_release):
    path = small_release['files']['face_tid_mid']
    name, _, media = first_line(path, 3).split()
    rewrite_line(path, 3, f'{name} t7 {media}')
    with pytest.raises(IJBFormatError, match=re.escape(path) + ':3: template_id and media_id must be integers'):
        IJBRelease(small_release['root'], 'IJBC')


def test_bad_pair_label_and_columns_name_file_and_line(small_release):
    path = small_release['files']['template_pair_label']
    a, b, _ = first_line(path, 2).split()
    original = first_line(path, 2)
    rewrite_line(path, 2, f'{a} {b} 2')
    with pytest.raises(IJBFormatError, match=re.escape(f'{path}:2: label must be 1 (genuine) or 0 (impostor), got 2')):
        IJBRelease(small_release['root'], 'IJBC')
    rewrite_line(path, 2, original)
    rewrite_line(path, 4, f'{a} {b}')
    with pytest.raises(IJBFormatError, match=re.escape(f'{path}:4: expected 3 space-separated columns')):
        IJBRelease(small_release['root'], 'IJBC')
    rewrite_line(path, 4, f'{a} 999999 0')
    with pytest.raises(IJBFormatError, match=re.escape(f'{path}:4: template 999999 has no image')):
        IJBRelease(small_release['root'], 'IJBC')


def test_line_numbers_count_blank_lines_and_names_must_agree(small_release):
    path = small_release['files']['name_5pts_score']
    with open(path) as f:
        text = f.read()
    with open(path, 'w') as f:
        f.write('\n' + text)   # a blank first line is skipped, and still counted
    rel = IJBRelease(small_release['root'], 'IJBC')
    assert rel.names == small_release['names']
    fields = first_line(path, 3).split()
    rewrite_line(path, 3, ' '.join(['other.jpg'] + fields[1:]))
    tid = small_release['files']['face_tid_mid']
    with pytest.raises(IJBFormatError, match=re.escape(f"image 2 differs between {tid}:2 ('2.jpg') and {path}:3")):
        IJBRelease(small_release['root'], 'IJBC')


def test_missing_files_are_named(small_release, tmp_path):
    with pytest.raises(FileNotFoundError, match=r'no IJBB release under .*IJBB/meta/ijbb_face_tid_mid.txt'):
        IJBRelease(small_release['root'], 'IJBB')
    with pytest.raises(ValueError, match="unknown IJB set 'IJBA'"):
        IJBRelease(small_release['root'], 'IJBA')
    os.remove(osp.join(small_release['folder'], 'loose_crop', '2.jpg'))
    ev = IJBEvaluator(small_release['root'], batch_size=4)
    n = len(small_release['names'])
    with pytest.raises(FileNotFoundError, match=re.escape(
            f"1 of {n} images listed in {small_release['files']['face_tid_mid']} are missing from "
            f"{osp.join(small_release['folder'], 'loose_crop')}, e.g. 2.jpg")):
        ev.evaluate(PixelProjection())


# --- target selection and tools/test.py ----------------------------------------------------------

def test_targets_find_the_release(small_release, tmp_path):
    cfg = dict(data_root=None)
    selected, missing = evaluator_cfgs(cfg, targets='ijbc,ijbb', data_root=small_release['root'],
                                            batch_size=8, flip=False)
    assert selected == [dict(type='IJBEvaluator', root=small_release['folder'], set_name='IJBC', name='ijbc',
                             batch_size=8, flip=False)]
    root = osp.abspath(small_release['root'])
    assert missing == [('ijbb', [osp.join(root, 'IJBB', 'meta', 'ijbb_face_tid_mid.txt'),
                                 osp.join(root, 'meta', 'ijbb_face_tid_mid.txt')])]
    # a configured IJB evaluator of that name keeps its settings; a missing configured root is reported
    moved = str(tmp_path / 'elsewhere')
    shutil.copytree(small_release['folder'], osp.join(moved, 'IJBC'))
    cfg = dict(test_evaluators=[dict(type='IJBEvaluator', name='ijbc', root=moved, use_detector_score=False),
                                dict(type='IJBEvaluator', name='ijbb', set_name='IJBB', root=moved)])
    selected, missing = evaluator_cfgs(cfg, targets=['ijbc'])
    assert selected[0]['root'] == osp.join(moved, 'IJBC') and selected[0]['use_detector_score'] is False
    selected, missing = evaluator_cfgs(cfg)
    assert [e['name'] for e in selected] == ['ijbc'] and missing[0][0] == 'ijbb'
    assert find_ijb_release(moved, 'ijbc')[0] == osp.join(moved, 'IJBC')


@pytest.mark.slow
def test_test_py_target_ijbc_end_to_end(release, tmp_path):
    """tools/test.py --target ijbc,ijbb on the synthetic release: the MISSING line for ijbb, the
    reference table, JSON and ROC PNG for ijbc, with the numbers of the same model run in-process."""
    from tiny_eval import write_config_and_checkpoint
    cfg_path, ckpt = write_config_and_checkpoint(tmp_path, 'tiny')
    out, work = str(tmp_path / 'ijb.json'), str(tmp_path / 'work')
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA='AVX2', PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, 'tools/test.py', cfg_path, ckpt, '--target', 'ijbc,ijbb', '--data-root',
                           release['root'], '--out', out, '--work-dir', work, '--roc', '--batch-size', '32'],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'MISSING ijbb: not found' in proc.stdout
    assert osp.join(osp.abspath(release['root']), 'IJBB', 'meta', 'ijbb_face_tid_mid.txt') in proc.stdout
    header = next(line for line in proc.stdout.splitlines() if '| Methods' in line)
    assert [c.strip() for c in header.split('|')[1:-1]] == ['Methods', '1e-06', '1e-05', '0.0001', '0.001',
                                                            '0.01', '0.1']
    assert '| ijbc-IJBC |' in proc.stdout
    assert osp.isfile(osp.join(work, 'roc_ijbc.png'))
    with open(out) as f:
        got = json.load(f)['results']['ijbc']
    assert got['num_images'] == len(release['names']) and got['set_name'] == 'IJBC'

    from facekit.config import Config
    from facekit.registry import BACKBONES
    from facekit.utils.checkpoint import load_checkpoint, load_state_into
    backbone = BACKBONES.build(Config.fromfile(cfg_path).model.backbone.to_dict())
    load_state_into(backbone, load_checkpoint(ckpt), prefix='backbone.')
    expected = IJBEvaluator(release['root'], batch_size=32).evaluate(backbone)
    assert got['tar_at_far'] == {str(k): v for k, v in expected['tar_at_far'].items()}
    assert got['auc'] == pytest.approx(expected['auc'], abs=1e-9)


def test_documented_switches_build(small_release):
    """The config block of docs/evaluation.md "Switches" names real arguments, with the defaults."""
    with open(osp.join(ROOT, 'docs', 'evaluation.md'), encoding='utf-8') as f:
        section = f.read().split('### Switches', 1)[1].split('###', 1)[0]
    block = re.search(r'```python\n(.*?)```', section, re.S).group(1)
    namespace = {}
    exec(block, namespace)
    cfg = dict(namespace['test_evaluators'][0], root=small_release['root'])
    ev = EVALUATORS.build(cfg)
    default = IJBEvaluator(small_release['root'])
    assert repr(ev) == repr(default) and (ev.flip, ev.batch_size, ev.fars) == (default.flip, default.batch_size,
                                                                               default.fars)
