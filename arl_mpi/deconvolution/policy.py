"""Clean settings and the major-cycle stopping rule (pure, no imaging dependency).

Two objects carry the parameters:

* :class:`CleanParams` -- everything one minor-cycle *call* needs (gain, component budget of
  this call, thresholds, mgain, mask, multiscale scales, PSF support, precision). The
  algorithms :func:`~arl_mpi.deconvolution.hogbom.hogbom`,
  :func:`~arl_mpi.deconvolution.msmfs.multiscale` and
  :func:`~arl_mpi.deconvolution.msmfs.mfs_clean` take one of these.
* :class:`CleanSettings` -- the settings of a whole major/minor loop (algorithm, *total*
  budget, number of major cycles, ...). :meth:`CleanSettings.minor_params` turns it into the
  :class:`CleanParams` of the next minor cycle.

The serial loop and the distributed pipeline both take their per-cycle decisions with
:func:`stop_rule` and :func:`~arl_mpi.deconvolution.minor_cycle.minor_cycle_step`, so they take
identical decisions given identical images.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from arl_mpi.errors import ConfigError

from .masks import AutoMaskState

__all__ = ["ALGORITHMS", "CleanParams", "CleanSettings", "as_params", "masked_peak", "stop_rule"]

#: single-channel minor-cycle algorithms (joined channels always use MS-MFS)
ALGORITHMS = ("hogbom", "multiscale")


@dataclass(frozen=True, eq=False)
class CleanParams:
    """Parameters of one minor-cycle call (Hogbom, multiscale or MS-MFS).

    Attributes
    ----------
    gain : float
        Loop gain.
    niter : int
        Maximum number of components in this call.
    threshold : float
        Stop when the absolute (masked) peak is <= threshold (Jy/beam).
    auto_threshold : float or None
        Stop when the peak is <= ``auto_threshold * sigma``, sigma = 1.4826 MAD of the
        residual at the start of the call (over the mask if given).
    mgain : float or None
        Stop when the peak has dropped to ``(1 - mgain) * starting peak``.
    mask : ndarray [ny, nx] bool or None
        Components are only searched where True.
    scales_px : tuple of float
        Multiscale component full widths in pixels (0 = point); ignored by Hogbom.
    scale_bias : float
        Small-scale bias of multiscale / MS-MFS.
    psf_support : int or None
        Subtract only the central ``(2 psf_support + 1)^2`` PSF patch (None = full PSF).
    double : bool
        float64 working residual (default float32; models are always float64).
    subminor : bool
        Hogbom with sub-minor loops (default; :mod:`~arl_mpi.deconvolution.subminor`); False:
        the textbook loop (:func:`~arl_mpi.deconvolution.hogbom.hogbom_exact`).
    nthreads : int
        Threads for the FFTs of the minor cycle (ducc0).
    search_weight : ndarray [ny, nx] or None
        Peaks are searched (and thresholds apply) on ``|residual| * search_weight`` (local RMS:
        ``rms_min / rms``); Hogbom with sub-minor loops only.
    noise_sigma : float or None
        The sigma of ``auto_threshold`` (None: the MAD of the residual; local RMS: ``rms_min``).
    """

    gain: float = 0.1
    niter: int = 1000
    threshold: float = 0.0
    auto_threshold: float | None = None
    mgain: float | None = None
    mask: np.ndarray | None = None
    scales_px: tuple[float, ...] = (0, 4, 8, 16)
    scale_bias: float = 0.6
    psf_support: int | None = None
    double: bool = False
    subminor: bool = True
    nthreads: int = 1
    search_weight: np.ndarray | None = None
    noise_sigma: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales_px", tuple(float(s) for s in self.scales_px))
        if not self.scales_px:
            raise ConfigError("scales_px must name at least one scale")
        if self.niter < 0:
            raise ConfigError(f"niter must be >= 0, got {self.niter}")
        if not 0.0 < self.gain <= 1.0:
            raise ConfigError(f"gain must be in (0, 1], got {self.gain}")
        if self.mgain is not None and not 0.0 < self.mgain <= 1.0:
            raise ConfigError(f"mgain must be in (0, 1] or None, got {self.mgain}")
        if self.nthreads < 1:
            raise ConfigError(f"nthreads must be >= 1, got {self.nthreads}")

    def replace(self, **changes: Any) -> CleanParams:
        """Copy with some fields changed."""
        return replace(self, **changes)


@dataclass
class CleanSettings:
    """Minor/major-cycle settings shared by the serial and distributed loops.

    Attributes
    ----------
    algorithm : {'hogbom', 'multiscale'}
        Single-channel algorithm; with joined channels, 'multiscale' selects multiscale
        MS-MFS and 'hogbom' point-component MS-MFS.
    niter : int
        Total component budget over all major cycles.
    gain : float
        Loop gain.
    mgain : float or None
        Major-cycle gain (minor cycle stops when the peak fell to (1 - mgain) of its start).
    threshold : float
        Absolute stopping threshold (Jy/beam).
    auto_threshold : float or None
        Threshold in units of the MAD noise of the residual (re-estimated every cycle).
    nmiter : int
        Maximum number of major cycles.
    scales_px : list of float
        Multiscale scales.
    scale_bias : float
    mask : ndarray or None
    psf_support : int or None
        See :class:`CleanParams`.
    double : bool
        See :class:`CleanParams`.
    nthreads : int
        See :class:`CleanParams`.
    auto_mask : float or None
        WSClean's auto-mask level in sigma (see :mod:`~arl_mpi.deconvolution.masks`).
    local_rms_window : float or None
        Local-RMS window in PSF main-lobe widths (None: one global noise value).
    automask : AutoMaskState
        Auto-masking state carried across major cycles (updated by the minor cycles).
    deconvolver : {'auto', 'arl', 'radler'}
        Engine of the single-channel minor cycle: ours, Radler (WSClean's library, the
        ``[radler]`` extra) or ``auto`` (see :func:`~arl_mpi.deconvolution.engines.choose_engine`).
    """

    algorithm: str = "hogbom"
    niter: int = 1000
    gain: float = 0.1
    mgain: float | None = 0.8
    threshold: float = 0.0
    auto_threshold: float | None = None
    nmiter: int = 10
    scales_px: list[float] = field(default_factory=lambda: [0, 4, 8, 16])
    scale_bias: float = 0.6
    mask: np.ndarray | None = None
    psf_support: int | None = None
    double: bool = False
    nthreads: int = 1
    deconvolver: str = "auto"
    auto_mask: float | None = None
    local_rms_window: float | None = None
    automask: AutoMaskState = field(default_factory=AutoMaskState, repr=False)

    def check_algorithm(self) -> None:
        """ConfigError unless ``algorithm`` is one of :data:`ALGORITHMS`."""
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(
                f"unknown algorithm {self.algorithm!r} (expected one of {', '.join(ALGORITHMS)})"
            )

    def minor_params(self, niter_done: int = 0) -> CleanParams:
        """The :class:`CleanParams` of the next minor cycle.

        The component budget is what remains of ``niter`` after ``niter_done``; for
        ``algorithm == 'hogbom'`` the scales are ``(0,)`` (point components, also for MS-MFS).
        """
        self.check_algorithm()
        return CleanParams(
            gain=self.gain,
            niter=max(0, int(self.niter) - int(niter_done)),
            threshold=self.threshold,
            auto_threshold=self.auto_threshold,
            mgain=self.mgain,
            mask=self.mask,
            scales_px=tuple(self.scales_px) if self.algorithm == "multiscale" else (0,),
            scale_bias=self.scale_bias,
            psf_support=self.psf_support,
            double=self.double,
            nthreads=self.nthreads,
        )


def as_params(params: CleanParams | CleanSettings | None) -> CleanParams:
    """Normalise the settings argument of an algorithm.

    None gives the defaults; a :class:`CleanSettings` gives its first minor cycle's
    parameters (whole budget).
    """
    if params is None:
        return CleanParams()
    if isinstance(params, CleanParams):
        return params
    if isinstance(params, CleanSettings):
        return params.minor_params(0)
    raise ConfigError(f"expected CleanParams or CleanSettings, got {type(params).__name__}")


def masked_peak(img: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Absolute peak of ``img`` where ``mask`` is True (whole image if None; 0 if empty)."""
    a = np.abs(np.asarray(img))
    if mask is not None:
        a = np.where(mask, a, 0.0)
    return float(a.max()) if a.size else 0.0


def stop_rule(
    residual_peak: float,
    noise_sigma: float,
    niter_done: int,
    cycle: int,
    settings: CleanSettings,
    last_minor_niter: int | None = None,
) -> tuple[bool, str]:
    """Decide whether to start another major cycle.

    Parameters
    ----------
    residual_peak : float
        Absolute (masked) peak of the current residual.
    noise_sigma : float
        MAD noise estimate of the current residual.
    niter_done : int
        Components done so far.
    cycle : int
        Major cycles completed so far.
    settings : CleanSettings
    last_minor_niter : int or None
        Components found by the last minor cycle (0 means no progress is possible).

    Returns
    -------
    stop : bool
    reason : str
        One of 'niter', 'threshold', 'auto_threshold', 'nmiter', 'no_progress', or ''.
    """
    if niter_done >= settings.niter:
        return True, "niter"
    if residual_peak <= settings.threshold:
        return True, "threshold"
    if (
        settings.auto_threshold is not None
        and residual_peak <= settings.auto_threshold * noise_sigma
    ):
        return True, "auto_threshold"
    if cycle >= settings.nmiter:
        return True, "nmiter"
    if last_minor_niter == 0:
        return True, "no_progress"
    return False, ""
