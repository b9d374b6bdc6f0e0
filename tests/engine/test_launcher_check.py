"""Several copies started by mpirun without msrun stop at once with one error line; one copy runs normally."""
import os
import os.path as osp
import subprocess
import sys

import pytest

from facekit.engine import dist
from facekit.engine.dist import LaunchError, check_launcher, mpi_launch_info

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
MPI_VARS = ('OMPI_COMM_WORLD_SIZE', 'OMPI_COMM_WORLD_RANK', 'PMI_SIZE', 'PMI_RANK', 'PMIX_RANK', 'MS_ROLE')


@pytest.mark.parametrize('env, copies', [
    ({'OMPI_COMM_WORLD_SIZE': '4', 'OMPI_COMM_WORLD_RANK': '1'}, '4 copies'),
    ({'OMPI_COMM_WORLD_SIZE': '2', 'OMPI_COMM_WORLD_RANK': '0'}, '2 copies'),
    ({'PMI_SIZE': '8', 'PMI_RANK': '0'}, '8 copies'),
    ({'PMIX_RANK': '3'}, 'several copies (this is rank 3)'),
])
def test_several_mpi_copies_are_refused(env, copies):
    with pytest.raises(LaunchError) as err:
        check_launcher(env, config='configs/x.py')
    msg = str(err.value)
    assert copies in msg and 'MS_ROLE' in msg
    n = env.get('OMPI_COMM_WORLD_SIZE') or env.get('PMI_SIZE') or 'N'
    assert f'bash tools/dist_train.sh configs/x.py {n}' in msg


@pytest.mark.parametrize('env', [
    {},
    {'OMPI_COMM_WORLD_SIZE': '1', 'OMPI_COMM_WORLD_RANK': '0'},       # mpirun -n 1: one process, runs normally
    {'PMI_SIZE': '1', 'PMI_RANK': '0'},
    {'PMIX_RANK': '0'},                                                 # rank 0 of an unknown count: the others refuse
    {'OMPI_COMM_WORLD_SIZE': '4', 'OMPI_COMM_WORLD_RANK': '2', 'MS_ROLE': 'MS_WORKER'},   # msrun under an MPI job
])
def test_one_copy_or_msrun_passes(env):
    check_launcher(env)


def test_launch_info_reads_each_launcher_and_refuses_garbage():
    assert mpi_launch_info({'OMPI_COMM_WORLD_SIZE': '4', 'OMPI_COMM_WORLD_RANK': '3'}) == (4, 3, 'OpenMPI mpirun')
    assert mpi_launch_info({'PMIX_RANK': '2'})[:2] == (None, 2)
    assert mpi_launch_info({'SLURM_NTASKS': '4'}) is None
    with pytest.raises(LaunchError, match="OMPI_COMM_WORLD_SIZE='four'"):
        mpi_launch_info({'OMPI_COMM_WORLD_SIZE': 'four'})


def test_init_dist_checks_the_real_environment(monkeypatch):
    monkeypatch.setattr(dist, '_INITIALIZED', [False])
    for var in MPI_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv('OMPI_COMM_WORLD_SIZE', '3')
    monkeypatch.setenv('OMPI_COMM_WORLD_RANK', '0')
    with pytest.raises(LaunchError, match='3 copies'):
        dist.init_dist(config='c.py')
    assert dist._INITIALIZED == [False]      # nothing was set up
    monkeypatch.setenv('OMPI_COMM_WORLD_SIZE', '1')
    assert dist.init_dist() == (0, 1)


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in MPI_VARS}
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    env.update(extra)
    return env


@pytest.mark.parametrize('tool, args', [
    ('train.py', ['configs/arcface/vit_synthetic_cpu.py']),
    ('test.py', ['configs/arcface/vit_synthetic_cpu.py', 'no_such.ckpt']),
])
def test_tools_stop_with_one_error_line_under_mpirun(tmp_path, tool, args):
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', tool)] + args + ['--work-dir', str(tmp_path)],
                          cwd=ROOT, env=_env(OMPI_COMM_WORLD_SIZE='2', OMPI_COMM_WORLD_RANK='1'),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), proc.stderr
    assert '2 copies started by OpenMPI mpirun' in lines[0]
    assert 'bash tools/dist_train.sh configs/arcface/vit_synthetic_cpu.py 2' in lines[0]
    assert not os.listdir(tmp_path)          # stopped before the runner made its log
