"""``--pol``: image several polarisation products in one run (WSClean's ``-pol``).

Values as WSClean's: Stokes ``I``, ``Q``, ``U``, ``V`` and correlations ``XX``, ``XY``, ``YX``,
``YY``, ``RR``, ``RL``, ``LR``, ``LL``, in any case, separated by commas or not (``IQUV``,
``xx,yy``, ``I,V``). The partitions are read once, with all their correlations, and stay on the
workers (as in ICAL, ``graphs/calibration.CalData``); each product's shard is derived from them
on the workers (Stokes conversion as ``imaging/stokes.py``), weighted, imaged and cleaned on its
own, then released before the next (``--join-polarizations``: all resident, one joint Hogbom
CLEAN, :func:`joined_hogbom`). With more than one product the outputs carry the product
in their names as WSClean's do (``PREFIX-Q-dirty.fits``, ``PREFIX-Q-image.fits``, ...); with
one, the names are the usual ``PREFIX-image.fits``. A product the data cannot form (``Q``
from RR/LL only, ``XY`` from XX/YY) is a one-line error before any imaging.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from typing import Any

import numpy as np

from arl_mpi.errors import ConfigError, InputError
from arl_mpi.graphs import calibration as cal_tasks
from arl_mpi.graphs import shard_graphs as graphs
from arl_mpi.graphs.shard_graphs import delayed
from arl_mpi.graphs.shard_tasks import Shard, VisBlock, merge_blocks
from arl_mpi.imaging.stokes import STOKES_DEFINITIONS
from arl_mpi.io.store import open_store
from arl_mpi.pipeline import minor
from arl_mpi.pipeline.common import (
    dynamic_range,
    grid_spec,
    output_frequencies,
    psf_and_dirty,
    shard_plan,
    summary_header,
    weight_data,
)
from arl_mpi.pipeline.major_cycle import clean_loop, final_images
from arl_mpi.pipeline.outputs import make_image, write_image_set
from arl_mpi.pipeline.settings import Settings

log = logging.getLogger("arl_mpi.pipeline")

__all__ = ["CORRELATIONS", "STOKES", "parse_pol", "check_products", "run_polarisations"]

CORRELATIONS = ("XX", "XY", "YX", "YY", "RR", "RL", "LR", "LL")
STOKES = ("I", "Q", "U", "V")


def parse_pol(text: str) -> list[str]:
    """The products of a ``--pol`` value, in order, without repeats (e.g. ``"xx,yy"`` -> XX, YY).

    Raises
    ------
    ConfigError
        One line naming what cannot be read.
    """
    s = re.sub(r"[\s,]+", "", str(text)).upper()
    out: list[str] = []
    i = 0
    while i < len(s):
        if s[i:i + 2] in CORRELATIONS:
            tok, i = s[i:i + 2], i + 2
        elif s[i] in STOKES:
            tok, i = s[i], i + 1
        else:
            raise ConfigError(f"pol: cannot read '{text}' at '{s[i:]}' (use I, Q, U, V, XX, XY, YX, YY, RR, RL, "
                              "LR, LL, e.g. IQUV or xx,yy)")
        if tok not in out:
            out.append(tok)
    if not out:
        raise ConfigError("pol: no polarisation given (e.g. I, IQUV, xx,yy)")
    return out


def check_products(products: list[str], labels: list[str], where: str) -> None:
    """Refuse products the correlations ``labels`` cannot form (one line naming the store)."""
    have = [p.upper() for p in labels]
    for p in products:
        if p in CORRELATIONS:
            ok = p in have
            need = p
        else:
            ok = any(a in have and b in have for a, b, _ in STOKES_DEFINITIONS[p])
            need = " or ".join(f"{a}+{b}" for a, b, _ in STOKES_DEFINITIONS[p])
        if not ok:
            raise InputError(f"{where}: --pol {p} needs correlations {need}; the data have {', '.join(have)}")


def product_block(cal: cal_tasks.CalData, product: str) -> VisBlock:
    """One partition's visibilities of ``product``: a Stokes parameter, or one correlation as stored."""
    if product in STOKES:
        return cal_tasks.imaging_block(cal, None, product)
    k = [p.upper() for p in cal.polarisations].index(product)
    return VisBlock(pids=(cal.pid,), uvw=cal.uvw, freq=cal.freq, chan_start=cal.chan_start,
                    vis=np.ascontiguousarray(cal.vis[..., k], dtype=np.complex64),
                    weight=np.ascontiguousarray(cal.weight[..., k], dtype=np.float32),
                    flags=np.ascontiguousarray(cal.flags[..., k]), nflag_bad=cal.nflag_bad)


def product_shard(cals: list[list[cal_tasks.CalData]], product: str) -> Shard:
    """On a worker: the shard of ``product`` from its resident partitions (each chunk merged)."""
    parts = [merge_blocks([product_block(c, product) for c in chunk]) for chunk in cals]
    return Shard(pids=tuple(p for m in parts for p in m.pids), blocks=[b for m in parts for b in m.blocks])


