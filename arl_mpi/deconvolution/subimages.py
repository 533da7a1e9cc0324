"""Parallel deconvolution on sub-images (WSClean ``-parallel-deconvolution MAXSIZE``).

Pure numpy, no Dask: the driver function :func:`parallel_minor_cycle` takes a ``mapper`` so
the pipeline can run the tiles as tasks on workers.

Layout (:func:`plan_subimages`): the image is split into a grid of tiles of at most
``maxsize`` pixels a side. Each tile *owns* a box; the owned boxes partition the image, so every
pixel is owned by exactly one tile. A tile's *work* box is its owned box grown by ``margin``
pixels (clipped to the image). A tile cleans its whole work box (peaks searched and
subtracted there, so a neighbour's source near the border is removed from this tile's view
and its main lobe is not mistaken for flux of this tile), but only components centred in its
owned box are *kept* in the model; the others are the neighbour's, which keeps them. A source on
a border is thus kept by exactly one tile (the one owning its peak pixel): never lost, never
twice. A multiscale component centred in the owned box may extend into the margin; its full
footprint is kept, so the margin covers the largest scale kernel (:func:`default_margin`).

One global stopping rule (:func:`parallel_minor_cycle`): from the global (masked) residual
peak ``P`` and MAD noise ``sigma``, every tile cleans down to

    ``max(threshold, auto_threshold * sigma, (1 - mgain) * P)``

(WSClean semantics: mgain relative to the *global* peak, not the tile's). The remaining
component budget is shared out over the tiles: a tile with no owned pixel above the threshold
does not run; the others get at least one component and the rest in proportion to their
work-box pixels above the threshold (:func:`share_niter`). A tile's subtractions, margin ones
included, never exceed its share, so a minor cycle never exceeds the budget; only components
kept (centred in an owned box) count as done. Within one minor cycle a tile does not see the
sidelobes of sources outside its work box; the next major cycle (a full residual) corrects
that, as for any mgain-limited minor cycle. Cleaning the margins costs extra subtractions
(about the work/owned area ratio), small when ``maxsize`` is much larger than the margin.

All algorithms run through the same kernels as the serial minor cycle:
:func:`~arl_mpi.deconvolution.hogbom.hogbom`, :func:`~arl_mpi.deconvolution.msmfs.multiscale`
and, for joined channels, :func:`~arl_mpi.deconvolution.msmfs.mfs_clean` (Taylor terms).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from arl_mpi.errors import ConfigError, InputError

from .common import mad_sigma, scale_kernel
from .hogbom import hogbom
from .minor_cycle import reference_frequency, taylor_to_channels
from .msmfs import mfs_clean, multiscale, taylor_residuals
from .policy import CleanParams, CleanSettings, masked_peak

log = logging.getLogger(__name__)

__all__ = [
    "Tile",
    "cut_psf",
    "default_margin",
    "psf_fwhm_px",
    "global_threshold",
    "parallel_minor_cycle",
    "plan_subimages",
    "serial_map",
    "share_niter",
    "subimage_task",
]

Box = tuple[int, int, int, int]  # y0, y1, x0, x1 (half-open)
Mapper = Callable[[Callable[..., Any], list[tuple[Any, ...]]], list[Any]]


@dataclass(frozen=True)
class Tile:
    """One sub-image: ``owned`` and ``work`` boxes ``(y0, y1, x0, x1)``, half-open, in pixels
    of the full image (``owned`` inside ``work``)."""

    index: int
    owned: Box
    work: Box

    @property
    def work_slices(self) -> tuple[slice, slice]:
        """Slices of the work box in the full image."""
        y0, y1, x0, x1 = self.work
        return slice(y0, y1), slice(x0, x1)

    @property
    def owned_slices(self) -> tuple[slice, slice]:
        """Slices of the owned box in the full image."""
        y0, y1, x0, x1 = self.owned
        return slice(y0, y1), slice(x0, x1)

    @property
    def owned_in_work(self) -> tuple[slice, slice]:
        """Slices of the owned box relative to the work box."""
        oy0, oy1, ox0, ox1 = self.owned
        wy0, _, wx0, _ = self.work
        return slice(oy0 - wy0, oy1 - wy0), slice(ox0 - wx0, ox1 - wx0)

    @property
    def work_shape(self) -> tuple[int, int]:
        y0, y1, x0, x1 = self.work
        return y1 - y0, x1 - x0


def serial_map(fn: Callable[..., Any], args: list[tuple[Any, ...]]) -> list[Any]:
    """The default mapper: ``[fn(*a) for a in args]`` in this process."""
    return [fn(*a) for a in args]


def psf_fwhm_px(psf: np.ndarray) -> float:
    """Main-lobe full width at half maximum (pixels) of a PSF or PSF cube, along the centre row
    and column (the widest direction and channel)."""
    psf = np.asarray(psf, dtype=np.float64)
    psf = psf.reshape((-1,) + psf.shape[-2:])
    cy, cx = psf.shape[1] // 2, psf.shape[2] // 2
    widest = 0
    for p in psf:
        pk = p[cy, cx]
        for line in (p[cy, cx:], p[cy, cx::-1], p[cy:, cx], p[cy::-1, cx]):
            below = np.nonzero(line < 0.5 * pk)[0]
            widest = max(widest, int(below[0]) if below.size else line.size)
    return 2.0 * widest


def default_margin(
    maxsize: int, scales_px: Sequence[float] = (0,), fwhm_px: float | None = None
) -> int:
    """Default work-box margin (pixels).

    ``r + 2 * fwhm_px`` with r the half-width of the largest scale kernel: the
    multiscale criteria in the owned box are then exact, and a neighbour's source whose main
    lobe reaches into the owned box lies in the margin, where it is cleaned before it can be
    mistaken for flux of this tile. Without a beam width, ``r + maxsize // 8``. At least 4.
    """
    half = max(scale_kernel(float(s)).shape[0] // 2 for s in scales_px) if scales_px else 0
    base = int(maxsize) // 8 if fwhm_px is None else int(np.ceil(2.0 * fwhm_px))
    return int(max(4, half + base))


def _edges(n: int, maxsize: int) -> list[int]:
    ntiles = -(-n // maxsize)
    return [round(i * n / ntiles) for i in range(ntiles + 1)]


def plan_subimages(ny: int, nx: int, maxsize: int, margin: int | None = None) -> list[Tile]:
    """Split an ``ny x nx`` image into tiles of at most ``maxsize`` pixels a side.

    Parameters
    ----------
    ny, nx : int
        Image shape.
    maxsize : int
        Largest owned-box side (WSClean ``-parallel-deconvolution MAXSIZE``); the tiles along
        each axis are as equal as possible.
    margin : int or None
        Pixels added on every side of the owned box to form the work box (clipped to the
        image); None = :func:`default_margin` ``(maxsize)``.

    Returns
    -------
    list of Tile
        Row-major; the owned boxes partition the image.
    """
    if ny < 1 or nx < 1:
        raise InputError(f"image shape must be positive, got {ny}x{nx}")
    if maxsize < 1:
        raise ConfigError(f"parallel-deconvolution maxsize must be >= 1, got {maxsize}")
    margin = default_margin(maxsize) if margin is None else int(margin)
    if margin < 0:
        raise ConfigError(f"sub-image margin must be >= 0, got {margin}")
    ye, xe = _edges(ny, maxsize), _edges(nx, maxsize)
    tiles = []
    for iy in range(len(ye) - 1):
        for ix in range(len(xe) - 1):
            y0, y1, x0, x1 = ye[iy], ye[iy + 1], xe[ix], xe[ix + 1]
            work = (
                max(0, y0 - margin),
                min(ny, y1 + margin),
                max(0, x0 - margin),
                min(nx, x1 + margin),
            )
            tiles.append(Tile(len(tiles), (y0, y1, x0, x1), work))
    return tiles


def cut_psf(psf: np.ndarray, wy: int, wx: int) -> np.ndarray:
    """Central part of a PSF (or PSF cube ``[..., py, px]``) that covers every offset inside
    a ``wy x wx`` box: at most ``(2 wy - 1) x (2 wx - 1)``, centre still at ``(py//2, px//2)``.

    The subtraction for a component anywhere in the box is then as exact as with the full PSF.
    """
    py, px = psf.shape[-2:]
    cy, cx = py // 2, px // 2
    hy = min(wy - 1, cy, py - 1 - cy)
    hx = min(wx - 1, cx, px - 1 - cx)
    return psf[..., cy - hy : cy + hy + 1, cx - hx : cx + hx + 1]


def global_threshold(peak: float, sigma: float, params: CleanParams) -> tuple[float, str]:
    """Per-tile stopping threshold ``max(threshold, auto_threshold * sigma, (1 - mgain) * peak)``
    and which of 'threshold', 'auto_threshold', 'mgain' it is (ties: that order)."""
    cands = [(float(params.threshold), "threshold")]
    if params.auto_threshold is not None:
        cands.append((float(params.auto_threshold) * sigma, "auto_threshold"))
    if params.mgain is not None:
        cands.append(((1.0 - float(params.mgain)) * peak, "mgain"))
    best = cands[0]
    for c in cands[1:]:
        if c[0] > best[0]:
            best = c
    return best


def share_niter(counts: Sequence[int], budget: int, peaks: Sequence[float]) -> np.ndarray:
    """Share a component budget over tiles.

    Tiles with ``counts > 0`` (owned pixels above the threshold) get at least one component
    and the rest in proportion to ``counts`` (largest remainders); if the budget is smaller
    than the number of such tiles, the ones with the highest ``peaks`` get one each. The shares
    sum to exactly ``budget`` when any tile is active, else to 0.
    """
    counts = np.asarray(counts, dtype=np.int64)
    shares = np.zeros(counts.size, dtype=np.int64)
    active = np.nonzero(counts > 0)[0]
    if budget <= 0 or active.size == 0:
        return shares
    if budget < active.size:
        order = active[np.argsort(-np.asarray(peaks, dtype=np.float64)[active], kind="stable")]
        shares[order[:budget]] = 1
        return shares
    shares[active] = 1
    rest = budget - active.size
    quota = rest * counts[active] / counts[active].sum()
    base = np.floor(quota).astype(np.int64)
    left = rest - int(base.sum())
    extra = np.argsort(-(quota - base), kind="stable")[:left]
    base[extra] += 1
    shares[active] += base
    return shares


def subimage_task(
    residual_work: np.ndarray,
    psf: np.ndarray,
    tile: Tile,
    params: CleanParams,
    threshold: float,
    niter_share: int,
    mask_work: np.ndarray | None = None,
    algorithm: str = "hogbom",
    freqs: np.ndarray | None = None,
    ref_freq: float | None = None,
    weights: np.ndarray | None = None,
    nterms: int = 1,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Minor cycle of one sub-image (a picklable, module-level, numpy-only task).

    Parameters
    ----------
    residual_work : ndarray [nchan, wy, wx]
        Residual cut out over ``tile.work`` (Jy/beam).
    psf : ndarray [nchan, py, px]
        The shared PSF cube (full size; peak at the centre); the part covering the work box is
        used, so the subtraction is exact at any offset inside it when the full PSF is.
    tile : Tile
    params : CleanParams
        Gain, scales, scale bias, PSF support and precision; its niter, thresholds, mgain and
        mask are replaced by the global rule below.
    threshold : float
        Global stopping threshold (:func:`global_threshold`).
    niter_share : int
        This tile's share of the component budget.
    mask_work : ndarray [wy, wx] bool or None
        User clean mask cut out over the work box; peaks are searched where it is True (the
        whole work box if None), components are kept only inside the owned box.
    algorithm : {'hogbom', 'multiscale'}
        Single-channel algorithm (ignored for ``nchan > 1``: MS-MFS with ``params.scales_px``).
    freqs, ref_freq, weights, nterms
        Channel frequencies, Taylor reference frequency, channel weights and number of Taylor
        terms (``nchan > 1`` only).

    Returns
    -------
    update : ndarray [nterms, wy, wx]
        Model increment over the work box (Taylor coefficients when ``nchan > 1``, else one
        plane); only components centred in the owned box.
    info : dict
        ``index``, ``owned``, ``work``, ``share``, ``niter`` (components kept, i.e. centred in
        the owned box), ``iterations`` (all subtractions, <= share), ``start_peak`` and
        ``peak`` (work-box absolute peak before / after, own subtractions only),
        ``stop_reason`` (niter / threshold / empty), ``components_per_scale`` (multiscale,
        all iterations).
    """
    residual_work = np.asarray(residual_work, dtype=np.float64)
    nchan, wy, wx = residual_work.shape
    keep = np.zeros((wy, wx), dtype=bool)
    keep[tile.owned_in_work] = True
    search = None if mask_work is None else np.asarray(mask_work, dtype=bool)
    p = params.replace(
        niter=int(niter_share),
        threshold=float(threshold),
        auto_threshold=None,
        mgain=None,
        mask=search,
    )
    psf_w = cut_psf(np.asarray(psf), wy, wx)
    if nchan == 1:
        clean = multiscale if algorithm == "multiscale" else hogbom
        upd, _, kinfo = clean(residual_work[0], psf_w[0], p, keep=keep)
        upd = upd[None]
    else:
        if freqs is None or ref_freq is None:
            raise InputError("joined-channel sub-image cleaning needs freqs and ref_freq")
        upd, _, kinfo = mfs_clean(
            residual_work, psf_w, freqs, ref_freq, nterms, p, channel_weights=weights, keep=keep
        )
    info: dict[str, Any] = {
        "index": tile.index,
        "owned": list(tile.owned),
        "work": list(tile.work),
        "share": int(niter_share),
        "niter": int(kinfo["kept"]),
        "iterations": int(kinfo["niter"]),
        "start_peak": float(kinfo["start_peak"]),
        "peak": float(kinfo["peak"]),
        "stop_reason": kinfo["stop_reason"],
    }
    if "components_per_scale" in kinfo:
        info["components_per_scale"] = kinfo["components_per_scale"]
    return upd, info


def parallel_minor_cycle(
    residual_cube: np.ndarray,
    psf_cube: np.ndarray,
    settings: CleanSettings,
    maxsize: int,
    niter_done: int = 0,
    *,
    sumwt: np.ndarray | None = None,
    freqs: np.ndarray | None = None,
    nterms: int = 2,
    margin: int | None = None,
    mapper: Mapper | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """One minor cycle with the image split into independently cleaned sub-images.

    Drop-in for :func:`~arl_mpi.deconvolution.minor_cycle.deconvolve_cube` (same inputs and
    outputs, plus the layout).

    Parameters
    ----------
    residual_cube : ndarray [nchan, ny, nx]
        Residual images (Jy/beam); ``nchan == 1``: Hogbom or multiscale, ``nchan > 1``: MS-MFS.
    psf_cube : ndarray [nchan, py, px]
        PSFs, peak at the centre (twice the image size for an exact subtraction everywhere).
    settings : CleanSettings
        Loop settings; the remaining budget is ``settings.niter - niter_done``.
    maxsize : int
        Largest sub-image side in pixels.
    niter_done : int
        Components done in earlier cycles.
    sumwt : ndarray [nchan] or None
        Channel weights (MFS image and MS-MFS); default equal.
    freqs : ndarray [nchan] or None
        Channel frequencies (Hz), needed for ``nchan > 1``.
    nterms : int
        Taylor terms (``min(nterms, nchan)`` are used).
    margin : int or None
        Work-box margin; None = :func:`default_margin` for the scales and the PSF's FWHM.
    mapper : callable or None
        ``mapper(fn, list_of_arg_tuples) -> list of results`` in order; default
        :func:`serial_map`. A Dask mapper runs each :func:`subimage_task` call as a task (all
        arguments are numpy arrays, floats, ints, str or frozen dataclasses; the PSF cube is
        the same object in every tuple, so a mapper can scatter it once).

    Returns
    -------
    update : ndarray [nchan, ny, nx]
        Model increment per channel (Taylor model expanded to the channels for nchan > 1).
    info : dict
        ``niter`` (components kept in the model), ``iterations`` (subtractions, margins
        included; <= the remaining budget), ``stop_reason`` (niter, niter_share, threshold,
        auto_threshold, mgain, empty), ``start_peak`` and ``sigma`` (global, MFS image for
        nchan > 1), ``threshold`` (the global one), ``peak`` (largest owned-box peak left,
        own subtractions only), ``subimages`` (owned boxes ``[y0, y1, x0, x1]`` of all tiles),
        ``tiles`` (info of each tile that ran, see :func:`subimage_task`), and for nchan > 1
        ``taylor`` ``[nterms, ny, nx]`` and ``ref_freq``.
    """
    residual_cube = np.asarray(residual_cube, dtype=np.float64)
    psf_cube = np.asarray(psf_cube)
    if residual_cube.ndim != 3 or psf_cube.ndim != 3 or psf_cube.shape[0] != residual_cube.shape[0]:
        raise InputError("residual and PSF must be [nchan, ny, nx] cubes with the same nchan")
    nchan, ny, nx = residual_cube.shape
    mapper = serial_map if mapper is None else mapper
    params = settings.minor_params(niter_done)
    budget = params.niter
    if nchan == 1:
        img = residual_cube[0]
        nt, ref, w = 1, None, None
    else:
        if freqs is None or np.asarray(freqs).shape != (nchan,):
            raise InputError(
                "joined-channel parallel deconvolution needs one frequency per channel"
            )
        freqs = np.asarray(freqs, dtype=np.float64)
        w = np.ones(nchan) if sumwt is None else np.asarray(sumwt, dtype=np.float64)
        ref = reference_frequency(freqs, w)
        nt = min(nterms, nchan)
        img = taylor_residuals(residual_cube, freqs, ref, 1, w)[0]
    mask = None if params.mask is None else np.asarray(params.mask, dtype=bool)
    peak = masked_peak(img, mask)
    sigma = mad_sigma(img, mask)
    thr, kind = global_threshold(peak, sigma, params)
    if margin is None:
        margin = default_margin(maxsize, params.scales_px, psf_fwhm_px(psf_cube))
    tiles = plan_subimages(ny, nx, maxsize, margin)
    above = (np.abs(img) > thr) if mask is None else (mask & (np.abs(img) > thr))
    # a tile runs if it owns a pixel above the threshold; its share grows with its work box's
    owned = np.array([np.count_nonzero(above[t.owned_slices]) for t in tiles])
    work = np.array([np.count_nonzero(above[t.work_slices]) for t in tiles])
    absimg = np.abs(img) if mask is None else np.where(mask, np.abs(img), 0.0)
    tpeaks = [float(absimg[t.owned_slices].max()) for t in tiles]
    shares = share_niter(np.where(owned > 0, work, 0), budget, tpeaks)
    base = params.replace(mask=None)
    args = [
        (
            residual_cube[(slice(None),) + t.work_slices],
            psf_cube,
            t,
            base,
            thr,
            int(shares[t.index]),
            None if mask is None else mask[t.work_slices],
            settings.algorithm,
            freqs,
            ref,
            w,
            nt,
        )
        for t in tiles
        if shares[t.index] > 0
    ]
    results = mapper(subimage_task, args) if args else []
    update_t = np.zeros((nt, ny, nx))
    tile_infos = []
    for (upd, tinfo), a in zip(results, args, strict=True):
        update_t[(slice(None),) + a[2].work_slices] += upd
        tile_infos.append(tinfo)
    done = sum(ti["niter"] for ti in tile_infos)
    spent = sum(ti["iterations"] for ti in tile_infos)
    if peak <= 0.0:
        reason = "empty"
    elif budget <= 0 or spent >= budget:
        reason = "niter"
    elif any(ti["stop_reason"] == "niter" for ti in tile_infos):
        reason = "niter_share"
    else:
        reason = kind
    info: dict[str, Any] = {
        "niter": int(done),
        "iterations": int(spent),
        "stop_reason": reason,
        "start_peak": peak,
        "sigma": sigma,
        "threshold": thr,
        "peak": max([ti["peak"] for ti in tile_infos], default=peak),
        "subimages": [list(t.owned) for t in tiles],
        "tiles": tile_infos,
    }
    log.debug(
        "parallel minor cycle: %d tiles (%d ran), %d components, threshold %.4g (%s), stop %s",
        len(tiles), len(args), done, thr, kind, reason,
    )  # fmt: skip
    if nchan == 1:
        return update_t, info
    info["taylor"] = update_t
    info["ref_freq"] = ref
    return taylor_to_channels(update_t, freqs, ref), info
