"""Data models: dataclasses over numpy arrays, validated on construction.

The models are deliberately thin: they carry arrays plus the metadata needed to interpret
them (frequencies, polarisations, phase centre, WCS).  Numeric code takes the arrays;
the models exist so that a partition or an image can be passed around, stored and checked
as one object.

Conventions
-----------
* ``Visibility.vis`` is ``[row, chan, pol]``; ``uvw`` is in metres, ``time`` in MJD seconds (UTC).
* ``flags`` is ``True`` where a sample is bad.
* ``Image.data`` is ``[chan, pol, y, x]`` with an astropy WCS of 4 axes
  (RA---SIN, DEC--SIN, FREQ, STOKES) in FITS order (x, y, freq, stokes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from astropy.coordinates import EarthLocation, SkyCoord
from astropy.wcs import WCS

from arl_mpi.errors import InputError

__all__ = [
    "Configuration",
    "Visibility",
    "Image",
    "SkyComponent",
    "POLARISATION_FRAMES",
    "PARALLEL_HANDS",
    "ModelError",
    "is_parallel_hand",
    "parallel_hand_mask",
]

#: Recognised polarisation frames and their correlation labels (MS order).
POLARISATION_FRAMES: dict[str, list[str]] = {
    "linear": ["XX", "XY", "YX", "YY"],
    "linearnp": ["XX", "YY"],
    "circular": ["RR", "RL", "LR", "LL"],
    "circularnp": ["RR", "LL"],
    "stokesI": ["I"],
    "stokesIQUV": ["I", "Q", "U", "V"],
}


#: Parallel-hand correlations: each equals Stokes I for an unpolarised source.
PARALLEL_HANDS: tuple[str, ...] = ("XX", "YY", "RR", "LL")


def is_parallel_hand(label: str, *, include_stokes_i: bool = True) -> bool:
    """Whether a correlation label is a parallel hand (``XX``, ``YY``, ``RR``, ``LL``).

    Parameters
    ----------
    label : str
        Correlation label, case-insensitive.
    include_stokes_i : bool, optional
        Also count Stokes ``I`` (default): it, too, equals the flux of an unpolarised source.

    Returns
    -------
    bool
    """
    lab = str(label).upper()
    return lab in PARALLEL_HANDS or (include_stokes_i and lab == "I")


def parallel_hand_mask(labels: Sequence[str], *, include_stokes_i: bool = True) -> np.ndarray:
    """Boolean mask over ``labels``: True where :func:`is_parallel_hand`.

    As floats, the factor by which an unpolarised (Stokes I) signal enters each correlation.
    """
    return np.array([is_parallel_hand(p, include_stokes_i=include_stokes_i) for p in labels],
                    dtype=bool)


class ModelError(InputError):
    """A data model was constructed with inconsistent or invalid fields."""


def _require(cond: bool, what: str) -> None:
    if not cond:
        raise ModelError(what)


def _as(name: str, arr, dtype, ndim: int) -> np.ndarray:
    a = np.asarray(arr)
    _require(a.ndim == ndim, f"{name}: expected {ndim} dimensions, got shape {a.shape}")
    if dtype is not None:
        kind = np.dtype(dtype).kind
        if kind == "c":
            _require(a.dtype.kind in "fc", f"{name}: expected complex values, got {a.dtype}")
        elif kind == "f":
            _require(a.dtype.kind in "fiu", f"{name}: expected real values, got {a.dtype}")
        elif kind in "iu":
            _require(a.dtype.kind in "iu", f"{name}: expected integers, got {a.dtype}")
        elif kind == "b":
            _require(a.dtype.kind == "b", f"{name}: expected booleans, got {a.dtype}")
        if a.dtype.kind != kind and not (kind in "iu" and a.dtype.kind in "iu"):
            a = a.astype(dtype)
    return a


def frame_of(pols: list[str]) -> str:
    """Return the polarisation frame name for a list of correlation labels.

    Raises
    ------
    ModelError
        If the labels form no known frame.
    """
    for name, labels in POLARISATION_FRAMES.items():
        if list(pols) == labels:
            return name
    raise ModelError(f"polarisations: unknown set {list(pols)}; known: {POLARISATION_FRAMES}")


@dataclass
class Configuration:
    """An array configuration.

    Attributes
    ----------
    name : str
        Array name, e.g. ``"LOW-CORE"``.
    names : list of str
        Antenna/station names.
    xyz : ndarray [nant, 3]
        Geocentric (ITRF) positions in metres.
    diameter : ndarray [nant]
        Dish/station diameters in metres.
    location : EarthLocation
        Array reference position (site).
    """

    name: str
    names: list[str]
    xyz: np.ndarray
    diameter: np.ndarray
    location: EarthLocation

    def __post_init__(self) -> None:
        self.xyz = _as("Configuration.xyz", self.xyz, np.float64, 2)
        _require(self.xyz.shape[1] == 3, f"Configuration.xyz: expected [nant, 3], got {self.xyz.shape}")
        n = self.xyz.shape[0]
        _require(n >= 2, "Configuration: need at least two antennas")
        self.diameter = _as("Configuration.diameter", self.diameter, np.float64, 1)
        _require(self.diameter.shape == (n,), f"Configuration.diameter: expected [{n}]")
        _require(len(self.names) == n, f"Configuration.names: expected {n} names, got {len(self.names)}")
        _require(isinstance(self.location, EarthLocation), "Configuration.location: expected EarthLocation")

    @property
    def nant(self) -> int:
        """Number of antennas."""
        return self.xyz.shape[0]


@dataclass
class Visibility:
    """One partition of visibilities (a block of times x a block of channels).

    Attributes
    ----------
    time : ndarray [nrow]
        Sample centre times, MJD seconds (UTC).
    uvw : ndarray [nrow, 3]
        Baseline coordinates in metres, antenna2 - antenna1 convention (as in the MS).
    antenna1, antenna2 : ndarray [nrow] int32
    vis : ndarray [nrow, nchan, npol] complex
    weight : ndarray [nrow, nchan, npol] float32
    flags : ndarray [nrow, nchan, npol] bool, True = bad
    frequency : ndarray [nchan] Hz
    channel_width : ndarray [nchan] Hz
    polarisations : list of str, correlation labels, e.g. ``["XX", "XY", "YX", "YY"]``
    phase_centre : SkyCoord (ICRS)
    integration_time : ndarray [nrow] seconds
    """

    time: np.ndarray
    uvw: np.ndarray
    antenna1: np.ndarray
    antenna2: np.ndarray
    vis: np.ndarray
    weight: np.ndarray
    flags: np.ndarray
    frequency: np.ndarray
    channel_width: np.ndarray
    polarisations: list[str]
    phase_centre: SkyCoord
    integration_time: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.time = _as("Visibility.time", self.time, np.float64, 1)
        nrow = self.time.shape[0]
        self.uvw = _as("Visibility.uvw", self.uvw, np.float64, 2)
        _require(self.uvw.shape == (nrow, 3), f"Visibility.uvw: expected [{nrow}, 3], got {self.uvw.shape}")
        self.antenna1 = _as("Visibility.antenna1", self.antenna1, np.int32, 1)
        self.antenna2 = _as("Visibility.antenna2", self.antenna2, np.int32, 1)
        for nm, a in (("antenna1", self.antenna1), ("antenna2", self.antenna2)):
            _require(a.shape == (nrow,), f"Visibility.{nm}: expected [{nrow}], got {a.shape}")
        self.frequency = _as("Visibility.frequency", self.frequency, np.float64, 1)
        nchan = self.frequency.shape[0]
        _require(nchan >= 1, "Visibility.frequency: need at least one channel")
        _require(bool(np.all(self.frequency > 0)), "Visibility.frequency: must be positive (Hz)")
        self.channel_width = _as("Visibility.channel_width", self.channel_width, np.float64, 1)
        _require(self.channel_width.shape == (nchan,), f"Visibility.channel_width: expected [{nchan}]")
        frame_of(self.polarisations)
        npol = len(self.polarisations)
        shape = (nrow, nchan, npol)
        self.vis = _as("Visibility.vis", self.vis, np.complex128, 3)
        _require(self.vis.shape == shape, f"Visibility.vis: expected {shape}, got {self.vis.shape}")
        self.weight = _as("Visibility.weight", self.weight, np.float32, 3)
        _require(self.weight.shape == shape, f"Visibility.weight: expected {shape}, got {self.weight.shape}")
        self.flags = _as("Visibility.flags", self.flags, np.bool_, 3)
        _require(self.flags.shape == shape, f"Visibility.flags: expected {shape}, got {self.flags.shape}")
        _require(isinstance(self.phase_centre, SkyCoord), "Visibility.phase_centre: expected SkyCoord")
        if self.integration_time is None:
            self.integration_time = np.zeros(nrow)
        self.integration_time = _as("Visibility.integration_time", self.integration_time, np.float64, 1)
        _require(self.integration_time.shape == (nrow,), f"Visibility.integration_time: expected [{nrow}]")

    @property
    def nrow(self) -> int:
        """Number of rows (time x baseline samples)."""
        return self.vis.shape[0]

    @property
    def nchan(self) -> int:
        """Number of channels."""
        return self.vis.shape[1]

    @property
    def npol(self) -> int:
        """Number of correlation products."""
        return self.vis.shape[2]

    @property
    def nvis(self) -> int:
        """Number of complex samples (rows x channels x polarisations)."""
        return int(self.vis.size)

    @property
    def nbytes(self) -> int:
        """Bytes held by the array fields."""
        return int(
            sum(a.nbytes for a in (self.time, self.uvw, self.antenna1, self.antenna2, self.vis, self.weight,
                                   self.flags))
        )


@dataclass
class Image:
    """An image cube ``[chan, pol, y, x]`` with a 4-axis celestial/spectral/Stokes WCS.

    Attributes
    ----------
    data : ndarray [nchan, npol, ny, nx]
    wcs : astropy.wcs.WCS with 4 axes in FITS order (RA---SIN, DEC--SIN, FREQ, STOKES)
    bunit : str, e.g. ``"JY/BEAM"`` or ``"JY/PIXEL"``
    beam : (bmaj, bmin, bpa) in degrees, or None
    """

    data: np.ndarray
    wcs: WCS
    bunit: str = "JY/BEAM"
    beam: tuple[float, float, float] | None = None
    history: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.data = _as("Image.data", self.data, None, 4)
        _require(self.data.dtype.kind == "f", f"Image.data: expected real values, got {self.data.dtype}")
        _require(isinstance(self.wcs, WCS), "Image.wcs: expected astropy.wcs.WCS")
        _require(self.wcs.naxis == 4, f"Image.wcs: expected 4 axes, got {self.wcs.naxis}")
        ctype = [c.upper() for c in self.wcs.wcs.ctype]
        _require(ctype[0].startswith("RA--") and ctype[1].startswith("DEC-"),
                 f"Image.wcs: first axes must be RA/DEC, got {ctype}")
        _require(ctype[2].startswith("FREQ"), f"Image.wcs: third axis must be FREQ, got {ctype[2]}")
        _require(ctype[3].startswith("STOKES"), f"Image.wcs: fourth axis must be STOKES, got {ctype[3]}")
        if self.beam is not None:
            _require(len(self.beam) == 3 and self.beam[0] > 0 and self.beam[1] > 0, f"Image.beam: invalid {self.beam}")

    @property
    def shape(self) -> tuple[int, ...]:
        """Array shape ``(nchan, npol, ny, nx)``."""
        return self.data.shape

    @property
    def cell_rad(self) -> float:
        """Pixel size in radians (from the DEC axis increment)."""
        return float(np.deg2rad(abs(self.wcs.wcs.cdelt[1])))


@dataclass
class SkyComponent:
    """A point source with a power-law spectrum.

    Attributes
    ----------
    direction : SkyCoord
    flux : float, Jy (Stokes I) at ``ref_freq``
    ref_freq : float, Hz
    spectral_index : float, ``S(nu) = flux * (nu / ref_freq) ** spectral_index``
    line_peak : float, Jy, peak of an optional Gaussian spectral line added to the continuum
    line_centre : float, Hz, line centre frequency
    line_fwhm : float, Hz, line full width at half maximum (0 = no line)
    """

    direction: SkyCoord
    flux: float
    ref_freq: float
    spectral_index: float = 0.0
    line_peak: float = 0.0
    line_centre: float = 0.0
    line_fwhm: float = 0.0

    def __post_init__(self) -> None:
        _require(isinstance(self.direction, SkyCoord), "SkyComponent.direction: expected SkyCoord")
        _require(np.isfinite(self.flux), "SkyComponent.flux: must be finite")
        _require(self.ref_freq > 0, "SkyComponent.ref_freq: must be positive (Hz)")

    def flux_at(self, freq: np.ndarray) -> np.ndarray:
        """Stokes-I flux density (Jy) at the frequencies ``freq`` (Hz): continuum plus line."""
        f = np.asarray(freq, dtype=float)
        s = self.flux * (f / self.ref_freq) ** self.spectral_index
        if self.line_fwhm > 0 and self.line_peak:
            sigma = self.line_fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
            s = s + self.line_peak * np.exp(-0.5 * ((f - self.line_centre) / sigma) ** 2)
        return s


def image_wcs(
    phase_centre: SkyCoord,
    npix_x: int,
    npix_y: int,
    cell_rad: float,
    frequency: float | np.ndarray,
    channel_width: float,
    stokes: list[str] | None = None,
) -> WCS:
    """Build the standard image WCS used across arl_mpi.

    Pixel ``(x, y)`` (0-based) maps to direction cosines ``l = -(x - nx//2) * cell``,
    ``m = (y - ny//2) * cell``: RA---SIN with CDELT1 = -cell, DEC--SIN with CDELT2 = +cell,
    reference pixel (FITS, 1-based) ``n//2 + 1``.

    Parameters
    ----------
    phase_centre : SkyCoord
    npix_x, npix_y : int
    cell_rad : float, pixel size in radians
    frequency : float or ndarray, frequency (Hz) of the first channel (or all channels)
    channel_width : float, Hz
    stokes : list of str, default ``["I"]``

    Returns
    -------
    WCS with 4 axes.
    """
    stokes = stokes or ["I"]
    codes = {"I": 1, "Q": 2, "U": 3, "V": 4, "RR": -1, "LL": -2, "RL": -3, "LR": -4,
             "XX": -5, "YY": -6, "XY": -7, "YX": -8}
    w = WCS(naxis=4)
    cell_deg = float(np.rad2deg(cell_rad))
    icrs = phase_centre.icrs
    w.wcs.ctype = ["RA---SIN", "DEC--SIN", "FREQ", "STOKES"]
    w.wcs.cunit = ["deg", "deg", "Hz", ""]
    w.wcs.crpix = [npix_x // 2 + 1, npix_y // 2 + 1, 1.0, 1.0]
    w.wcs.cdelt = [-cell_deg, cell_deg, float(channel_width) or 1.0, 1.0]
    f0 = float(np.atleast_1d(frequency)[0])
    w.wcs.crval = [icrs.ra.deg, icrs.dec.deg, f0, float(codes[stokes[0]])]
    if len(stokes) > 1:
        step = codes[stokes[1]] - codes[stokes[0]]
        w.wcs.cdelt[3] = float(step)
    w.wcs.radesys = "ICRS"
    w.wcs.equinox = 2000.0
    w.wcs.specsys = "TOPOCENT"
    return w
