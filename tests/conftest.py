import os
import sys

# facekit sets this at import; tests may touch mindspore first, so set it here too.
os.environ.setdefault('ONEDNN_MAX_CPU_ISA', 'AVX2')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

