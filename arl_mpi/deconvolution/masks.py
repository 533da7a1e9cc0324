"""Clean masks: WSClean's auto-masking and local-RMS thresholds (pure numpy).

* **Auto-mask** (WSClean's ``-auto-mask SIGMA``): clean down to ``SIGMA`` x the noise
  everywhere; then make a mask of the pixels holding the components found so far, and continue
  inside that mask only down to the auto-threshold (``-auto-threshold``). The state (which
  phase, the components so far) lives in :class:`AutoMaskState`, carried by the
  :class:`~arl_mpi.deconvolution.policy.CleanSettings` of the run across major cycles.
* **Local RMS** (WSClean's ``-local-rms``, ``-local-rms-window``): the noise is a map, a robust
  RMS in a sliding window of ``window`` PSF main-lobe widths; thresholds then hold relative to the
  local RMS: the peak search runs on ``|residual| * rms_min / rms(x)`` and the auto-threshold
  (and auto-mask level) are ``sigma = rms_min``.

A user mask (``--fits-mask``) is intersected with the auto-mask.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.ndimage

from .common import mad_sigma

__all__ = ["AutoMaskState", "cycle_params", "local_rms_map", "main_lobe_width", "after_cycle"]

log = logging.getLogger(__name__)


@dataclass
class AutoMaskState:
    """Auto-masking across major cycles.

    Attributes
    ----------
    active : bool
        True once the auto-mask level has been reached (cleaning then continues in ``mask``).
    components : ndarray [ny, nx] bool or None
        Pixels holding a component so far.
    mask : ndarray [ny, nx] bool or None
        The auto-mask (the components when it was made), None before.
    """

    active: bool = False
    components: np.ndarray | None = None
    mask: np.ndarray | None = field(default=None, repr=False)


def main_lobe_width(psf: np.ndarray) -> float:
    """Width in pixels (the square root of its area above half maximum) of the PSF's main lobe."""
    psf = np.asarray(psf, dtype=np.float64)
    cy, cx = psf.shape[0] // 2, psf.shape[1] // 2
    above = psf >= 0.5 * psf[cy, cx]
    lab, _ = scipy.ndimage.label(above)
    return float(np.sqrt(max(1, int(np.count_nonzero(lab == lab[cy, cx])))))


def local_rms_map(image: np.ndarray, window_px: float) -> np.ndarray:
    """Local noise of ``image``: a robust RMS, ``1.4826 x`` the median of ``|image|`` in a sliding
    square window of ``window_px`` pixels (robust, so that sources do not raise their own noise).

    The medians are taken on a grid coarser by up to an eighth of the window and interpolated
    back (the map varies on the window's scale); never below 1e-3 of its median (blank regions).
    """
    img = np.abs(np.asarray(image, dtype=np.float64))
    w = max(3, int(round(window_px)))
    step = max(1, w // 8)
    coarse = img[::step, ::step] if step > 1 else img
    rms = 1.4826 * scipy.ndimage.median_filter(coarse, size=max(3, w // step), mode="reflect")
    if step > 1:
        zoom = (img.shape[0] / rms.shape[0], img.shape[1] / rms.shape[1])
        rms = scipy.ndimage.zoom(rms, zoom, order=1, mode="nearest", grid_mode=True)[: img.shape[0], : img.shape[1]]
    floor = 1e-3 * float(np.median(rms)) if rms.size else 0.0
    return np.maximum(rms, floor if floor > 0 else np.finfo(np.float64).tiny)


def cycle_params(params: Any, settings: Any, image: np.ndarray, psf: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """The parameters of one minor cycle with the auto-mask and local RMS applied.

    Parameters
    ----------
    params : CleanParams
        From ``settings.minor_params``: the user mask (``--fits-mask``) already in ``mask``.
    settings : CleanSettings
        ``auto_mask``, ``auto_threshold``, ``local_rms_window`` and the :class:`AutoMaskState`
        ``automask``.
    image : ndarray [ny, nx]
        The (MFS) residual the cycle starts from (for the local RMS map).
    psf : ndarray [py, px]
        The (MFS) PSF (its main-lobe width sets the RMS window).

    Returns
    -------
    params : CleanParams
    extra : dict
        ``phase`` ('auto_mask' before the auto-mask is made, 'masked' after, absent without
        auto-masking) and ``rms_min`` (with a local RMS).
    """
    extra: dict[str, Any] = {}
    changes: dict[str, Any] = {}
    if settings.local_rms_window is not None:
        rms = local_rms_map(image, settings.local_rms_window * main_lobe_width(psf))
        rms_min = float(rms.min())
        changes["search_weight"] = rms_min / rms
        changes["noise_sigma"] = rms_min
        extra["rms_min"] = rms_min
    state: AutoMaskState = settings.automask
    if settings.auto_mask is not None:
        if not state.active:
            changes["auto_threshold"] = settings.auto_mask
            extra["phase"] = "auto_mask"
        else:
            mask = state.mask if params.mask is None else (state.mask & np.asarray(params.mask, dtype=bool))
            changes["mask"] = mask
            # the noise stays that of the whole image (or the local RMS), not of the mask's pixels
            changes.setdefault("noise_sigma", mad_sigma(image, None if params.mask is None else params.mask))
            extra["phase"] = "masked"
    return (params.replace(**changes) if changes else params), extra


def after_cycle(settings: Any, update: np.ndarray, info: dict[str, Any], extra: dict[str, Any]) -> None:
    """Record a minor cycle's components; make the auto-mask once the auto-mask level is reached.

    ``update`` is the cycle's model increment ``[ny, nx]`` (or ``[nchan, ny, nx]``).
    """
    if settings.auto_mask is None:
        return
    state: AutoMaskState = settings.automask
    found = np.asarray(update) != 0
    if found.ndim == 3:
        found = found.any(axis=0)
    state.components = found if state.components is None else (state.components | found)
    info["auto_mask_phase"] = extra.get("phase")
    if not state.active and info.get("stop_reason") == "auto_threshold":
        state.active = True
        state.mask = state.components.copy()
        log.info(
            "auto-mask: %.3g sigma reached; mask of the %d component pixels so far, cleaning on inside it",
            settings.auto_mask,
            int(np.count_nonzero(state.mask)),
        )
        info["auto_mask_made"] = True
