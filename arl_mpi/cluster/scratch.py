"""The run's Dask scratch (spill) directory: one the user named, or a private per-run one.

Never Dask's shared ``/tmp/dask-scratch-space``, and never a directory left behind in the
user's working directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from arl_mpi.cluster.settings import ClusterSettings

log = logging.getLogger(__name__)

# The directory made below $SLURM_TMPDIR / $TMPDIR (kept: that place belongs to the job).
SCRATCH_NAME = "arl-scratch"
# The prefix of a per-run directory in the system temp directory (removed at the end).
RUN_PREFIX = "arl-scratch-"


def named_scratch(settings: ClusterSettings) -> str | None:
    """The scratch directory the user or the job's environment names, or None.

    In order: ``settings.scratch`` (``--scratch``), ``$ARL_SCRATCH``, then
    ``$SLURM_TMPDIR/arl-scratch`` or ``$TMPDIR/arl-scratch``. It is created (mode 0700 when
    new) and never removed by arl_mpi.

    Parameters
    ----------
    settings : ClusterSettings

    Returns
    -------
    str or None
    """
    d = settings.scratch or os.environ.get("ARL_SCRATCH")
    if not d:
        base = os.environ.get("SLURM_TMPDIR") or os.environ.get("TMPDIR")
        d = str(Path(base) / SCRATCH_NAME) if base else None
    if d:
        Path(d).mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


@contextlib.contextmanager
def run_scratch(settings: ClusterSettings) -> Iterator[str]:
    """The scratch directory of one run, for the length of the ``with`` block.

    :func:`named_scratch` when there is one; otherwise a new private directory
    ``arl-scratch-XXXXXXXX`` (mode 0700) in the system temp directory, removed with its
    contents when the block ends, also on an error. Under MPI every rank calls this and so
    creates and removes its own.

    Parameters
    ----------
    settings : ClusterSettings

    Yields
    ------
    str
        The directory's path.
    """
    named = named_scratch(settings)
    if named:
        yield named
        return
    d = tempfile.mkdtemp(prefix=RUN_PREFIX)  # mode 0700
    log.debug("scratch directory %s (removed at the end of the run)", d)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
