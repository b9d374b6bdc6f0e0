"""Run the test suite one tests/<area>/ folder per process, then print one closing line.

MindSpore caches compiled graphs per process and keys closures partly by object id; when many
models are built and freed in one process, a later test can hit a graph compiled for a dead
object ("parameters number of the function is 1, but the number of provided arguments is 2").
One process per area keeps areas independent, the way users run facekit.

    python tools/run_tests.py [pytest args]      # e.g. -m "not slow", -k losses
    python tools/run_tests.py tests/models/test_losses.py   # explicit paths: one pytest run
    python tools/run_tests.py --summarize a.xml b.xml       # closing line for junit files already written

A skip whose reason starts with 'REQUIRED:' (tests/required.py: the msrun launcher, onnx,
onnxruntime are missing) means CI lost tests it must run: the closing line counts and names
those skips and the run fails.
"""
import os
import os.path as osp
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


REQUIRED_PREFIX = 'REQUIRED:'


def _counts(xml_path):
    """(passed, failed, skipped, required) of a pytest junit file, or None when it is missing.

    required: 'classname::name (reason)' of each test skipped with a 'REQUIRED:' reason.
    """
    if not osp.isfile(xml_path):
        return None
    root = ET.parse(xml_path).getroot()
    suites = list(root) if root.tag == 'testsuites' else [root]
    passed = failed = skipped = 0
    required = []
    for suite in suites:
        total = int(suite.get('tests', 0))
        bad = int(suite.get('failures', 0)) + int(suite.get('errors', 0))
        skip = int(suite.get('skipped', 0))
        passed += total - bad - skip
        failed += bad
        skipped += skip
        for case in suite.iter('testcase'):
            for mark in case.findall('skipped'):
                # pytest writes the reason in 'message' (and again in the text, after 'path:line: ').
                reason = mark.get('message') or ''
                if not reason.startswith(REQUIRED_PREFIX):
                    text = (mark.text or '').strip()
                    reason = text[text.find(REQUIRED_PREFIX):] if REQUIRED_PREFIX in text else ''
                if reason.startswith(REQUIRED_PREFIX):
                    required.append(f"{case.get('classname')}::{case.get('name')} ({reason})")
    return passed, failed, skipped, required


def _closing(passed, failed, skipped, required):
    """The closing line, and whether it fails the run (independent of how pytest exited)."""
    line = f'tests: {passed} passed, {failed} failed, {skipped} skipped'
    if required:
        line += (f'; FAILED: {len(required)} skipped for a missing component CI must have: '
                 + '; '.join(required))
    return line, bool(failed or required or passed == 0)


def summarize(xml_paths):
    """Print the closing line for junit files already written; 0 when the suite passed."""
    totals = [0, 0, 0, []]
    for path in xml_paths:
        counts = _counts(path)
        if counts is None:
            print(f'== {path}: no such junit file', file=sys.stderr)
            return 2
        for i in range(3):
            totals[i] += counts[i]
        totals[3] += counts[3]
    line, bad = _closing(*totals)
    print(line)
    return 1 if bad else 0


def main(argv):
    if argv[:1] == ['--summarize']:
        return summarize(argv[1:])
    explicit = [a for a in argv if not a.startswith('-') and osp.exists(osp.join(ROOT, a.split('::')[0]))]
    tests_dir = osp.join(ROOT, 'tests')
    if explicit:
        groups = [[]]
    else:
        groups = [[osp.join('tests', d)] for d in sorted(os.listdir(tests_dir))
                  if osp.isdir(osp.join(tests_dir, d)) and not d.startswith(('_', '.'))]
    passed = failed = skipped = 0
    required = []
    broken = []
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for i, group in enumerate(groups):
            xml = osp.join(tmp, f'{i}.xml')
            cmd = [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', f'--junitxml={xml}'] + argv + group
            print(f"== {' '.join(group) or ' '.join(explicit)}", flush=True)
            rc = subprocess.call(cmd, cwd=ROOT)
            counts = _counts(xml)
            if counts is None or rc not in (0, 1, 5):
                broken.append(f"{' '.join(group)} (pytest exit {rc})")
                continue
            passed += counts[0]
            failed += counts[1]
            skipped += counts[2]
            required += counts[3]
            if rc == 1 and counts[1] == 0:
                broken.append(f"{' '.join(group)} (pytest exit 1)")
    minutes = (time.time() - start) / 60
    print(f'== all areas in {minutes:.1f} min' + (f"; broken runs: {', '.join(broken)}" if broken else ''))
    line, bad = _closing(passed, failed, skipped, required)
    print(line)
    return 1 if bad or broken else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
