"""tools/run_tests.py: the closing line counts from junit files, and a 'REQUIRED:' skip fails the run."""
import os.path as osp
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(ROOT, 'tools', 'run_tests.py')

# What pytest 8 writes (attribute order and the 'path:line: reason' text as in a real file).
JUNIT = '''<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests"><testsuite name="pytest" errors="{errors}"
 failures="0" skipped="3" tests="6" time="1.0"><testcase classname="tests.models.test_a" name="test_ok" time="0.1" />
<testcase classname="tests.models.test_a" name="test_ok2" time="0.1" />
<testcase classname="tests.models.test_a" name="test_ok3" time="0.1" />
<testcase classname="tests.models.test_dist" name="test_two_ranks" time="0.0"><skipped type="pytest.skip"
 message="REQUIRED: msrun launcher not found next to /usr/bin/python">tests/models/test_dist.py:30: REQUIRED: msrun
 launcher not found next to /usr/bin/python</skipped></testcase>
<testcase classname="tests.apis.test_export" name="test_parity[r18]" time="0.0"><skipped type="pytest.skip"
 message="{onnx_reason}">tests/apis/test_export.py:12: {onnx_reason}</skipped></testcase>
<testcase classname="tests.apis.test_gpu" name="test_gpu_only" time="0.0"><skipped type="pytest.skip"
 message="needs a GPU">tests/apis/test_gpu.py:3: needs a GPU</skipped></testcase>
</testsuite></testsuites>'''


def summarize(tmp_path, **fields):
    values = dict(errors=0, onnx_reason='REQUIRED: python module onnxruntime is not installed')
    values.update(fields)
    xml = tmp_path / 'run.xml'
    xml.write_text(JUNIT.format(**values))
    proc = subprocess.run([sys.executable, TOOL, '--summarize', str(xml)], capture_output=True, text=True,
                          timeout=60)
    return proc.returncode, proc.stdout.strip().splitlines()[-1]


def test_required_skips_fail_the_closing_line_and_are_named(tmp_path):
    rc, line = summarize(tmp_path)
    assert rc == 1
    assert line.startswith('tests: 3 passed, 0 failed, 3 skipped; FAILED: 2 skipped for a missing component')
    assert 'tests.models.test_dist::test_two_ranks (REQUIRED: msrun launcher not found' in line
    assert 'tests.apis.test_export::test_parity[r18] (REQUIRED: python module onnxruntime' in line
    assert 'test_gpu_only' not in line   # an ordinary skip stays an ordinary skip


def test_ordinary_skips_pass(tmp_path):
    rc, line = summarize(tmp_path, onnx_reason='no GPU here')
    assert (rc, line.split(';')[0]) == (1, 'tests: 3 passed, 0 failed, 3 skipped')   # msrun still missing
    xml = tmp_path / 'clean.xml'
    xml.write_text(JUNIT.format(errors=0, onnx_reason='no GPU').replace('REQUIRED: msrun', 'slow machine'))
    proc = subprocess.run([sys.executable, TOOL, '--summarize', str(xml)], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout.strip()) == (0, 'tests: 3 passed, 0 failed, 3 skipped')


def test_errors_count_as_failures(tmp_path):
    rc, line = summarize(tmp_path, errors=1)
    assert rc == 1 and line.startswith('tests: 2 passed, 1 failed, 3 skipped')


def test_a_real_pytest_run_with_a_required_skip_fails(tmp_path):
    # Through the runner itself: an explicit test path is one pytest run with a junit file.
    test = tmp_path / 'test_toy.py'
    test.write_text('import pytest\n\n\ndef test_ok():\n    pass\n\n\n'
                    "def test_needs_launcher():\n    pytest.skip('REQUIRED: msrun launcher not found (toy)')\n")
    proc = subprocess.run([sys.executable, TOOL, str(test)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    last = proc.stdout.strip().splitlines()[-1]
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    # the junit class name carries the file's dotted path from pytest's rootdir, which depends on where
    # the temporary folder lies relative to the checkout: compare the rest exactly
    prefix = 'tests: 1 passed, 0 failed, 1 skipped; FAILED: 1 skipped for a missing component CI must have: '
    assert last.startswith(prefix), last
    assert last.endswith('test_toy::test_needs_launcher (REQUIRED: msrun launcher not found (toy))'), last