def joined_hogbom(residuals: np.ndarray, psfs: np.ndarray, models: np.ndarray, gain: float, niter: int,
                  stop_level: float) -> int:
    """Hogbom CLEAN of several products at once, in place (WSClean's ``-join-polarizations``).

    Each iteration takes the peak of the sum of squares over the products, ``sqrt(sum_p R_p^2)``,
    and subtracts ``gain x R_p(peak)`` times product p's PSF (centred on that pixel) from each
    product's residual, adding it to that product's model.

    Parameters
    ----------
    residuals, psfs, models : ndarray [nprod, ny, nx] (PSFs with their peak 1 at ``(ny//2, nx//2)``)
    gain : loop gain; niter : at most this many iterations
    stop_level : stop when the peak of ``sqrt(sum_p R_p^2)`` is at or below this

    Returns
    -------
    int
        Iterations done.
    """
    nprod, ny, nx = residuals.shape
    cy, cx = ny // 2, nx // 2
    power = np.sum(residuals * residuals, axis=0)
    n = 0
    while n < niter:
        k = int(np.argmax(power))
        if np.sqrt(power.flat[k]) <= stop_level:
            break
        y, x = divmod(k, nx)
        ys, xs = slice(max(0, y - cy), min(ny, y - cy + ny)), slice(max(0, x - cx), min(nx, x - cx + nx))
        ps = slice(ys.start - (y - cy), ys.stop - (y - cy)), slice(xs.start - (x - cx), xs.stop - (x - cx))
        amp = gain * residuals[:, y, x]
        models[:, y, x] += amp
        residuals[:, ys, xs] -= amp[:, None, None] * psfs[:, ps[0], ps[1]]
        power[ys, xs] = np.sum(residuals[:, ys, xs] ** 2, axis=0)
        n += 1
    return n


def _joined_loop(client, s: Settings, grid, data: dict, psfs: dict, dirties: dict, products: list[str]):
    """Major cycles of the joint deconvolution: returns models, residuals ``[nprod, 1, ny, nx]``,
    the per-cycle records and the stop reason."""
    from arl_mpi.deconvolution.common import mad_sigma
    from arl_mpi.pipeline.common import image_from

    residual = np.stack([dirties[p][0] for p in products]).astype(np.float64)
    psf = np.stack([psfs[p][0] for p in products]).astype(np.float64)
    model = np.zeros_like(residual)
    cycles: list[dict[str, Any]] = []
    done, reason = 0, "nmiter"
    for _ in range(s.nmiter):
        peak = float(np.sqrt(np.max(np.sum(residual**2, axis=0))))
        sigma = float(np.sqrt(sum(mad_sigma(r) ** 2 for r in residual)))
        level = max(s.threshold_jy, (s.auto_threshold or 0.0) * sigma)
        if done >= s.niter:
            reason = "niter"
            break
        if peak <= level:
            reason = "auto_threshold" if level > s.threshold_jy else "threshold"
            break
        n = joined_hogbom(residual, psf, model, s.gain, s.niter - done, max(level, (1.0 - s.mgain) * peak))
        if n == 0:
            reason = "no progress"
            break
        done += n
        for i, p in enumerate(products):
            r, _ = image_from(client, graphs.invert_graph(data[p], grid, graphs.model_constant(model[i][None], grid)))
            residual[i] = r[0]
        cycles.append({"components": n, "peak_before": peak, "sigma": sigma, "niter_total": done})
        log.info("joined major cycle %d: %d components, peak %.4g -> %.4g (sum of squares over %s)", len(cycles),
                 n, peak, float(np.sqrt(np.max(np.sum(residual**2, axis=0)))), ",".join(products))
    return model[:, None], residual[:, None], cycles, reason, done


