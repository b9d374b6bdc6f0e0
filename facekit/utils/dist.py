"""The one place that knows this process's rank and the number of ranks.

Library code (models, datasets, evaluation) reads the rank from here and never asks
``mindspore.communication`` itself; whoever initialises communication (``facekit.engine.dist.init_dist``,
or a script that calls ``mindspore.communication.init()`` directly) reports the result with
``set_dist_state``. Until then the process is rank 0 of 1.
"""

__all__ = ['get_rank', 'get_world_size', 'is_main_process', 'set_dist_state']

_STATE = {'rank': 0, 'world_size': 1}


def set_dist_state(rank, world_size):
    """Record this process's ``rank`` in ``world_size`` ranks (after communication is initialised)."""
    rank, world_size = int(rank), int(world_size)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f'set_dist_state: rank {rank} is outside world_size {world_size}')
    _STATE.update(rank=rank, world_size=world_size)


def get_rank():
    """This process's rank (0 without distributed set-up)."""
    return _STATE['rank']


def get_world_size():
    """Number of ranks (1 without distributed set-up)."""
    return _STATE['world_size']


def is_main_process():
    """True on rank 0, the rank that writes logs and files."""
    return _STATE['rank'] == 0
