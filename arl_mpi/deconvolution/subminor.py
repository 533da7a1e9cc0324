"""Hogbom CLEAN with sub-minor loops (the optimisation of WSClean's Hogbom / Clark CLEAN).

One *sub-minor loop*:

1. select the (masked) pixels whose absolute residual is above a level ``L`` -- the PSF's
   largest sidelobe times the current peak (Clark's criterion), raised so that the list holds
   at most :data:`MAX_LIST` pixels, and never below the stopping threshold or the mgain level;
2. run Hogbom on that list only: the peak is an ``argmax`` over the list, and the component's
   PSF is subtracted at the list pixels only, its values gathered from a padded PSF at the
   list pixels' offsets (exact values, no truncation of the PSF);
3. when the list peak has fallen to ``L`` (or a stopping rule is met), subtract the loop's
   components from the whole residual at once: shifted-PSF subtraction when there are a few,
   else one FFT convolution (:class:`PsfConvolver`, ``ducc0.fft``, multi-threaded);
4. start again from the new global peak until a stopping rule holds.

Outside the list the residual is not tracked during a loop, so a pixel outside it can rise
above the list's peak (through a negative sidelobe) and be picked one loop later than a
textbook Hogbom would: the components differ in order, not in what they converge to. The
stopping rules are checked on the true residual after every loop.
"""

from __future__ import annotations

import logging
from typing import Any

import ducc0
import numpy as np
import scipy.ndimage

from arl_mpi.errors import InputError

__all__ = ["MAX_LIST", "PsfConvolver", "psf_sidelobe", "subminor_clean"]

log = logging.getLogger(__name__)

#: at most this many pixels in a sub-minor loop's list (the cost of one iteration is ~ the list)
MAX_LIST = 2048
#: never select the list below this fraction of the peak (PSFs with tiny sidelobes)
MIN_FRACTION = 0.05
#: a pixel hit again in a loop reuses its gathered PSF values while the cache holds fewer bytes
CACHE_BYTES = 64 << 20
#: the full-image update subtracts shifted PSFs while fewer than this many elements are touched
#: per FFT-convolution element (measured: one FFT element ~ 6 shifted-PSF elements)
FFT_COST_FACTOR = 6.0


def psf_sidelobe(psf: np.ndarray, box: int = 128) -> float:
    """Largest absolute PSF value outside the main lobe (PSF normalised to 1 at its centre).

    The main lobe is the connected region of positive values around the centre, searched in
    the central ``(2 box + 1)^2`` pixels (if it touches that box, the sidelobe is the largest
    value outside the box).
    """
    py, px = psf.shape
    cy, cx = py // 2, px // 2
    y0, x0 = max(0, cy - box), max(0, cx - box)
    sub = psf[y0 : cy + box + 1, x0 : cx + box + 1]
    lab, _ = scipy.ndimage.label(sub > 0)
    lobe = np.zeros(psf.shape, dtype=bool)
    lobe[y0 : cy + box + 1, x0 : cx + box + 1] = lab == lab[cy - y0, cx - x0]
    out = np.abs(psf[~lobe])
    return float(out.max()) if out.size else 0.0


