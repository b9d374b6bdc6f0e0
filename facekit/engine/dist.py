"""Distributed setup: data parallel through MindSpore's collective communication.

Launched by ``msrun`` (``tools/dist_train.sh``), each worker process sees ``MS_ROLE=MS_WORKER``
and ``MS_WORKER_NUM``; ``init_dist`` then calls ``mindspore.communication.init()`` and sets
data-parallel mode with gradient averaging. A plain ``python tools/train.py`` is rank 0 of 1.

Started by ``mpirun -n N`` instead (N > 1, no msrun environment), every copy would see no cluster
and train alone on rank 0 of 1: N silent copies of the same run. ``init_dist`` refuses that with
``LaunchError`` (one ``error:`` line from the tools) before anything is built.
"""
import os
import sys

import numpy as np

from ..utils.cli import shown_path
from ..utils.dist import get_rank, get_world_size, is_main_process, set_dist_state

__all__ = ['LaunchError', 'mpi_launch_info', 'check_launcher', 'launched_distributed', 'init_dist', 'get_rank',
           'get_world_size', 'is_main_process', 'build_grad_reducer', 'all_reduce_mean', 'barrier', 'dist_info']

_INITIALIZED = [False]

# (size variable, rank variable, launcher) of the MPI launchers whose copies run without msrun.
# PMIx sets a rank but no world size: a rank above 0 still proves there are several copies.
_MPI_ENV = (('OMPI_COMM_WORLD_SIZE', 'OMPI_COMM_WORLD_RANK', 'OpenMPI mpirun'),
            ('PMI_SIZE', 'PMI_RANK', 'an MPI launcher (PMI)'),
            (None, 'PMIX_RANK', 'an MPI launcher (PMIx)'))


class LaunchError(RuntimeError):
    """The process was started in a way facekit cannot train with (e.g. N copies by mpirun)."""


def mpi_launch_info(environ=None):
    """``(copies, rank, launcher)`` when an MPI launcher started this process, else None.

    ``copies`` is the world size the launcher announces (None when it announces none: PMIx).
    """
    environ = os.environ if environ is None else environ
    for size_var, rank_var, launcher in _MPI_ENV:
        size = environ.get(size_var) if size_var else None
        rank = environ.get(rank_var)
        if size is None and rank is None:
            continue
        try:
            size = int(size) if size is not None else None
            rank = int(rank) if rank is not None else None
        except ValueError:
            raise LaunchError(f'{size_var}={environ.get(size_var)!r} / {rank_var}={environ.get(rank_var)!r}: '
                              f'{launcher} set a world size or rank that is not an integer') from None
        return size, rank, launcher
    return None


def check_launcher(environ=None, config=None):
    """Raise ``LaunchError`` when several copies run without msrun's environment (``MS_ROLE``).

    Args:
        environ: the environment to read (default ``os.environ``).
        config: the config path, shown in the suggested command.
    """
    environ = os.environ if environ is None else environ
    if environ.get('MS_ROLE'):
        return
    info = mpi_launch_info(environ)
    if info is None:
        return
    copies, rank, launcher = info
    if copies is not None and copies <= 1:
        return
    if copies is None and not rank:
        return      # PMIx rank 0 of an unknown number: the copies with a rank above 0 refuse
    n = copies if copies is not None else 'N'
    what = f'{copies} copies' if copies is not None else f'several copies (this is rank {rank})'
    cfg = shown_path(config) if config else 'CONFIG'
    raise LaunchError(f'this process is one of {what} started by {launcher} without msrun (MS_ROLE is not set): '
                      f'each copy would train alone as rank 0 of 1. facekit trains data-parallel through '
                      f'msrun: run `bash tools/dist_train.sh {cfg} {n}` on one machine, or msrun on every node '
                      f'for several machines (docs/distributed.md)')


def launched_distributed():
    """True inside a process started by msrun (or another launcher that sets MindSpore's cluster env).

    msrun starts the script in N worker processes (``MS_ROLE=MS_WORKER``) and in one scheduler
    process (``MS_ROLE=MS_SCHED``); both must call ``mindspore.communication.init()`` (the
    scheduler's call serves the cluster and does not return to train).
    """
    return os.environ.get('MS_ROLE') in ('MS_WORKER', 'MS_SCHED')


def init_dist(backend=None, config=None):
    """Initialise communication and data-parallel context; return (rank, world_size).

    Args:
        backend: communication backend name for ``mindspore.communication.init``
            (None: MindSpore's default for the device, e.g. gloo-like on CPU, NCCL on GPU, HCCL on Ascend).
        config: the config path, named in the ``LaunchError`` of ``check_launcher``.
    Raises:
        LaunchError: the process is one of several copies started by mpirun without msrun.
    """
    if _INITIALIZED[0]:
        return get_rank(), get_world_size()
    check_launcher(config=config)
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
