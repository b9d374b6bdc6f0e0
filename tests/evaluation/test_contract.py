"""The evaluator contract: one report for mixed evaluator kinds, scalar summaries, primary values,
plain (non-subclass) evaluators, evaluate_all, and test-target selection."""
import json
import os.path as osp

import numpy as np
import pytest

from facekit.datasets.verification_bin import save_bin
from facekit.evaluation import (BaseEvaluator, TarFarEvaluator, VerificationEvaluator, as_evaluator,
                                evaluate_all, report)
# imported under another name: pytest would collect a module-level 'test_*' function as a test
from facekit.evaluation.targets import test_evaluator_cfgs as select_cfgs
from facekit.evaluation.reporting import to_jsonable


@pytest.fixture()
def verification(tmp_path):
    """A VerificationEvaluator on 10 pairs (2 folds of 5) and raw embeddings made by hand.

    Pair i is genuine for even i. Genuine pairs: the same vector (distance 0); impostors:
    orthogonal vectors (distance 2); pair 0, genuine, has opposite vectors (distance 4), which no
    threshold below 4 calls "same". Fold 1 (pairs 5-9) is separable, so its training picks a
    threshold that gets all of fold 0 right except pair 0: 4/5. Training on fold 0 gets 4/5 at
    best, first at threshold 0.01, which is right on all of fold 1: 5/5. Mean 0.9, population
    std 0.1. Raw vectors have norm 3, so XNorm is 3.
    """
    issame = np.arange(10) % 2 == 0
    path = str(tmp_path / 'tiny.bin')
    save_bin(path, [b'not decoded'] * 20, issame)  # compute_metrics reads only issame
    e1, e2 = np.array([3.0, 0.0]), np.array([0.0, 3.0])
    raw = []
    for i, same in enumerate(issame):
        raw += [e1, -e1] if i == 0 else ([e1, e1] if same else [e1, e2])
    ev = VerificationEvaluator(bin_path=path, nfolds=2, flip=False)
    return ev, ev.compute_metrics(np.array(raw, dtype=np.float32))


@pytest.fixture()
def tar_far():
    """Genuine scores 0.9 0.6 0.3, impostor scores 0.7 0.4 0.2 0.1.

    FAR 0.25 = one of four impostors accepted: thresholds 0.7 and 0.6 both accept only the 0.7
    impostor; the IJB rule takes the larger TAR at that FAR, threshold 0.6, which two genuine
    scores (0.9, 0.6) pass: TAR 2/3. FAR 0.5: thresholds 0.4 and 0.3 accept two impostors;
    at 0.3 all three genuine scores pass: TAR 1. FAR 1e-4 is below 1/4 impostors: not measurable.
    """
    scores = np.array([0.9, 0.6, 0.3, 0.7, 0.4, 0.2, 0.1])
    labels = np.array([1, 1, 1, 0, 0, 0, 0], dtype=bool)
    smallest = TarFarEvaluator(pair_list='unused.txt', name='pairs_small', fars=(0.5, 0.25))
    with_1e4 = TarFarEvaluator(pair_list='unused.txt', name='pairs_1e4', fars=(1e-4, 0.25, 0.5))
    return ((smallest, smallest.compute_metrics(scores, labels)),
            (with_1e4, with_1e4.compute_metrics(scores, labels)))


class PlainHitRate:
    """An evaluator that does not subclass BaseEvaluator: only name and evaluate."""
    name = 'plain'

    def evaluate(self, model_or_fn):
        scores = np.asarray(model_or_fn(np.zeros((4, 3, 112, 112), np.float32)))[:, 0]
        return dict(name=self.name, curve=[0.0, 0.5, 1.0], hit_rate=float(np.mean(scores > 0)),
                    count=int(scores.size), detail={'first': float(scores[0])})


def four_scores(batch):
    return np.array([[1.0], [-1.0], [2.0], [3.0]])


