"""facekit.engine: the runner (set-up, training loop, evaluation, testing) and what it is built from.

Importing it fills the OPTIMIZERS, LR_SCHEDULES and HOOKS registries (``import facekit`` does).
"""
from . import amp, checkpoint, dist, hooks, lr_schedules, optim  # noqa: F401
from .amp import LossScaleConfig, apply_amp, parse_loss_scale  # noqa: F401
from .checkpoint import find_latest_checkpoint  # noqa: F401
from .config_check import ConfigCheckError, check_config  # noqa: F401
from .hooks import CheckpointHook, EvalHook, Hook, LoggerHook, PlotCurvesHook, build_hooks  # noqa: F401
from .lr_schedules import ConstantLR, CosineLR, MultiStepLR, PolyLR, build_lr_schedule  # noqa: F401
from .optim import AdamW, SGD, build_optimizer, build_param_groups, get_lr, set_lr  # noqa: F401
from .runner import NonFiniteLossError, Runner  # noqa: F401
from .train_step import TrainStep  # noqa: F401
from .visualizer import Visualizer  # noqa: F401
