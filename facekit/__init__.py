"""facekit: face-recognition training and evaluation on MindSpore."""
import os

# MindSpore's bundled oneDNN picks a reference-speed convolution on AVX-512 CPUs
# (measured 0.4-0.5 vs 25-90 GFLOP/s). The variable is read once, before the first
# convolution, so it must be set before mindspore runs anything. A value the user
# exported wins.
os.environ.setdefault('ONEDNN_MAX_CPU_ISA', 'AVX2')

__version__ = '0.1.0'

from . import registry  # noqa: E402,F401
from .config import Config  # noqa: E402,F401
from .registry import (BACKBONES, DATASETS, EVALUATORS, HEADS, HOOKS, LOSSES,  # noqa: E402,F401
                       LR_SCHEDULES, MODELS, OPTIMIZERS, TRANSFORMS, Registry, build_from_cfg)
from . import models, datasets, evaluation, engine  # noqa: E402,F401  (fill every registry)
