"""Run the test suite one tests/<area>/ folder per process, then print one closing line.

MindSpore caches compiled graphs per process and keys closures partly by object id; when many
models are built and freed in one process, a later test can hit a graph compiled for a dead
object ("parameters number of the function is 1, but the number of provided arguments is 2").
One process per area keeps areas independent, the way users run facekit.

    python tools/run_tests.py [pytest args]      # e.g. -m "not slow", -k losses
    python tools/run_tests.py tests/models/test_losses.py   # explicit paths: one pytest run
"""
import os
import os.path as osp
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _counts(xml_path):
    if not osp.isfile(xml_path):
        return None
    suite = ET.parse(xml_path).getroot()
    if suite.tag == 'testsuites':
        suite = suite[0]
    total = int(suite.get('tests', 0))
    failed = int(suite.get('failures', 0)) + int(suite.get('errors', 0))
    skipped = int(suite.get('skipped', 0))
    return total - failed - skipped, failed, skipped


def main(argv):
    explicit = [a for a in argv if not a.startswith('-') and osp.exists(osp.join(ROOT, a.split('::')[0]))]
    tests_dir = osp.join(ROOT, 'tests')
    if explicit:
        groups = [[]]
    else:
        groups = [[osp.join('tests', d)] for d in sorted(os.listdir(tests_dir))
                  if osp.isdir(osp.join(tests_dir, d)) and not d.startswith(('_', '.'))]
    passed = failed = skipped = 0
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
            if rc == 1 and counts[1] == 0:
                broken.append(f"{' '.join(group)} (pytest exit 1)")
    minutes = (time.time() - start) / 60
    print(f'== all areas in {minutes:.1f} min' + (f"; broken runs: {', '.join(broken)}" if broken else ''))
    print(f'tests: {passed} passed, {failed} failed, {skipped} skipped')
    if failed or broken or passed == 0:
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