def test_report_renders_verification_and_tar_far_together(verification, tar_far):
    ev, r = verification
    (tf, tr), _ = tar_far
    text = report([ev, tf], {ev.name: r, tf.name: tr}, title='after 7 iterations')
    assert 'verification (10-fold) after 7 iterations' in text and 'TAR @ FAR after 7 iterations' in text
    assert '| tiny ' in text and '0.90000+-0.10000' in text  # accuracy in the reference format
    assert '| pairs_small ' in text and '| 0.25 ' in text and '66.67' in text and '100.00' in text
    assert text.index('verification') < text.index('TAR @ FAR')  # classes in the evaluators' order


def test_report_groups_by_class_and_refuses_unknown_results(tar_far):
    (a, ra), (b, rb) = tar_far
    text = report([a, b], {a.name: ra, b.name: rb})
    assert text.count('TAR @ FAR') == 1 and '| pairs_small ' in text and '| pairs_1e4 ' in text
    assert '1e-04' in text and 'n/a' in text  # 1e-4 is asked by one target only / not measurable
    assert report([a, b], {b.name: rb}).count('pairs_small') == 0  # an evaluator without result is skipped
    with pytest.raises(ValueError, match="'stray'"):
        report([a], {a.name: ra, 'stray': rb})


def test_summaries_are_flat_json_safe_scalars(verification, tar_far):
    ev, r = verification
    r = dict(r, val=float('nan'))  # a fold without impostors makes VAL NaN
    (tf, tr), (tf4, tr4) = tar_far
    for evaluator, result in ((ev, r), (tf, tr), (tf4, tr4)):
        summary = evaluator.summary(result)
        assert all(v is None or type(v) in (int, float, bool, str) for v in summary.values()), summary
        json.dumps(to_jsonable(summary), allow_nan=False)
        assert 'name' not in summary and 'fpr' not in summary
    s = ev.summary(r)
    assert s['val'] is None and s['accuracy'] == pytest.approx(0.9) and 'fold_accuracies' not in s
    s4 = tf4.summary(tr4)
    assert s4['tar@far=1e-04'] is None and s4['tar@far=0.25'] == pytest.approx(2 / 3)
    assert s4['num_impostors'] == 4 and 'tar_at_far' not in s4


def test_primary_values_computed_by_hand(verification, tar_far):
    ev, r = verification
    (small, rs), (with_1e4, r4) = tar_far
    assert ev.primary_key(r) == 'accuracy' and ev.primary_value(r) == pytest.approx(0.9)
    assert r['accuracy_std'] == pytest.approx(0.1)
    # without 1e-4 among the FARs: the smallest one asked for, whatever the order given
    assert small.primary_key(rs) == 'tar@far=0.25' and small.primary_value(rs) == pytest.approx(2 / 3)
    # 1e-4 is the headline when asked for; not measurable on 4 impostors -> None, not a crash
    assert with_1e4.primary_key(r4) == 'tar@far=1e-04' and with_1e4.primary_value(r4) is None
    assert with_1e4.headline(r4) == 'pairs_1e4 tar@far=1e-04=n/a'
    assert ev.headline(r) == 'tiny accuracy=0.90000'


def test_log_lines(verification, tar_far):
    ev, r = verification
    assert ev.log_lines(r) == ['[tiny]XNorm: 3.000000', '[tiny]Accuracy: 0.90000+-0.10000',
                               '[tiny]Accuracy-Flip: n/a (no flip test)']
    (_, _), (tf4, r4) = tar_far
    assert tf4.log_lines(r4)[0] == '[pairs_1e4]TAR@FAR: 1e-04 n/a | 0.25 66.67 | 5e-01 100.00'