def run_polarisations(client, s: Settings, store: str) -> dict[str, Any]:
    """Image every ``--pol`` product of ``store`` (one load); returns the run's summary."""
    t_start = time.perf_counter()
    products = parse_pol(s.pol)
    index = open_store(store)
    check_products(products, list(index.meta.polarisations), str(index.path))
    grid = grid_spec(s, index)
    freqs_out = output_frequencies(index, s.channels_out)
    npart = len(index.partitions)
    shards = shard_plan(client, s, index, grid)
    home = {pid: k for k, chunks in enumerate(shards) for c in chunks for pid in c}
    cal = graphs.persist_on_workers(
        client, [delayed(cal_tasks.load_cal_data, pure=True)(str(index.path), pid, s.verify, s.apply_solutions)
                 for pid in range(npart)],
        placement=[home[pid] for pid in range(npart)])
    log.info("--pol %s: %d partitions read once (all correlations) for %d product(s)", s.pol, npart,
             len(products))
    per_product: dict[str, Any] = {}
    files: list[str] = []
    res = beam = None
    if s.join_polarizations:
        return _run_joined(client, s, index, grid, freqs_out, shards, cal, products, t_start)
    data = None
    for product in products:
        t0 = time.perf_counter()
        data = res = None  # the previous product's shards go before this product's are made
        sp = dataclasses.replace(s, stokes=product)  # the images' STOKES axis
        prefix = f"{s.name}-{product}" if len(products) > 1 else s.name
        data = graphs.persist_on_workers(
            client, [delayed(product_shard, pure=True)([[cal[p] for p in c] for c in chunks], product)
                     for chunks in shards])
        res = weight_data(client, sp, data, grid, str(index.path))
        res.shards = shards
        psf, sumwt, dirty, beam, _ = psf_and_dirty(client, res.data, grid)
        files += write_image_set(prefix, {
            "dirty": make_image(index, dirty, grid.cell, freqs_out, "JY/BEAM", stokes=product),
            "psf": make_image(index, psf, grid.cell, freqs_out, "JY/BEAM", stokes=product)}, s.png)
        r = clean_loop(client, sp, res.data, grid, freqs_out, psf, sumwt, dirty, beam, checkpoint_name=None)
        images = final_images(index, sp, grid, freqs_out, r)
        files += write_image_set(prefix, images, s.png)
        peak, sigma = minor.residual_stats(r.residual, sumwt)
        per_product[product] = {
            "dirty_peak": float(np.max(np.abs(dirty))), "stop_reason": r.stop_reason,
            "total_iterations": r.niter_done, "residual_peak": peak, "residual_rms_mad": sigma,
            "model_flux": float(r.model.sum() / r.model.shape[0]),
            "dynamic_range": dynamic_range(images["image"].data[:, 0], r.residual),
            "time_s": round(time.perf_counter() - t0, 3)}
        log.info("--pol %s: dirty peak %.4g, %d components, residual rms %.3g", product,
                 per_product[product]["dirty_peak"], r.niter_done, sigma)
    return {**summary_header("continuum", client, s, index, res, beam), "polarisations": products,
            "per_polarisation": per_product, "output_frequencies_hz": freqs_out.tolist(), "files": files,
            "timings_s": {"total_s": round(time.perf_counter() - t_start, 3)}}


def _run_joined(client, s: Settings, index, grid, freqs_out, shards, cal, products, t_start) -> dict[str, Any]:
    """``--join-polarizations``: every product's shards resident at once, one joint CLEAN."""
    from arl_mpi.imaging.beam import restore

    data, psfs, dirties, sumwts, files = {}, {}, {}, {}, []
    res = beam = None
    for product in products:
        sp = dataclasses.replace(s, stokes=product)
        d = graphs.persist_on_workers(
            client, [delayed(product_shard, pure=True)([[cal[p] for p in c] for c in chunks], product)
                     for chunks in shards])
        res = weight_data(client, sp, d, grid, str(index.path))
        data[product] = res.data
        psfs[product], sumwts[product], dirties[product], b, _ = psf_and_dirty(client, res.data, grid)
        beam = b if product == products[0] else beam  # restore every product with the first one's beam
        files += write_image_set(f"{s.name}-{product}", {
            "dirty": make_image(index, dirties[product], grid.cell, freqs_out, "JY/BEAM", stokes=product),
            "psf": make_image(index, psfs[product], grid.cell, freqs_out, "JY/BEAM", stokes=product)}, s.png)
    model, residual, cycles, reason, done = _joined_loop(client, s, grid, data, psfs, dirties, products)
    per_product = {}
    for i, p in enumerate(products):
        restored = restore(model[i, 0], residual[i, 0], beam, grid.cell)[None]
        files += write_image_set(f"{s.name}-{p}", {
            "model": make_image(index, model[i], grid.cell, freqs_out, "JY/PIXEL", stokes=p),
            "residual": make_image(index, residual[i], grid.cell, freqs_out, "JY/BEAM", beam, stokes=p),
            "image": make_image(index, restored, grid.cell, freqs_out, "JY/BEAM", beam, stokes=p)}, s.png)
        peak, sigma = minor.residual_stats(residual[i], sumwts[p])
        per_product[p] = {"dirty_peak": float(np.max(np.abs(dirties[p]))), "residual_peak": peak,
                          "residual_rms_mad": sigma, "model_flux": float(model[i].sum())}
    return {**summary_header("continuum", client, s, index, res, beam), "polarisations": products,
            "joined_polarisations": True, "cycles": cycles, "stop_reason": reason, "total_iterations": done,
            "per_polarisation": per_product, "output_frequencies_hz": freqs_out.tolist(), "files": files,
            "timings_s": {"total_s": round(time.perf_counter() - t_start, 3)}}
