"""Distributed setup: data parallel through MindSpore's collective communication.

Launched by ``msrun`` (``tools/dist_train.sh``), each worker process sees ``MS_ROLE=MS_WORKER``
and ``MS_WORKER_NUM``; ``init_dist`` then calls ``mindspore.communication.init()`` and sets
data-parallel mode with gradient averaging. A plain ``python tools/train.py`` is rank 0 of 1.
"""
import os
import sys

import numpy as np

from ..utils.dist import get_rank, get_world_size, is_main_process, set_dist_state

__all__ = ['launched_distributed', 'init_dist', 'get_rank', 'get_world_size', 'is_main_process',
           'build_grad_reducer', 'all_reduce_mean', 'barrier', 'dist_info']

_INITIALIZED = [False]


def launched_distributed():
    """True inside a process started by msrun (or another launcher that sets MindSpore's cluster env).

    msrun starts the script in N worker processes (``MS_ROLE=MS_WORKER``) and in one scheduler
    process (``MS_ROLE=MS_SCHED``); both must call ``mindspore.communication.init()`` (the
    scheduler's call serves the cluster and does not return to train).
    """
    return os.environ.get('MS_ROLE') in ('MS_WORKER', 'MS_SCHED')


def init_dist(backend=None):
    """Initialise communication and data-parallel context; return (rank, world_size).

    Args:
        backend: communication backend name for ``mindspore.communication.init``
            (None: MindSpore's default for the device, e.g. gloo-like on CPU, NCCL on GPU, HCCL on Ascend).
    """
    if _INITIALIZED[0]:
        return get_rank(), get_world_size()
    if not launched_distributed():
        _INITIALIZED[0] = True
        set_dist_state(0, 1)
        return 0, 1
    import mindspore as ms
    from mindspore.communication import get_group_size, get_rank as ms_get_rank, init
    if backend:
        init(backend)
    else:
        init()
    if os.environ.get('MS_ROLE') == 'MS_SCHED':
        sys.exit(0)     # the scheduler has served the cluster; it has no rank and runs no work
    rank, world = ms_get_rank(), get_group_size()
    ms.reset_auto_parallel_context()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                 device_num=world)
    _INITIALIZED[0] = True
    set_dist_state(rank, world)
    return rank, world


def build_grad_reducer(parameters):
    """``nn.DistributedGradReducer`` averaging gradients over ranks, or None for one process."""
    if get_world_size() <= 1:
        return None
    from mindspore import nn
    return nn.DistributedGradReducer(parameters, mean=True, degree=get_world_size())


def all_reduce_mean(values):
    """Average a 1-d float array over ranks (host-side, for logging and metrics)."""
    values = np.asarray(values, dtype=np.float32)
    if get_world_size() <= 1:
        return values
    import mindspore as ms
    from mindspore import ops
    out = ops.AllReduce()(ms.Tensor(values)).asnumpy()
    return out / get_world_size()


def barrier():
    """Block until every rank reaches this point (no-op for one process)."""
    if get_world_size() <= 1:
        return
    all_reduce_mean(np.zeros(1, np.float32))


def dist_info():
    """``evaluation.DistInfo`` over the world group to share embedding work, or None for one process."""
    if get_world_size() <= 1:
        return None
    from ..evaluation import DistInfo
    return DistInfo.from_mindspore()