def test_plain_evaluator_is_reportable():
    plain = PlainHitRate()
    ev = as_evaluator(plain)
    assert isinstance(ev, BaseEvaluator) and ev.name == 'plain' and as_evaluator(ev) is ev
    r = ev.evaluate(four_scores)  # its evaluate has no dist argument: not passed when None
    # generic summary: scalars, a dict of scalars flattened, lists left out
    assert ev.summary(r) == {'hit_rate': 0.75, 'count': 4, 'detail.first': 1.0}
    assert ev.primary_key(r) == 'hit_rate' and ev.primary_value(r) == 0.75  # first number: 3 of 4 > 0
    text = report([plain], {'plain': r})
    assert 'PlainHitRate' in text and '| hit_rate ' in text and '0.75000' in text and '| 4 ' in text
    assert 'curve' not in text
    with pytest.raises(TypeError, match='no evaluate'):
        as_evaluator(object())


def test_evaluate_all_logs_and_refuses_duplicate_names():
    lines = []
    results = evaluate_all([PlainHitRate()], four_scores, log=lines.append)
    assert list(results) == ['plain'] and results['plain']['hit_rate'] == 0.75
    assert lines == ['evaluating plain ...', 'plain hit_rate=0.75000']
    assert evaluate_all([PlainHitRate()], four_scores, log=None)['plain']['count'] == 4
    with pytest.raises(ValueError, match=r"repeated: \['plain'\]"):
        evaluate_all([PlainHitRate(), PlainHitRate()], four_scores, log=None)


# --- test_evaluator_cfgs ---------------------------------------------------------------

class PluginNoOptions(BaseEvaluator):
    """Accepts none of the override arguments."""
    def __init__(self, name='plugin'):
        self.name = name


class MyVerification(VerificationEvaluator):
    """A verification subclass: takes nfolds like its base."""


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'')  # only existence is checked
    return str(path)


@pytest.fixture()
def roots(tmp_path):
    a, b, c = tmp_path / 'a', tmp_path / 'b', tmp_path / 'c'
    touch(a / 'lfw.bin')
    touch(b / 'lfw.bin')
    touch(c / 'cfp_fp.bin')
    calfw = touch(c / 'calfw_v2.bin')
    cfg = dict(data_root=str(b), val_evaluators=[
        dict(type='VerificationEvaluator', bin_path=calfw, name='calfw', far_target=1e-2),
        dict(type='TarFarEvaluator', pair_list=str(tmp_path / 'pairs.txt'), name='ijb'),
        dict(type=PluginNoOptions, name='plugin'),
        dict(type=MyVerification, bin_path=str(c / 'gone.bin'), name='gone'),
    ])
    return str(a), str(b), str(c), cfg


def test_targets_searched_in_root_order_with_overrides(roots):
    a, b, c, cfg = roots
    cfgs, missing = select_cfgs(cfg, targets='lfw, calfw,agedb_30,cfp_fp', data_root=a,
                                        batch_size=16, flip=False, nfolds=5)
    by_name = {e['name']: e for e in cfgs}
    assert [e['name'] for e in cfgs] == ['lfw', 'calfw', 'cfp_fp']
    assert by_name['lfw']['bin_path'] == osp.join(a, 'lfw.bin')  # --data-root before cfg.data_root
    assert by_name['cfp_fp']['bin_path'] == osp.join(c, 'cfp_fp.bin')  # folder of a configured bin
    # no calfw.bin in any root: the configured evaluator's own file, with its settings kept
    assert by_name['calfw']['bin_path'] == osp.join(c, 'calfw_v2.bin') and by_name['calfw']['far_target'] == 1e-2
    for e in cfgs:
        assert e['type'] == 'VerificationEvaluator' and (e['batch_size'], e['flip'], e['nfolds']) == (16, False, 5)
    assert missing == [('agedb_30', [osp.join(a, 'agedb_30.bin'), osp.join(b, 'agedb_30.bin'),
                                     osp.join(c, 'agedb_30.bin')])]


