"""Radler (WSClean's deconvolution library, PyPI ``radler``) as a Hogbom engine, and the choice
of engine behind ``--deconvolver {auto,arl,radler}``.

Radler is an optional dependency: the ``[radler]`` extra (``pip install 'arl_mpi[radler]'``).
Its generic CLEAN with sub-minor optimisation is WSClean's Hogbom. It is used for what it does
the same way as ours: single-channel point-component CLEAN in single precision without a
``keep`` margin or a mask. Everything else (the sub-image margins of
``--parallel-deconvolution``, MS-MFS Taylor terms, multiscale, masks, float64) runs on ours.

``auto`` is ours: on the minor-cycle benchmark (``benchmarks/bench_minor_cycle.py``, 1024^2,
3000 sources) Radler 1.2 on one thread needed minutes for the 20 000 components ours does in
about two seconds, with the same fluxes within 1% on the tests (docs/performance.md, section 3).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np

from arl_mpi.errors import ConfigError

from .common import crop_psf, normalise_psf
from .policy import CleanParams, as_params, masked_peak

__all__ = ["DECONVOLVERS", "radler_available", "radler_hogbom", "resolve_deconvolver"]

log = logging.getLogger(__name__)

#: values of ``--deconvolver``
DECONVOLVERS = ("auto", "arl", "radler")
MISSING = "--deconvolver radler needs the radler package: pip install 'arl_mpi[radler]'"


def radler_available() -> bool:
    """True if the ``radler`` module can be imported."""
    try:
        import radler  # noqa: F401
    except ImportError:
        return False
    return True


def _radler() -> Any:
    try:
        import radler
    except ImportError:
        raise ConfigError(MISSING) from None
    return radler


def resolve_deconvolver(
    name: str,
    *,
    algorithm: str = "hogbom",
    nchan: int = 1,
    keep: bool = False,
    params: CleanParams | None = None,
) -> str:
    """The engine, ``'arl'`` or ``'radler'``, that runs a minor cycle.

    Parameters
    ----------
    name : {'auto', 'arl', 'radler'}
        The ``--deconvolver`` setting (ConfigError if unknown, or 'radler' when it is not
        installed).
    algorithm : str
        'hogbom' or 'multiscale'.
    nchan : int
        Number of output channels jointly deconvolved (MS-MFS when > 1).
    keep : bool
        Whether the call has a ``keep`` margin (sub-images).
    params : CleanParams or None
        The call's parameters (a mask or ``double`` needs ours).

    Returns
    -------
    str
        'radler' only for ``name == 'radler'`` and a call Radler does as ours does; else 'arl'.
    """
    if name not in DECONVOLVERS:
        raise ConfigError(f"deconvolver: unknown {name!r} (expected one of {', '.join(DECONVOLVERS)})")
    if name != "radler":
        return "arl"
    _radler()
    lacks = []
    if algorithm != "hogbom":
        lacks.append(algorithm)
    if nchan > 1:
        lacks.append("MS-MFS Taylor terms")
    if keep:
        lacks.append("sub-image margins")
    if params is not None and params.mask is not None:
        lacks.append("in-memory masks")
    if params is not None and params.double:
        lacks.append("float64")
    if params is not None and params.search_weight is not None:
        lacks.append("local RMS")
    if lacks:
        log.info("deconvolver radler: ours runs this minor cycle (%s)", ", ".join(lacks))
        return "arl"
    return "radler"


def _flush_c_stdio() -> None:
    """fflush(NULL): push out what C/C++ code buffered for stdout before fd 1 is restored."""
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):  # no libc symbols in this process: nothing to flush
        pass


@contextlib.contextmanager
def _captured_stdout() -> Iterator[None]:
    """Send what Radler's C++ logger writes to file descriptor 1 to the debug log instead."""
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        try:
            saved = os.dup(1)
        except OSError:  # no fd 1 (embedded interpreter): leave it alone
            yield
            return
        try:
            os.dup2(tmp.fileno(), 1)
            yield
        finally:
            _flush_c_stdio()
            os.dup2(saved, 1)
            os.close(saved)
            tmp.seek(0)
            for line in tmp.read().decode(errors="replace").splitlines():
                log.debug("radler: %s", line)


