"""`import facekit` alone fills every registry, the engine's included (a config names any of them)."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# one name per registry that the shipped configs use (configs/_base_, configs/arcface)
KNOWN = {
    'BACKBONES': 'iresnet50', 'HEADS': 'PartialFCHead', 'LOSSES': 'ArcFaceLoss', 'MODELS': 'FaceRecognizer',
    'DATASETS': 'MXFaceDataset', 'TRANSFORMS': 'RandomHorizontalFlip', 'EVALUATORS': 'VerificationEvaluator',
    'OPTIMIZERS': 'SGD', 'LR_SCHEDULES': 'PolyLR', 'HOOKS': 'CheckpointHook',
}

SCRIPT = '''
import json, sys
import facekit
from facekit import registry
names = [n for n in dir(registry) if isinstance(getattr(registry, n), registry.Registry)]
print(json.dumps({n: sorted(getattr(registry, n).module_dict) for n in names}))
'''


def test_import_facekit_fills_every_registry():
    # a fresh interpreter: nothing else (a test, facekit.engine) may have been imported first
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.run([sys.executable, '-c', SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    contents = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(contents) == set(KNOWN), 'a registry was added or removed: update KNOWN'
    for name, known in KNOWN.items():
        assert contents[name], f'{name} is empty after `import facekit`'
        assert known in contents[name], f'{known} is not in {name}: {contents[name]}'
