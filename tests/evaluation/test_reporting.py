"""Tables in the reference format, strict JSON, ROC PNG."""
import json

import numpy as np

from facekit.evaluation import TarFarEvaluator, VerificationEvaluator
from facekit.evaluation.reporting import format_mean_std, plot_roc, summary_only, write_json


def _result(acc=0.998167, std=0.002291):
    return dict(name='lfw', flip=True, accuracy=acc, accuracy_std=std, accuracy_noflip=0.99,
                accuracy_noflip_std=0.004, best_threshold=1.234, xnorm=22.5, val=0.97, val_std=0.01,
                far=0.0011, auc=0.9991, eer=0.0123, tpr=[0.0, 1.0], fpr=[0.0, 1.0], thresholds=[0.0, 4.0])


def test_format_mean_std_reference_style():
    assert format_mean_std(0.998167, 0.002291) == '0.99817+-0.00229'
    assert format_mean_std(0.9, 0.0) == '0.90000+-0.00000'


def test_verification_table_contains_reference_cell():
    text = VerificationEvaluator.table({'lfw': _result(), 'cfp_fp': _result(0.97186, 0.00652)})
    lines = text.splitlines()
    assert 'Accuracy-Flip' in lines[1] and 'XNorm' in lines[1]
    assert '| lfw ' in text and '0.99817+-0.00229' in text and '0.97186+-0.00652' in text
    assert '22.500' in text and '0.99000+-0.00400' in text


def test_tar_far_table_percent_and_na():
    text = TarFarEvaluator.table({'ijbc': {'tar_at_far': {1e-6: 'n/a', 1e-4: 0.9637, 1e-1: 1.0}}})
    assert text.splitlines()[0].startswith('+TAR @ FAR')
    assert '1e-06' in text and '1e-04' in text and '96.37' in text and '100.00' in text and 'n/a' in text


def test_json_round_trip_strict(tmp_path):
    r = _result()
    r['auc'] = float('nan')
    r['arr'] = np.arange(3, dtype=np.float32)
    r['tar_at_far'] = {1e-3: 'n/a', 1e-2: np.float64(0.5)}
    path = write_json({'lfw': r}, tmp_path / 'sub' / 'results.json')
    text = open(path).read()
    assert 'NaN' not in text
    back = json.loads(text)
    assert back['lfw']['auc'] is None
    assert back['lfw']['arr'] == [0.0, 1.0, 2.0]
    assert back['lfw']['tar_at_far'] == {'0.001': 'n/a', '0.01': 0.5}
    assert back['lfw']['accuracy'] == 0.998167
    assert 'tpr' not in summary_only(r) and 'accuracy' in summary_only(r)


def test_roc_png_written(tmp_path):
    fpr = np.r_[0.0, np.logspace(-4, 0, 50)]
    path = plot_roc({'a': (fpr, np.sqrt(fpr)), 'b': (fpr, fpr)}, tmp_path / 'roc.png', title='lfw')
    with open(path, 'rb') as f:
        head = f.read(8)
    assert head == b'\x89PNG\r\n\x1a\n'