def _same_size_psf(psf: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The PSF cut or zero-padded to ``shape`` with its centre at ``(ny//2, nx//2)`` (float32)."""
    ny, nx = shape
    py, px = psf.shape
    out = np.zeros(shape, dtype=np.float32)
    cy, cx = py // 2, px // 2
    oy, ox = ny // 2, nx // 2
    dy0, dy1 = max(-cy, -oy), min(py - cy, ny - oy)
    dx0, dx1 = max(-cx, -ox), min(px - cx, nx - ox)
    out[oy + dy0 : oy + dy1, ox + dx0 : ox + dx1] = psf[cy + dy0 : cy + dy1, cx + dx0 : cx + dx1]
    return out


def radler_hogbom(
    dirty: np.ndarray,
    psf: np.ndarray,
    params: CleanParams | None = None,
    *,
    threshold: float,
    pixel_scale_rad: float = 1e-4,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Hogbom CLEAN by Radler's generic CLEAN (sub-minor optimisation on).

    Parameters
    ----------
    dirty : ndarray [ny, nx]
        Residual image; not modified.
    psf : ndarray [py, px]
        PSF, peak at the centre (normalised here; cut or padded to the image size, Radler's
        convention).
    params : CleanParams
        ``gain``, ``niter``, ``mgain``, ``psf_support``, ``nthreads`` are used; the mask,
        ``double`` and a ``keep`` margin are not supported (see :func:`resolve_deconvolver`).
    threshold : float
        Effective absolute threshold (the caller combines threshold and auto-threshold).
    pixel_scale_rad : float
        Pixel size (only Radler's beam-size bookkeeping uses it).

    Returns
    -------
    model, residual, info
        As :func:`~arl_mpi.deconvolution.hogbom.hogbom` (``info['engine'] == 'radler'``).
    """
    rd = _radler()
    p = as_params(params)
    ny, nx = dirty.shape
    psf32 = _same_size_psf(crop_psf(normalise_psf(psf), p.psf_support), (ny, nx))
    residual = np.array(dirty, dtype=np.float32, order="C")
    model = np.zeros((ny, nx), dtype=np.float32)
    s = rd.Settings()
    s.algorithm_type = rd.AlgorithmType.generic_clean
    s.use_sub_minor_optimization = True
    s.trimmed_image_width, s.trimmed_image_height = nx, ny
    s.pixel_scale.x = s.pixel_scale.y = float(pixel_scale_rad)
    s.minor_iteration_count = int(p.niter)
    s.minor_loop_gain = float(p.gain)
    s.major_loop_gain = float(p.mgain) if p.mgain is not None else 1.0
    s.absolute_threshold = float(threshold)
    s.thread_count = int(p.nthreads)
    s.allow_negative_components = True
    start_peak = masked_peak(dirty)
    niter = 0
    if p.niter > 0 and start_peak > threshold:
        with _captured_stdout():
            engine = rd.Radler(s, psf32, residual, model, 0.0)
            engine.perform(0)
            niter = int(engine.iteration_number)
    peak = masked_peak(residual)
    # Radler checks its stopping rules on its own running peak; the full residual's peak can
    # be a little above the threshold afterwards, as after any sub-minor loop
    mgain_level = (1.0 - p.mgain) * start_peak if p.mgain is not None else -1.0
    if niter >= p.niter:
        reason = "niter"
    elif mgain_level > threshold and peak > threshold:
        reason = "mgain"
    else:
        reason = "threshold"
    info = {
        "start_peak": start_peak,
        "threshold": float(threshold),
        "niter": niter,
        "kept": niter,
        "peak": peak,
        "stop_reason": reason,
        "engine": "radler",
    }
    return model.astype(np.float64), residual.astype(np.float64), info
