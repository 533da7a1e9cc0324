"""``--parallel-deconvolution MAXSIZE``: the minor cycle as sub-image tasks on the workers.

The numerics are :func:`arl_mpi.deconvolution.subimages.parallel_minor_cycle` (one global
stopping rule, niter shared out, mgain relative to the global peak, owned/work boxes so a
source on a border is cleaned by exactly one sub-image). This module only supplies its
``mapper``: each :func:`~arl_mpi.deconvolution.subimages.subimage_task` runs as a Dask task,
spread over the workers; the PSF cube enters the graph once, as one named node that every
task shares (sent once to each worker that needs it, and re-sent if a worker is lost).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import dask
import numpy as np

from arl_mpi.deconvolution.policy import CleanSettings
from arl_mpi.deconvolution.subimages import parallel_minor_cycle
from arl_mpi.pipeline.settings import Settings

#: Arrays at least this large become one shared graph node instead of a copy per task.
SHARED_BYTES = 1 << 16


def dask_mapper(client) -> Callable[[Callable[..., Any], list[tuple[Any, ...]]], list[Any]]:
    """A ``mapper(fn, arg_tuples)`` that runs every call as a task on the workers, in order.

    Task ``i`` prefers worker ``i mod n``; a large array that is the same object in several
    argument tuples (the PSF) is one graph node. Results come back in the order of the calls.
    """

    def mapper(fn: Callable[..., Any], arglist: list[tuple[Any, ...]]) -> list[Any]:
        shared: dict[int, Any] = {}

        def node(a: Any) -> Any:
            if isinstance(a, np.ndarray) and a.nbytes >= SHARED_BYTES:
                if id(a) not in shared:
                    shared[id(a)] = dask.delayed(a, name=f"subimage-shared-{uuid.uuid4().hex}")
                return shared[id(a)]
            return a

        workers = sorted(client.scheduler_info()["workers"])
        futs = []
        for i, args in enumerate(arglist):
            task = dask.delayed(fn, pure=False)(*[node(a) for a in args])
            where = {"workers": [workers[i % len(workers)]], "allow_other_workers": True} if workers else {}
            futs.append(client.compute(task, **where))
        return client.gather(futs)

    return mapper


def deconvolve_on_workers(client, s: Settings, residual: np.ndarray, psf: np.ndarray, sumwt: np.ndarray,
                          freqs_out: np.ndarray, cs: CleanSettings, niter_done: int) -> tuple[np.ndarray, dict]:
    """One minor cycle split into sub-images of at most ``s.parallel_deconvolution`` pixels a side,
    each cleaned as a task on a worker. Returns the model increment cube and the cycle's info
    (with ``where``: ``workers``, ``subimages``: the owned boxes ``[y0, y1, x0, x1]``)."""
    update, info = parallel_minor_cycle(residual, psf, cs, s.parallel_deconvolution, niter_done, sumwt=sumwt,
                                        freqs=freqs_out, nterms=s.fit_spectral_pol, mapper=dask_mapper(client))
    info = dict(info)
    info["where"] = "workers"
    return update, info
