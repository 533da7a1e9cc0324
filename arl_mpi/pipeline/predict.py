"""``--predict``: model visibilities from a model image (WSClean's ``-predict``).

The model is ``PREFIX-model.fits`` (what an imaging run with the same ``--name`` wrote), or
the FITS image given by ``--predict-model``; its WCS must be the image's (``--size``,
``--scale``, the store's phase centre, SIN projection), or the run stops with a one-line
error. A model with several frequency planes predicts each ``--channels-out`` block from its
own plane (as an imaging run with that many output channels wrote it); one plane predicts every
channel. Each partition is predicted on a worker (ducc0 degridding at ``--epsilon``) and
written to ``PREFIX-predict.store``: a store with the input's partitions, uvw, weights and
flags, whose visibilities are the model's correlations (Stokes I: XX = YY = I, XY = YX = 0;
RR = LL = I for circular feeds; flagged samples 0, as WSClean writes them). With
``--write-model-data`` and an MS ``--vis``, the model visibilities are also written into the
MS's MODEL_DATA column (added when missing) - the only case in which arl_mpi writes into its
input, and only when asked. Checked against WSClean 3.1 ``-predict`` on the MWA snapshot
(docs/validation.md).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from astropy.coordinates import SkyCoord
from dask import delayed

from arl_mpi.errors import InputError
from arl_mpi.graphs import shard_graphs as graphs
from arl_mpi.imaging.gridding import predict
from arl_mpi.imaging.gridspec import output_channel_map
from arl_mpi.io.atomic import remove_tree, temporary_sibling
from arl_mpi.io.fits import read_fits
from arl_mpi.io.store import (
    StoreIndex,
    check_new_store,
    create_store,
    finalize_store,
    open_store,
    read_partition,
    store_disk_full,
    write_partition,
)
from arl_mpi.models import Image
from arl_mpi.pipeline.settings import Settings

log = logging.getLogger("arl_mpi.pipeline")

__all__ = ["model_path", "predict_store_path", "check_model_wcs", "stokes_i_correlations", "precheck", "run_predict"]


def model_path(s: Settings) -> Path:
    """The model image of ``--predict``: ``--predict-model``, else ``PREFIX-model.fits``."""
    return Path(s.predict_model) if s.predict_model else Path(f"{s.name}-model.fits")


def predict_store_path(prefix: str) -> Path:
    """Where ``--predict`` writes the model visibilities: ``PREFIX-predict.store``."""
    return Path(f"{prefix}-predict.store")


def check_model_wcs(img: Image, path: str | Path, npix_x: int, npix_y: int, cell: float,
                    phase_centre: SkyCoord, tol_pix: float = 1e-3) -> None:
    """Refuse a model image whose WCS is not the image's.

    Parameters
    ----------
    img : the model image; path : its file (for the message)
    npix_x, npix_y, cell : the image geometry (``--size``, ``--scale`` in radians)
    phase_centre : the store's phase centre
    tol_pix : allowed difference of the reference position and pixel size, in pixels

    Raises
    ------
    InputError
        One line naming the file and what differs.
    """
    w = img.wcs.wcs
    ny, nx = img.data.shape[2:]
    ctype = [c.upper() for c in w.ctype]
    problems = []
    if (nx, ny) != (npix_x, npix_y):
        problems.append(f"size {nx}x{ny} (the image is {npix_x}x{npix_y})")
    if not (ctype[0].endswith("-SIN") and ctype[1].endswith("-SIN")):
        problems.append(f"projection {ctype[0]}/{ctype[1]} (the image is SIN)")
    cdelt = np.deg2rad(np.asarray(w.cdelt[:2], dtype=np.float64))
    if not (np.isclose(-cdelt[0], cell, rtol=tol_pix / max(npix_x, 1), atol=0)
            and np.isclose(cdelt[1], cell, rtol=tol_pix / max(npix_y, 1), atol=0)):
        problems.append(f"pixel {np.rad2deg(cdelt[0]) * 3600:.6g} x {np.rad2deg(cdelt[1]) * 3600:.6g} asec "
                        f"(the image has -{np.rad2deg(cell) * 3600:.6g} x {np.rad2deg(cell) * 3600:.6g})")
    if not problems:
        ref = SkyCoord(ra=w.crval[0], dec=w.crval[1], unit="deg", frame="icrs")
        off = float(ref.separation(phase_centre.icrs).rad)
        crpix_ok = np.allclose(np.asarray(w.crpix[:2]) - 1.0, [npix_x // 2, npix_y // 2], atol=tol_pix, rtol=0)
        if off > tol_pix * cell or not crpix_ok:
            problems.append(f"reference {ref.ra.deg:.6f}, {ref.dec.deg:.6f} deg at pixel {w.crpix[0]:g}, "
                            f"{w.crpix[1]:g} (the image has the phase centre {phase_centre.icrs.ra.deg:.6f}, "
                            f"{phase_centre.icrs.dec.deg:.6f} at pixel {npix_x // 2 + 1}, {npix_y // 2 + 1})")
    stokes = [int(round(v)) for v in img.wcs.sub([4]).pixel_to_world_values(np.arange(img.data.shape[1]))]
    if stokes != [1]:
        problems.append(f"Stokes codes {stokes} (only a Stokes I model can be predicted)")
    if problems:
        raise InputError(f"{path}: model WCS does not match the image: {'; '.join(problems)}")


def stokes_i_correlations(vis_i: np.ndarray, labels: list[str]) -> np.ndarray:
    """Correlations ``[nrow, nchan, npol]`` of Stokes-I visibilities ``[nrow, nchan]``.

    XX = YY = RR = LL = I; the cross hands are 0 (see ``imaging/stokes.py``: XX = I + Q, ...).
    """
    out = np.zeros(vis_i.shape + (len(labels),), dtype=np.complex64)
    for k, p in enumerate(labels):
        if p.upper() in ("XX", "YY", "RR", "LL", "I"):
            out[..., k] = vis_i
    return out


def predict_partition(store: str, out: str, pid: int, model: np.ndarray, cell: float, gridder: dict,
                      nchan_total: int) -> Any:
    """On a worker: predict partition ``pid`` of ``store`` from ``model`` ``[nplane, ny, nx]``
    (Jy/pixel) and write it as partition ``pid`` of ``out``; returns its PartitionInfo."""
    index = open_store(store)
    v = read_partition(index, pid)
    info = index.partitions[pid]
    nplane = model.shape[0]
    oc = output_channel_map(info.chan_start + np.arange(v.frequency.size), nplane, nchan_total)
    vis_i = np.zeros(v.vis.shape[:2], dtype=np.complex128)
    for o in np.unique(oc):
        sel = oc == o
        if v.uvw.shape[0] and np.any(model[o]):
            vis_i[:, sel] = predict(v.uvw, v.frequency[sel], model[o], cell, **gridder)
    corr = stokes_i_correlations(vis_i, list(v.polarisations))
    corr[np.asarray(v.flags, dtype=bool)] = 0  # flagged samples: 0, as WSClean's -predict writes them
    pv = dataclasses.replace(v, vis=corr, meta={})
    return write_partition(out, pv, pid=pid, time_block=info.time_block, freq_block=info.freq_block,
                           chan_start=info.chan_start)


def predict_store(client, s: Settings, index: StoreIndex, model: np.ndarray, out: Path) -> StoreIndex:
    """Predict every partition of ``index`` on the workers into the new store ``out``.

    The store is written under a temporary name beside ``out`` and renamed when finished: a
    failed predict (a full disk: one line naming ``out``) leaves nothing under ``out``.
    """
    if (out / "index.h5").exists():
        raise InputError(f"{out}: exists (a store is never overwritten); remove it or choose another --name")
    check_new_store(out, unfinished=False)
    tmp = temporary_sibling(out)
    kw = {"epsilon": s.epsilon, "nthreads": s.gridder_threads or 1, "do_wgridding": s.w_correction, "double": s.double}
    m = graphs.constant(np.ascontiguousarray(model, dtype=np.float64 if s.double else np.float32))
    try:
        create_store(tmp)
        tasks = [delayed(predict_partition, pure=True)(str(index.path), str(tmp), pid, m, s.cell_rad, kw,
                                                              int(index.meta.frequency.size))
                 for pid in range(len(index.partitions))]
        infos = client.gather(client.compute(tasks))
        meta = dataclasses.replace(index.meta, provenance={
            **index.meta.provenance, "predicted_from": str(model_path(s)), "predicted_store_of": str(index.path)})
        finalize_store(tmp, meta, list(infos))
        if out.is_dir():  # an empty directory left for it (check_new_store allows one)
            shutil.rmtree(out)
        os.rename(tmp, out)
    except BaseException as e:
        remove_tree(tmp)  # with the partitions other tasks are still writing
        full = store_disk_full(out, e)
        if full is not None:
            raise full from None
        raise
    return open_store(out)


def precheck(s: Settings) -> None:
    """Before any cluster starts: the model exists, is a FITS image and matches ``--size``/``--scale``
    (and the phase centre, when ``--vis`` is a finished store whose index can be read now)."""
    path = model_path(s)
    img = read_fits(path)
    centre = None
    if s.vis and (Path(s.vis) / "index.h5").is_file():
        centre = open_store(s.vis).meta.phase_centre
    if centre is None:  # an MS/UVFITS: the phase centre is checked once it is ingested
        w = img.wcs.wcs
        centre = SkyCoord(ra=w.crval[0], dec=w.crval[1], unit="deg", frame="icrs")
    check_model_wcs(img, path, s.size[0], s.size[1], s.cell_rad, centre)


def run_predict(client, s: Settings, store: str) -> dict[str, Any]:
    """The ``--predict`` run: read and check the model, predict, write the outputs; the summary."""
    t0 = time.perf_counter()
    index = open_store(store)
    path = model_path(s)
    img = read_fits(path)
    check_model_wcs(img, path, s.size[0], s.size[1], s.cell_rad, index.meta.phase_centre)
    nplane = img.data.shape[0]
    if nplane > index.meta.frequency.size:
        raise InputError(f"{path}: {nplane} frequency planes but {index.path} has {index.meta.frequency.size} "
                         "channels")
    model = img.data[:, 0]
    out = predict_store_path(s.name)
    pred = predict_store(client, s, index, model, out)
    log.info("predicted %d partitions from %s into %s", len(pred.partitions), path, out)
    files = [str(out)]
    ms = index.meta.provenance.get("ingested_from")
    if s.write_model_data:
        if index.meta.provenance.get("format") != "MS" or not ms:
            raise InputError(f"write-model-data: {index.path} was not ingested from a MeasurementSet")
        from arl_mpi.io.ms import write_model_data

        write_model_data(ms, pred, field=int(index.meta.provenance.get("field", 0)),
                         spw=int(index.meta.provenance.get("spw", 0)))
        files.append(f"{ms}:MODEL_DATA")
    return {"pipeline": "predict", "store": str(index.path), "settings": s.as_dict(), "model": str(path),
            "model_flux_jy": float(model.sum() / nplane), "partitions": len(index.partitions), "files": files,
            "timings_s": {"total_s": round(time.perf_counter() - t0, 3)}}
