"""The test report folder: tables as text/Markdown/JSON, the ROC of every target, genuine/impostor score
histograms with the threshold, the XNorm distribution; the drawn data equals the computed data."""
import json
import os
import os.path as osp
import struct
import subprocess
import sys

import numpy as np
import pytest

from facekit.evaluation import TarFarEvaluator, VerificationEvaluator
from facekit.evaluation.report_files import ascii_to_markdown, file_stem, report_data, write_report
from facekit.evaluation.reporting import report
from facekit.visualization.figures import histogram_series
from tiny_eval import make_bin, write_config_and_checkpoint

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def assert_png(path, min_side=200, max_bytes=300_000):
    import matplotlib.image as mpimg
    data = open(path, 'rb').read()
    assert data[:8] == b'\x89PNG\r\n\x1a\n'
    width, height = struct.unpack('>II', data[16:24])
    assert min(width, height) >= min_side and 5_000 < len(data) < max_bytes, (width, height, len(data))
    assert mpimg.imread(str(path)).std() > 0.05


@pytest.fixture(scope='module')
def evaluated(tmp_path_factory):
    """A VerificationEvaluator on a 60-pair .bin with embeddings made here (genuine pairs close), and a
    TarFarEvaluator on scores made here."""
    tmp = tmp_path_factory.mktemp('report')
    ver = VerificationEvaluator(bin_path=make_bin(tmp / 'lfw.bin'), name='lfw')
    _, issame = ver.load()
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(2 * issame.size, 16)).astype(np.float32) * 3
    raw[1::2][issame] = raw[0::2][issame] + rng.normal(size=(int(issame.sum()), 16)).astype(np.float32)
    raw_flip = (raw + 0.3 * rng.normal(size=raw.shape)).astype(np.float32)
    tar = TarFarEvaluator(pair_list='unused.txt', name='pairs_tar', fars=(1e-1, 5e-1))
    labels = np.r_[np.ones(30, bool), np.zeros(70, bool)]
    scores = np.r_[rng.normal(0.6, 0.2, 30), rng.normal(0.1, 0.2, 70)]
    results = {'lfw': ver.compute_metrics(raw, raw_flip), 'pairs_tar': tar.compute_metrics(scores, labels)}
    return tmp, [ver, tar], results, raw, raw_flip, issame


def test_figure_data_equals_an_independent_computation(evaluated):
    _, evaluators, results, raw, raw_flip, issame = evaluated
    data = report_data(evaluators, results)
    # squared distances of flip-summed, L2-normalized embeddings, computed here
    s = raw.astype(np.float64) + raw_flip
    e = s / np.linalg.norm(s, axis=1, keepdims=True)
    dist = np.sum((e[0::2] - e[1::2]) ** 2, axis=1)
    scores = data['scores']['lfw']
    np.testing.assert_allclose(np.sort(scores['genuine']), np.sort(dist[issame]), rtol=1e-6)
    np.testing.assert_allclose(np.sort(scores['impostor']), np.sort(dist[~issame]), rtol=1e-6)
    assert scores['threshold'] == results['lfw']['best_threshold']
    folds = results['lfw']['fold_thresholds']
    assert scores['threshold_range'] == (min(folds), max(folds))
    norms = np.r_[np.linalg.norm(raw.astype(np.float64), axis=1), np.linalg.norm(raw_flip.astype(np.float64), axis=1)]
    np.testing.assert_allclose(data['norms']['lfw'], norms, rtol=1e-9)
    assert np.mean(data['norms']['lfw']) == pytest.approx(results['lfw']['xnorm'], rel=1e-12)
    assert set(data['roc']) == {'lfw', 'pairs_tar'} and 'pairs_tar' not in data['scores']
    np.testing.assert_array_equal(data['roc']['lfw'][0], results['lfw']['fpr'])


