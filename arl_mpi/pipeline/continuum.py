"""Continuum imaging with major/minor cycles.

Data flow (see docs/architecture.md):

1. the partitions are grouped into one shard per worker, loaded on the workers and kept
   there (or streamed from the store when they would not fit, see ``--memory-check``);
2. the uv weight density is tree-summed and sent to the workers, which apply the weighting;
3. PSF and dirty image: one gridding task per shard, one partial image per worker, tree-summed;
4. major cycles (:func:`arl_mpi.pipeline.major_cycle.clean_loop`);
5. restore, write FITS/PNG/summary atomically; a checkpoint after every major cycle.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from arl_mpi.io.store import open_store
from arl_mpi.pipeline import minor
from arl_mpi.pipeline.common import (
    check_cell,
    dynamic_range,
    grid_spec,
    load_and_weight,
    output_frequencies,
    psf_and_dirty,
    summary_header,
)
from arl_mpi.pipeline.major_cycle import clean_loop, final_images
from arl_mpi.pipeline.outputs import make_image, write_image_set
from arl_mpi.pipeline.settings import Settings

log = logging.getLogger("arl_mpi.pipeline")


def run_continuum(client, s: Settings, store: str) -> dict[str, Any]:
    """The continuum pipeline on ``store``; writes the images and returns the summary."""
    t_start = time.perf_counter()
    index = open_store(store)
    grid = grid_spec(s, index)
    freqs_out = output_frequencies(index, s.channels_out)
    log.info("store %s: %d partitions, %d visibilities, %d channels, polarisations %s",
             index.path, len(index.partitions), index.nvis, index.meta.frequency.size, index.meta.polarisations)
    res = load_and_weight(client, s, index, grid)
    cell_warning = check_cell(s, float(res.counts.uvmax_wavelengths))
    psf, sumwt, dirty, beam, t_psf_dirty = psf_and_dirty(client, res.data, grid)
    log.info("dirty image: peak %.4g Jy/beam; beam %.3g x %.3g asec, pa %.1f deg",
             float(np.max(np.abs(dirty))), *(np.rad2deg(beam[:2]) * 3600), np.rad2deg(beam[2]))
    write_image_set(s.name, {"dirty": make_image(index, dirty, grid.cell, freqs_out, "JY/BEAM", stokes=s.stokes),
                             "psf": make_image(index, psf, grid.cell, freqs_out, "JY/BEAM", stokes=s.stokes)}, s.png)
    r = clean_loop(client, s, res.data, grid, freqs_out, psf, sumwt, dirty, beam,
                   checkpoint_name=s.name if s.checkpoint else None, resume=s.resume)
    del dirty, psf  # written; the result holds what the outputs need
    images = final_images(index, s, grid, freqs_out, r)
    files = write_image_set(s.name, images, s.png)
    peak, sigma = minor.residual_stats(r.residual, sumwt)
    return {
        **summary_header("continuum", client, s, index, res, beam),
        "sumwt": [float(x) for x in sumwt], "output_frequencies_hz": freqs_out.tolist(),
        "cycles": r.cycles, "stop_reason": r.stop_reason, "total_iterations": r.niter_done,
        "minor_cycle": r.minor_info,
        "final": {"residual_peak": peak, "residual_rms_mad": sigma,
                  "model_flux": float(r.model.sum() / r.model.shape[0]),
                  "image_peak": float(np.max(images["image"].data)),
                  "dynamic_range": dynamic_range(images["image"].data[:, 0], r.residual)},
        "warnings": [w for w in [cell_warning] if w],
        "timings_s": {**{k: round(v, 3) for k, v in res.timings.items()}, "psf_dirty_s": round(t_psf_dirty, 3),
                      **r.timings, "total_s": round(time.perf_counter() - t_start, 3)},
        "files": files,
    }
