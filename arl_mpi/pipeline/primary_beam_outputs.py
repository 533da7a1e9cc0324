"""``--apply-primary-beam``: the beam and the beam-corrected image, with WSClean's file names.

After a run's images are written, :func:`add_primary_beam_outputs` (called from
:func:`arl_mpi.pipeline.outputs.write_summary`) reads ``PREFIX-image.fits`` (``PREFIX-I-image.fits``
of a ``--pol`` run), evaluates the Stokes-I beam of the store's telescope
(:mod:`arl_mpi.imaging.primary_beam`) and writes, each atomically:

- one output channel: ``PREFIX-beam-0.fits`` (the Stokes-I beam: WSClean's Mueller element 0) and
  ``PREFIX-image-pb.fits`` (the image divided by the beam, NaN where the beam is below
  ``--primary-beam-limit``);
- ``--channels-out N > 1``: ``PREFIX-000K-beam-0.fits`` and ``PREFIX-000K-image-pb.fits`` for each
  channel K, and ``PREFIX-MFS-beam-0.fits`` / ``PREFIX-MFS-image-pb.fits`` (the mean of the channel
  beams; the MFS image is the mean of the channel images, divided by that beam).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from arl_mpi.errors import InputError
from arl_mpi.imaging.gridspec import output_channel_map
from arl_mpi.imaging.primary_beam import airy_beam, beam_model_for, everybeam_beam, pb_correct
from arl_mpi.io.fits import read_fits, write_fits
from arl_mpi.io.store import StoreIndex, open_store
from arl_mpi.models import Image

log = logging.getLogger(__name__)


def check_primary_beam(index: StoreIndex, settings: dict[str, Any]) -> str:
    """The beam model for the store (``"everybeam"`` / ``"airy"``); one-line errors for what is missing."""
    try:
        model = beam_model_for(index.meta.telescope)
    except InputError as e:
        raise InputError(f"{index.path}: {e}") from None
    if model == "everybeam":
        prov = index.meta.provenance
        ms = prov.get("ingested_from")
        if prov.get("format") != "MS" or not ms or not Path(ms).is_dir():
            raise InputError(f"{index.path}: telescope {index.meta.telescope}: the EveryBeam primary beam needs "
                             "the MeasurementSet the store was ingested from (the store's provenance has none "
                             f"that exists: {ms!r})")
        from arl_mpi.imaging.primary_beam import load_everybeam

        load_everybeam(ms, index.meta.telescope, settings.get("mwa_path"))  # --mwa-path, the extra
    return model


def primary_beam(index: StoreIndex, settings: dict[str, Any], nx: int, ny: int, cell: float,
                 nout: int) -> tuple[np.ndarray, str]:  # fmt: skip
    """``([nout, ny, nx] Stokes-I beam, model name)`` for the store's telescope."""
    model = check_primary_beam(index, settings)
    f = index.meta.frequency
    oc = output_channel_map(np.arange(f.size), nout, f.size)
    chans = [f[oc == o] for o in range(nout)]
    if model == "airy":
        return airy_beam(nx, ny, cell, chans, index.meta.configuration.diameter), model
    pc = index.meta.phase_centre.icrs
    beam = everybeam_beam(index.meta.provenance["ingested_from"], index.meta.telescope, nx, ny, cell,
                          float(pc.ra.rad), float(pc.dec.rad), [float(c.mean()) for c in chans],
                          mwa_path=settings.get("mwa_path"))
    return beam, model


def _plane(img: Image, data: np.ndarray, freq: float | None, bunit: str) -> Image:
    wcs = img.wcs.deepcopy()
    if freq is not None:
        wcs.wcs.crval[2], wcs.wcs.crpix[2] = freq, 1.0
    return Image(data=np.asarray(data, dtype=np.float64)[None, None], wcs=wcs, bunit=bunit, beam=img.beam,
                 history=list(img.history))


def write_primary_beam_images(prefix: str, index: StoreIndex, settings: dict[str, Any]) -> dict[str, Any]:
    """Write the beam and the corrected image(s) of ``PREFIX-image.fits``; returns the summary block."""
    img = read_fits(f"{prefix}-image.fits")
    nout, _, ny, nx = img.data.shape
    cell = float(np.deg2rad(abs(img.wcs.wcs.cdelt[0])))
    beam, model = primary_beam(index, settings, nx, ny, cell, nout)
    limit = float(settings.get("primary_beam_limit", 0.005))
    planes = img.data[:, 0]
    files: list[str] = []
    if nout == 1:
        files.append(str(write_fits(f"{prefix}-beam-0.fits", _plane(img, beam[0], None, ""))))
        files.append(str(write_fits(f"{prefix}-image-pb.fits",
                                    _plane(img, pb_correct(planes[0], beam[0], limit), None, img.bunit))))
    else:
        freqs = img.wcs.wcs.crval[2] + (np.arange(nout) + 1 - img.wcs.wcs.crpix[2]) * img.wcs.wcs.cdelt[2]
        for o in range(nout):
            p = f"{prefix}-{o:04d}"
            files.append(str(write_fits(f"{p}-beam-0.fits", _plane(img, beam[o], freqs[o], ""))))
            files.append(str(write_fits(f"{p}-image-pb.fits",
                                        _plane(img, pb_correct(planes[o], beam[o], limit), freqs[o], img.bunit))))
        mfs_beam = beam.mean(axis=0)
        files.append(str(write_fits(f"{prefix}-MFS-beam-0.fits", _plane(img, mfs_beam, float(freqs.mean()), ""))))
        files.append(str(write_fits(f"{prefix}-MFS-image-pb.fits",
                                    _plane(img, pb_correct(planes.mean(axis=0), mfs_beam, limit),
                                           float(freqs.mean()), img.bunit))))
    log.info("primary beam (%s, limit %g): %s", model, limit, ", ".join(Path(f).name for f in files))
    return {"model": model, "limit": limit, "telescope": index.meta.telescope, "files": files}


def add_primary_beam_outputs(prefix: str, summary: dict[str, Any]) -> dict[str, Any]:
    """With ``--apply-primary-beam`` in ``summary["settings"]``: write the beam outputs, add them to the summary.

    A run that makes no restored image (``--predict``) is returned unchanged.
    """
    settings = summary.get("settings") or {}
    if not settings.get("apply_primary_beam") or settings.get("predict") or "store" not in summary:
        return summary
    pols = summary.get("polarisations") or []
    image_prefix = f"{prefix}-I" if len(pols) > 1 and "I" in pols else prefix
    if not Path(f"{image_prefix}-image.fits").is_file():
        log.warning("--apply-primary-beam: no %s-image.fits to correct", image_prefix)
        return summary
    block = write_primary_beam_images(image_prefix, open_store(summary["store"]), settings)
    out = dict(summary)
    out["primary_beam"] = block
    out["files"] = [*out.get("files", []), *block["files"]]
    return out
