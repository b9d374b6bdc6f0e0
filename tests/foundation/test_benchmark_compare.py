"""tools/benchmark.py --compare torch: argument handling and the median/ratio maths (never timing)."""
import importlib.util
import os.path as osp
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BENCH = osp.join(ROOT, 'tools', 'benchmarks')


def _load(name):
    spec = importlib.util.spec_from_file_location(f'facekit_bench_test_{name}', osp.join(BENCH, name + '.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


compare = _load('compare')


def test_interleave_alternates_sides_and_counts_rounds():
    calls = []
    times = compare.interleave({'a': lambda: calls.append('a'), 'b': lambda: calls.append('b')}, 3)
    assert calls == ['a', 'b', 'a', 'b', 'a', 'b']
    assert [len(v) for v in times.values()] == [3, 3]


def test_median_throughput_and_ratio():
    assert compare.median([3.0, 1.0, 2.0]) == 2.0
    assert compare.median([4.0, 1.0, 2.0, 3.0]) == 2.5
    assert compare.throughput(32, [4.0, 2.0, 8.0]) == 8.0    # 32 samples / 4 s median
    assert compare.ratio(6.0, 4.0) == 1.5
    assert compare.ratio(6.0, 0.0) is None
    assert compare.fmt_ratio(1.5) == '1.50x' and compare.fmt_ratio(None) == '-'


def test_torch_name_maps_and_names_the_known_ones():
    assert compare.torch_name('iresnet50') == 'r50' and compare.torch_name('mobilefacenet') == 'mbf'
    with pytest.raises(ValueError, match='iresnet18'):
        compare.torch_name('resnet18')


def test_peak_rss_reports_growth_or_none():
    with compare.PeakRSS() as p:
        block = bytearray(64 * 2 ** 20)
        block[::4096] = b'\1' * len(block[::4096])   # touch every page
    assert p.growth_mb is None or p.growth_mb >= 60


def test_train_compare_parses_and_rejects_config():
    train = _load('train')
    args = train.parse_args(['--compare', 'torch', '--backbone', 'vit_t', 'iresnet18'])
    assert args.compare == 'torch' and args.backbone == ['vit_t', 'iresnet18']
    with pytest.raises(SystemExit):
        train.parse_args(['--compare', 'tensorflow'])
    assert train.main(['--compare', 'torch', '--config', 'configs/x.py']) == 2
    assert train.main(['--compare', 'torch', '--backbone', 'no_such_net']) == 2


@pytest.mark.parametrize('tool', ['train', 'infer'])
def test_compare_without_torch_exits_2_with_a_message(tool, monkeypatch, capsys):
    module = _load(tool)
    monkeypatch.setitem(sys.modules, 'torch', None)   # import torch -> ImportError
    assert module.main(['--compare', 'torch']) == 2
    assert 'needs PyTorch' in capsys.readouterr().err


op_profile = _load('op_profile')


def test_op_profile_reads_mindspores_op_type_csv_and_tabulates_per_step(tmp_path):
    # The header of MindSpore 2.10's FRAMEWORK/cpu_op_type_info_0.csv; totals over 2 profiled steps.
    d = tmp_path / 'vm_1_ascend_ms' / 'FRAMEWORK'
    d.mkdir(parents=True)
    (d / 'cpu_op_type_info_0.csv').write_text(
        'op_type,type_occurrences,execution_frequency(per-step),total_compute_time,avg_time(ms),percent\n'
        'MatMul,6,3,300.0,50.0,0.75\n'
        'StridedSlice,4,2,80.0,20.0,0.2\n'
        'Add,10,5,20.0,2.0,0.05\n')
    rows = op_profile.read_mindspore_op_types(str(tmp_path))
    assert rows == [('MatMul', 300.0, 6), ('StridedSlice', 80.0, 4), ('Add', 20.0, 10)]
    table = op_profile.per_step_table(rows, steps=2, top=2).splitlines()
    # per step: 150 ms of 200 -> 75.0%, 40 ms -> 20.0%; calls halved; Add cut by top=2; total 200 ms/step
    assert table[2] == '| MatMul | 150.0 | 75.0% | 3 |'
    assert table[3] == '| StridedSlice | 40.0 | 20.0% | 2 |'
    assert table[4] == '| (all ops) | 200.0 | 100% | |'
    assert len(table) == 5


def test_op_profile_without_a_profile_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        op_profile.read_mindspore_op_types(str(tmp_path))