def _reach(psf_shape: tuple[int, int], shape: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """PSF offsets ``((dy0, dy1), (dx0, dx1))`` that can reach an image of ``shape``: the PSF's
    extent about its centre, clipped to ``+-(n - 1)``."""
    (py, px), (ny, nx) = psf_shape, shape
    cy, cx = py // 2, px // 2
    return (max(-cy, -(ny - 1)), min(py - 1 - cy, ny - 1)), (max(-cx, -(nx - 1)), min(px - 1 - cx, nx - 1))


class PsfConvolver:
    """Linear convolution of a ``[ny, nx]`` component image with a PSF, by ``ducc0.fft``.

    The FFT size is the smallest fast size with no wrap-around into the ``[ny, nx]`` output
    (``ny + max(cy, py - 1 - cy)``), and the PSF's transform is computed once.

    Parameters
    ----------
    psf : ndarray [py, px]
        PSF, centre at ``(py//2, px//2)``.
    shape : (ny, nx)
        Image shape.
    dtype : numpy dtype
        float32 or float64 (the precision of the transforms).
    nthreads : int
        ducc0 FFT threads.
    """

    def __init__(self, psf: np.ndarray, shape: tuple[int, int], dtype: Any, nthreads: int = 1) -> None:
        ny, nx = shape
        py, px = psf.shape
        cy, cx = py // 2, px // 2
        (dy0, dy1), (dx0, dx1) = _reach(psf.shape, shape)
        self.fy, self.fx = self.fft_shape(psf.shape, shape)
        self.shape, self.dtype, self.nthreads = (ny, nx), np.dtype(dtype), int(nthreads)
        kern = np.zeros((self.fy, self.fx), dtype=self.dtype)
        ys = np.arange(dy0, dy1 + 1) % self.fy
        xs = np.arange(dx0, dx1 + 1) % self.fx
        kern[np.ix_(ys, xs)] = psf[cy + dy0 : cy + dy1 + 1, cx + dx0 : cx + dx1 + 1]
        self.kernel_ft = ducc0.fft.r2c(kern, axes=(0, 1), nthreads=self.nthreads)
        self._buf = np.zeros((self.fy, self.fx), dtype=self.dtype)

    @staticmethod
    def fft_shape(psf_shape: tuple[int, int], shape: tuple[int, int]) -> tuple[int, int]:
        """The FFT shape used for a PSF of ``psf_shape`` on an image of ``shape``."""
        (dy0, dy1), (dx0, dx1) = _reach(psf_shape, shape)
        return (
            ducc0.fft.good_size(shape[0] + max(-dy0, dy1), True),
            ducc0.fft.good_size(shape[1] + max(-dx0, dx1), True),
        )

    def convolve(self, image: np.ndarray) -> np.ndarray:
        """``image`` convolved with the PSF, of ``image``'s shape (a new array)."""
        ny, nx = self.shape
        buf = self._buf
        buf[:ny, :nx] = image
        buf[ny:, :] = 0
        buf[:ny, nx:] = 0
        ft = ducc0.fft.r2c(buf, axes=(0, 1), nthreads=self.nthreads)
        ft *= self.kernel_ft
        out = ducc0.fft.c2r(
            ft,
            axes=(0, 1),
            lastsize=self.fx,
            forward=False,
            inorm=2,
            nthreads=self.nthreads,
            out=buf,
            allow_overwriting_input=True,
        )
        return out[:ny, :nx].copy()


def _gather_psf(psf: np.ndarray, shape: tuple[int, int], dtype: Any) -> tuple[np.ndarray, int, int]:
    """PSF zero-padded to ``[2 ny - 1, 2 nx - 1]`` (centre ``(ny - 1, nx - 1)``) and flattened,
    so that the PSF value at any offset between two image pixels is one flat index.

    Returns ``(flat, width, c0)``: value at offset (dy, dx) is ``flat[c0 + dy * width + dx]``.
    """
    ny, nx = shape
    py, px = psf.shape
    cy, cx = py // 2, px // 2
    gy, gx = 2 * ny - 1, 2 * nx - 1
    pad = np.zeros((gy, gx), dtype=dtype)
    (dy0, dy1), (dx0, dx1) = _reach(psf.shape, shape)
    pad[ny - 1 + dy0 : ny + dy1, nx - 1 + dx0 : nx + dx1] = psf[
        cy + dy0 : cy + dy1 + 1, cx + dx0 : cx + dx1 + 1
    ]
    return pad.reshape(-1), gx, (ny - 1) * gx + (nx - 1)


def _subtract_direct(
    residual: np.ndarray, psf: np.ndarray, ys: np.ndarray, xs: np.ndarray, amps: np.ndarray
) -> None:
    """In place: ``residual -= sum_k amps[k] * PSF shifted to (ys[k], xs[k])`` (overlap only)."""
    ny, nx = residual.shape
    py, px = psf.shape
    cy, cx = py // 2, px // 2
    for y, x, a in zip(ys.tolist(), xs.tolist(), amps.tolist(), strict=True):
        y0, x0 = y - cy, x - cx
        r0, r1 = max(0, y0), min(ny, y0 + py)
        c0, c1 = max(0, x0), min(nx, x0 + px)
        if r1 > r0 and c1 > c0:
            residual[r0:r1, c0:c1] -= a * psf[r0 - y0 : r1 - y0, c0 - x0 : c1 - x0]


def _overlap_area(shape: tuple[int, int], psf_shape: tuple[int, int]) -> int:
    """Upper bound of the pixels one shifted-PSF subtraction touches."""
    return min(shape[0], psf_shape[0]) * min(shape[1], psf_shape[1])


def subminor_clean(
    residual: np.ndarray,
    psf: np.ndarray,
    *,
    gain: float,
    niter: int,
    level_stop: float,
    mask: np.ndarray | None,
    keep: np.ndarray | None,
    nthreads: int = 1,
    max_list: int = MAX_LIST,
    window: int | None = None,
    weight: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Hogbom CLEAN with sub-minor loops, in place on ``residual``.

    Parameters
    ----------
    residual : ndarray [ny, nx] float32 or float64
        Working residual, modified in place (its dtype is the working precision).
    psf : ndarray [py, px]
        Normalised PSF (1 at ``(py//2, px//2)``), already cropped to its support.
    gain : float
        Loop gain.
    niter : int
        Maximum components.
    level_stop : float
        Stop when the absolute masked peak is ``<= level_stop`` (the largest of the threshold,
        the auto-threshold and the mgain level).
    mask : ndarray [ny, nx] bool or None
        Components only where True.
    keep : ndarray [ny, nx] bool or None
        Components where False are subtracted but not added to the model.
    nthreads : int
        ducc0 FFT threads for the full-image updates.
    max_list : int
        Largest list of a sub-minor loop.
    window : int or None
        Clark-style PSF window of the sub-minor loop: a component updates only the list pixels
        within ``window`` rows of it (the full-image update after the loop is exact). None:
        every list pixel (default: the loop's values are exact, the components those of a
        textbook Hogbom while no pixel outside the list rises above the list's peak).
    weight : ndarray [ny, nx] or None
        Search weights: peaks are found, and ``level_stop`` applies, on ``|residual| * weight``
        (a local-RMS map's ``rms_min / rms``); components are ``gain`` times the residual.

    Returns
    -------
    model : ndarray [ny, nx] float64
    info : dict
        ``niter`` (components), ``kept``, ``loops`` (sub-minor loops), ``ffts`` (full-image
        updates done by FFT), ``stopped`` ('niter', 'level' or 'empty').
    """
    ny, nx = residual.shape
    rdtype = residual.dtype
    flat_res = residual.reshape(-1)
    model = np.zeros(ny * nx)
    maskf = None if mask is None else np.asarray(mask, dtype=bool).reshape(-1)
    keepf = None if keep is None else np.asarray(keep, dtype=bool).reshape(-1)
    weightf = None if weight is None else np.asarray(weight, dtype=rdtype).reshape(-1)
    frac = min(0.9, max(MIN_FRACTION, psf_sidelobe(psf)))
    gflat, gwidth, c0 = _gather_psf(psf, (ny, nx), rdtype)
    conv: PsfConvolver | None = None
    direct_cost = _overlap_area((ny, nx), psf.shape)
    fft_elems = int(np.prod(PsfConvolver.fft_shape(psf.shape, (ny, nx))))
    psf_r = psf.astype(rdtype, copy=False)
    itype = np.int32 if gflat.size < 2**31 else np.int64
    band = ny if window is None else max(0, int(window))
    absbuf = np.empty(ny * nx, dtype=rdtype)
    done = kept = loops = ffts = 0
    stopped = "niter"
    while True:
        np.abs(flat_res, out=absbuf)
        if weightf is not None:
            absbuf *= weightf
        if maskf is not None:
            absbuf[~maskf] = 0
        peak = float(absbuf.max()) if absbuf.size else 0.0
        if not np.isfinite(peak):
            raise InputError("minor cycle: the residual image has non-finite pixels (NaN or inf): check the "
                             "data's weights and flags (a channel or partition with no valid samples?)")
        if peak <= 0.0:
            stopped = "empty"
            break
        if peak <= level_stop:
            stopped = "level"
            break
        if done >= niter:
            stopped = "niter"
            break
        level = max(level_stop, frac * peak)
        sel = np.flatnonzero(absbuf > level)
        if sel.size > max_list:  # the max_list largest (ties included exactly: no empty list)
            vals = absbuf[sel]
            top = np.argpartition(vals, sel.size - max_list)[sel.size - max_list:]
            nxt = np.partition(vals, sel.size - max_list - 1)[sel.size - max_list - 1]
            level = float(nxt)  # the largest value left out of the list
            sel = np.sort(sel[top])
        loops += 1
        vals = flat_res[sel].astype(rdtype)
        # PSF value at list pixel i for a component at list pixel j: gflat[linc[i] - lin[j]];
        # the list is sorted by row, so the pixels within +-band rows of j are lo[j]:hi[j]
        rows = sel // nx
        lin = (rows * gwidth + sel % nx).astype(itype)
        linc = lin + itype(c0)
        lo = np.searchsorted(rows, rows - band, "left").tolist()
        hi = np.searchsorted(rows, rows + band, "right").tolist()
        linl = lin.tolist()
        comp = np.zeros(sel.size)
        keep_sel = None if keepf is None else keepf[sel]
        wsel = None if weightf is None else weightf[sel]
        absv = np.empty_like(vals)
        idx = np.empty_like(lin)
        gvals = np.empty(sel.size, dtype=rdtype)
        tmp = np.empty(sel.size, dtype=rdtype)
        cache: dict[int, np.ndarray] = {}
        seen: set[int] = set()
        max_cached = CACHE_BYTES // max(1, sel.size * gvals.itemsize)
        first = True  # the list holds the global peak (> level_stop): one component always, so a
        # list whose values tie with the level still makes progress
        while done < niter:
            np.abs(vals, out=absv)
            if wsel is not None:
                absv *= wsel
            j = int(absv.argmax())
            if absv[j] <= level and not first:
                break
            first = False
            amp = gain * float(vals[j])
            comp[j] += amp
            if keep_sel is None or keep_sel[j]:
                kept += 1
            a, b = lo[j], hi[j]
            g = cache.get(j)
            if g is None:
                g, ib = gvals[a:b], idx[a:b]
                np.subtract(linc[a:b], linl[j], out=ib)
                np.take(gflat, ib, out=g, mode="clip")  # indices are in range by construction
                if j in seen and len(cache) < max_cached:
                    cache[j] = g = g.copy()
                seen.add(j)
            np.multiply(g, amp, out=tmp[: b - a])
            vals[a:b] -= tmp[: b - a]
            done += 1
        hit = np.flatnonzero(comp)
        log.debug("sub-minor loop %d: list %d, level %.4g, components at %d pixels", loops, sel.size, level, hit.size)
        if hit.size == 0:  # cannot happen (the list holds the peak > level); never loop forever
            stopped = "level"
            break
        pix, amps = sel[hit], comp[hit]
        if keepf is None:
            model[pix] += amps
        else:
            model[pix] += np.where(keepf[pix], amps, 0.0)
        if hit.size * direct_cost > FFT_COST_FACTOR * fft_elems:
            if conv is None:
                conv = PsfConvolver(psf, (ny, nx), rdtype, nthreads)
            delta = np.zeros(ny * nx, dtype=rdtype)
            delta[pix] = amps
            residual -= conv.convolve(delta.reshape(ny, nx))
            ffts += 1
        else:
            _subtract_direct(residual, psf_r, pix // nx, pix % nx, amps)
    info = {"niter": done, "kept": kept, "loops": loops, "ffts": ffts, "stopped": stopped, "window": window}
    return model.reshape(ny, nx), info