def test_histogram_series_counts_every_value_once():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 500), rng.normal(2, 1, 300)
    edges, counts = histogram_series({'a': a, 'b': np.r_[b, np.nan]}, bins=25)
    assert edges[0] == min(a.min(), b.min()) and edges[-1] == max(a.max(), b.max()) and len(edges) == 26
    assert counts['a'].sum() == 500 and counts['b'].sum() == 300      # the NaN is left out
    np.testing.assert_array_equal(counts['a'], [np.sum((a >= lo) & ((a < hi) if k < 24 else (a <= hi)))
                                                for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:]))])


def test_report_folder_files(evaluated):
    tmp, evaluators, results, *_ = evaluated
    out = tmp / 'out'
    paths = write_report(evaluators, results, str(out), checkpoint='/x/epoch_3.ckpt', config='cfg.py')
    names = [osp.basename(p) for p in paths]
    assert names == ['results.txt', 'results.md', 'results.json', 'roc.png', 'scores_lfw.png', 'xnorm.png']
    assert (out / 'results.txt').read_text().strip() == report(evaluators, results).strip()
    saved = json.loads((out / 'results.json').read_text())
    assert saved['checkpoint'] == '/x/epoch_3.ckpt'
    assert saved['results']['lfw']['accuracy'] == results['lfw']['accuracy']
    assert saved['results']['pairs_tar']['tar@far=1e-01'] == results['pairs_tar']['tar_at_far'][1e-1]
    md = (out / 'results.md').read_text()
    assert '### verification (10-fold)' in md and '### TAR @ FAR' in md
    acc = f"{results['lfw']['accuracy']:1.5f}+-{results['lfw']['accuracy_std']:1.5f}"
    assert f'| lfw | {acc} |' in md
    lines = md.splitlines()
    header = lines.index(next(ln for ln in lines if ln.startswith('| target | Accuracy-Flip')))
    assert lines[header + 1] == '|' + '---|' * 8
    for name in ('roc.png', 'scores_lfw.png', 'xnorm.png'):
        assert_png(out / name, min_side=300)


def test_markdown_of_untitled_and_titled_tables():
    text = ('+-----+---+\n| a   | b |\n+-----+---+\n| 1   | 2 |\n+-----+---+\n'
            '+T----+\n| c   |\n+-----+\n| 3   |\n+-----+')
    assert ascii_to_markdown(text) == '| a | b |\n|---|---|\n| 1 | 2 |\n\n### T\n\n| c |\n|---|\n| 3 |\n'
    assert file_stem('a/b c') == 'a_b_c' and file_stem('cfp_fp') == 'cfp_fp'


def test_samples_stay_out_of_summaries_and_tables(evaluated):
    _, evaluators, results, *_ = evaluated
    summary = evaluators[0].summary(results['lfw'])
    assert 'samples' not in json.dumps(summary) and 'distances' not in json.dumps(summary)


@pytest.mark.slow
def test_test_tool_writes_the_report(tmp_path):
    bin_path = make_bin(tmp_path / 'lfw.bin')
    cfg, ckpt = write_config_and_checkpoint(tmp_path, 'tiny', bin_path)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.run([sys.executable, 'tools/test.py', cfg, ckpt, '--work-dir', str(tmp_path / 'work'),
                           '--batch-size', '16'], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    folder = tmp_path / 'work' / 'report_tiny'          # the default: <work dir>/report_<checkpoint name>
    assert sorted(os.listdir(folder)) == ['results.json', 'results.md', 'results.txt', 'roc.png', 'scores_lfw.png',
                                          'xnorm.png']
    payload = json.loads((tmp_path / 'work' / 'eval_tiny.json').read_text())
    assert 'samples' not in payload['results']['lfw']       # per-pair arrays stay out of the JSON
    report_json = json.loads((folder / 'results.json').read_text())
    assert report_json['results']['lfw']['accuracy'] == payload['results']['lfw']['accuracy']
    assert '\r' not in proc.stderr                           # no progress bar when stderr is captured
    proc = subprocess.run([sys.executable, 'tools/test.py', cfg, ckpt, '--work-dir', str(tmp_path / 'w2'),
                           '--batch-size', '16', '--report', str(tmp_path / 'mine')], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0 and (tmp_path / 'mine' / 'roc.png').is_file()
    assert not any(n.startswith('report_') for n in os.listdir(tmp_path / 'w2'))
