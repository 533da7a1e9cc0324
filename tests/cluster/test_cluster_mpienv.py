"""MPI launch detection, cores per rank and thread pinning (arl_mpi.mpienv), in one place."""

from __future__ import annotations

import os

import pytest
from helpers import REPO

from arl_mpi import mpienv


@pytest.fixture
def clean_env(monkeypatch):
    for k in (*mpienv.MPI_LAUNCH_VARS, *mpienv.SLURM_TASK_VARS, *mpienv.CORES_VARS,
              *mpienv.THREAD_VARS):  # fmt: skip
        monkeypatch.delenv(k, raising=False)
    return monkeypatch


@pytest.mark.parametrize("var", mpienv.MPI_LAUNCH_VARS)
def test_each_launcher_variable_detected(clean_env, var):
    assert not mpienv.launched_by_mpi()
    clean_env.setenv(var, "0")
    assert mpienv.launched_by_mpi()


def test_slurm_task_alone_is_not_an_mpi_launch(clean_env):
    clean_env.setenv("SLURM_PROCID", "0")
    assert not mpienv.launched_by_mpi()
    assert mpienv.mpi_rank_size() == (0, 1)


def test_cores_per_rank_order(clean_env):
    assert mpienv.cores_per_rank() == 1
    clean_env.setenv("OMP_NUM_THREADS", "3")
    assert mpienv.cores_per_rank() == 3
    clean_env.setenv("ARL_THREADS", "junk")  # not a positive integer: skipped
    assert mpienv.cores_per_rank() == 3
    clean_env.setenv("SLURM_CPUS_PER_TASK", "8")
    assert mpienv.cores_per_rank() == 8


def test_pinning_only_under_a_launcher_and_keeps_user_values(clean_env):
    assert mpienv.pin_threads_for_launch() is False
    assert not any(k in os.environ for k in mpienv.THREAD_VARS)
    clean_env.setenv("PMI_RANK", "2")
    clean_env.setenv("SLURM_CPUS_PER_TASK", "4")
    clean_env.setenv("MKL_NUM_THREADS", "2")  # set by the user: kept
    assert mpienv.pin_threads_for_launch() is True
    assert {k: os.environ[k] for k in mpienv.THREAD_VARS} == {
        "OMP_NUM_THREADS": "4", "OPENBLAS_NUM_THREADS": "4", "MKL_NUM_THREADS": "2",
        "NUMEXPR_NUM_THREADS": "4", "DUCC0_NUM_THREADS": "4",
    }  # fmt: skip
    mpienv.pin_numeric_threads(1)  # the cluster's explicit pinning overrides
    assert all(os.environ[k] == "1" for k in mpienv.THREAD_VARS)


def test_mpienv_is_the_bottom_layer():
    """Module level, mpienv imports only the standard library (nothing of arl_mpi, no numpy,
    no mpi4py), so ``arl_mpi/__init__.py`` can use it before numpy is first imported."""
    import ast

    tree = ast.parse((REPO / "arl_mpi" / "mpienv.py").read_text())
    top = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            top.add((node.module or "").split(".")[0])
    assert top <= {"__future__", "os", "collections"}, top