def test_configured_evaluators_with_overrides_by_constructor(roots):
    a, b, c, cfg = roots
    cfgs, missing = select_cfgs(cfg, batch_size=8, flip=False, nfolds=4)
    by_name = {e['name']: e for e in cfgs}
    assert list(by_name) == ['calfw', 'ijb', 'plugin']
    assert by_name['calfw']['nfolds'] == 4 and by_name['calfw']['batch_size'] == 8
    assert 'nfolds' not in by_name['ijb'] and (by_name['ijb']['batch_size'], by_name['ijb']['flip']) == (8, False)
    assert set(by_name['plugin']) == {'type', 'name'}  # accepts none of them: none forced on it
    assert missing == [('gone', [osp.join(c, 'gone.bin')])]
    # a verification subclass takes nfolds (decided by class, not by its type name)
    cfg['test_evaluators'] = [dict(type=MyVerification, bin_path=osp.join(c, 'cfp_fp.bin'), name='mine')]
    cfgs, _ = select_cfgs(cfg, nfolds=3)
    assert cfgs[0]['nfolds'] == 3 and cfgs[0]['type'] is MyVerification
    # and is looked up by name for a target, keeping its class
    cfgs, _ = select_cfgs(cfg, targets=['mine'], data_root=a)
    assert cfgs[0]['type'] is MyVerification and cfgs[0]['bin_path'] == osp.join(c, 'cfp_fp.bin')


def test_nothing_configured_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match='no test_evaluators or val_evaluators; pass target names'):
        select_cfgs(dict(data_root=str(tmp_path)))
    with pytest.raises(ValueError, match='no target names'):
        select_cfgs(dict(), targets=' , ')
    cfgs, missing = select_cfgs(dict(), targets='lfw', data_root=str(tmp_path))
    assert cfgs == [] and missing == [('lfw', [osp.join(str(tmp_path), 'lfw.bin')])]


# --- docs/customize.md "An evaluator" ------------------------------------------------------------

def _doc_section():
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    with open(osp.join(root, 'docs', 'customize.md'), encoding='utf-8') as f:
        text = f.read()
    return text[text.index('## An evaluator'):text.index('## Checklist')]


def test_customize_doc_evaluator_example_runs_as_written(tmp_path, monkeypatch, capsys, tar_far):
    import re

    from facekit.registry import EVALUATORS
    section = _doc_section()
    blocks = re.findall(r'```python\n(.*?)```', section, re.S)
    code = [b for b in blocks if not b.startswith('custom_imports')]  # the config block needs a file
    assert len(code) == 2 and code[0].startswith('# my_plugins/cosine_pairs.py')
    shown = re.findall(r'```\n(\+CosinePairAccuracy.*?)```', section, re.S)[0]
    monkeypatch.chdir(tmp_path)  # the example writes pairs.npz into the working directory
    namespace = {}
    try:
        exec(compile('\n'.join(code), 'docs/customize.md', 'exec'), namespace)
    finally:
        EVALUATORS.module_dict.pop('CosinePairAccuracy', None)
    out = capsys.readouterr().out
    # 3 of 4 pairs right: a face with itself / a scaled copy (same), two noise images (different);
    # the negated face (cosine -1) is called different although labelled same
    faces = namespace['faces'].reshape(4, -1).astype(np.float64)
    unrelated = faces[1] @ faces[2] / np.linalg.norm(faces[1]) / np.linalg.norm(faces[2])
    result = namespace['results']['cosine_pairs']
    assert result['accuracy'] == 0.75 and abs(unrelated) < 0.3
    assert result['mean_cosine'] == pytest.approx((1 + unrelated + 1 - 1) / 4, abs=1e-6)
    assert 'evaluating cosine_pairs ...\ncosine_pairs accuracy=0.75000\n' in out
    assert shown in out  # the report printed in the docs is the one the code prints
    # and it reports next to a built-in kind
    ev = namespace['evaluator']
    (tf, tr), _ = tar_far
    assert isinstance(ev, BaseEvaluator) and ev.primary_value(result) == 0.75
    text = report([ev, tf], {ev.name: result, tf.name: tr})
    assert text.startswith(shown.strip()) and 'TAR @ FAR' in text
