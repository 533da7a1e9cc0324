"""UVFITS (AIPS random-groups) reader: astropy.io.fits, memory-mapped, read-only.

Conventions (AIPS Memo 117, as written by CASA/AIPS/pyuvdata): UU/VV/WW are in seconds
of light travel time (x c -> metres); DATE (one or two parameters, summed) is the Julian
date; BASELINE = 256*ant1 + ant2 (1-based) or ANTENNA1/ANTENNA2 parameters; the data axis
holds (re, im, weight) with weight <= 0 meaning flagged. The visibility and uvw sign
conventions are the same as the MeasurementSet's, so values are taken as they are.
Correlations are reordered to MS order (RR RL LR LL / XX XY YX YY).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import EarthLocation, SkyCoord
from astropy.io import fits

from arl_mpi.constants import SPEED_OF_LIGHT
from arl_mpi.errors import InputError
from arl_mpi.io.store import StoreMeta
from arl_mpi.models import POLARISATION_FRAMES, Configuration, Visibility

log = logging.getLogger(__name__)

_STOKES_CODES = {
    -1: "RR",
    -2: "LL",
    -3: "RL",
    -4: "LR",
    -5: "XX",
    -6: "YY",
    -7: "XY",
    -8: "YX",
    1: "I",
}


class UVFitsReader:
    """Open a UVFITS file; read the metadata now and any rows/channels later."""

    def __init__(self, path: str | Path, field: int = 0) -> None:
        self.path = Path(path)
        self.field = field
        if not self.path.is_file():
            raise InputError(f"{self.path}: no such UVFITS file")
        err = None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                self.hdul = fits.open(self.path, mode="readonly", memmap=True)
                g = self.hdul[0]
                if not g.header.get("GROUPS"):
                    raise InputError(
                        f"{self.path}: not a UVFITS file (no random groups in the primary HDU)"
                    )
                self.header = g.header
                self.data = g.data
                _ = self.data.data.shape  # forces reading the structure: truncated files fail here
                self._check_complete()
                self._times = self._jd_seconds(np.arange(len(self.data)))
            except InputError:
                raise
            except (OSError, ValueError, TypeError, IndexError, KeyError) as e:
                err = e
        for w in caught:
            if "truncated" in str(w.message):
                raise InputError(
                    f"{self.path}: truncated UVFITS file ({str(w.message).split(':')[-1].strip()})"
                )
        if err is not None:
            raise InputError(
                f"{self.path}: not a readable UVFITS file ({str(err).splitlines()[0][:120]})"
            )
        self._axes()
        self._select_source()

    def _check_complete(self) -> None:
        """Refuse a file that ends before its last HDU does (astropy drops such an HDU silently)."""
        self.hdul.readall()
        size = self.path.stat().st_size
        last = self.hdul.fileinfo(len(self.hdul) - 1)
        end = last["datLoc"] + last["datSpan"]
        if end > size or size % 2880:
            raise InputError(
                f"{self.path}: truncated UVFITS file ({size} bytes; its HDUs need "
                f"{max(end, -(-size // 2880) * 2880)} bytes in 2880-byte FITS blocks)"
            )

    def _select_source(self) -> None:
        """Rows of one source: multi-source files (SOURCE parameter + AIPS SU table) by ``field``."""
        self.source = None
        self.rows = np.arange(len(self.data))
        names = [p.upper() for p in self.data.parnames]
        if "SOURCE" not in names or "AIPS SU" not in self.hdul:
            if self.field != 0:
                raise InputError(
                    f"{self.path}: single-source UVFITS has only field 0 (asked for {self.field})"
                )
            return
        su = self.hdul["AIPS SU"].data
        if not 0 <= self.field < len(su):
            raise InputError(
                f"{self.path}: no field {self.field} (AIPS SU table has 0-{len(su) - 1})"
            )
        self.source = su[self.field]
        sid = int(self.source["ID. NO."])
        src = np.round(self._par("SOURCE")).astype(np.int64)
        self.rows = np.nonzero(src == sid)[0]
        if self.rows.size == 0:
            raise InputError(f"{self.path}: no rows for field {self.field} (source id {sid})")
        self._times = self._times[self.rows]

    # -- metadata ----------------------------------------------------------------------------
    def _axes(self) -> None:
        h = self.header
        naxis = h["NAXIS"]
        ctypes = {h[f"CTYPE{i}"].strip(): i for i in range(2, naxis + 1)}
        for need in ("COMPLEX", "STOKES", "FREQ"):
            if need not in ctypes:
                raise InputError(f"{self.path}: missing {need} axis in the UVFITS header")
        self.ctypes = ctypes
        shape = self.data.data.shape  # numpy order: groups, then FITS axes NAXIS..2 reversed
        if shape[-1] < 2:
            raise InputError(f"{self.path}: COMPLEX axis has {shape[-1]} elements")
        ia = ctypes["STOKES"]
        codes = (
            h[f"CRVAL{ia}"] + (np.arange(h[f"NAXIS{ia}"]) + 1 - h[f"CRPIX{ia}"]) * h[f"CDELT{ia}"]
        )
        try:
            labels = [_STOKES_CODES[int(round(c))] for c in codes]
        except KeyError:
            raise InputError(f"{self.path}: unsupported STOKES codes {codes.tolist()}") from None
        order = None
        for frame in POLARISATION_FRAMES.values():
            if sorted(frame) == sorted(labels):
                order = [labels.index(p) for p in frame]
                self.polarisations = list(frame)
                break
        if order is None:
            raise InputError(f"{self.path}: correlations {labels} form no known polarisation frame")
        self.pol_order = np.array(order)
        iff = ctypes["FREQ"]
        nchan = h[f"NAXIS{iff}"]
        base = h[f"CRVAL{iff}"] + (np.arange(nchan) + 1 - h[f"CRPIX{iff}"]) * h[f"CDELT{iff}"]
        if_offsets = np.zeros(1)
        if "IF" in ctypes and h[f"NAXIS{ctypes['IF']}"] > 1:
            fq = self.hdul["AIPS FQ"].data if "AIPS FQ" in self.hdul else None
            if fq is None:
                raise InputError(f"{self.path}: several IFs but no AIPS FQ table")
            if_offsets = np.atleast_1d(fq["IF FREQ"][0]).astype(float)
        self.nif = if_offsets.size
        self.frequency = (if_offsets[:, None] + base[None, :]).reshape(-1)
        self.channel_width = np.full(self.frequency.size, abs(float(h[f"CDELT{iff}"])))
        if np.any(np.diff(self.frequency) <= 0) and self.frequency.size > 1:
            raise InputError(
                f"{self.path}: IFs/channels are not in increasing frequency; split them first"
            )

    def _par(self, name: str) -> np.ndarray:
        return np.asarray(self.data.par(name), dtype=np.float64)

    def _jd_seconds(self, rows: np.ndarray) -> np.ndarray:
        jd = self._par("DATE")[rows]  # astropy sums repeated DATE parameters and applies PZERO
        return (jd - 2400000.5) * 86400.0

    @property
    def times(self) -> np.ndarray:
        """Row times, MJD seconds."""
        return self._times

    def antennas(self) -> tuple[np.ndarray, np.ndarray]:
        """0-based antenna indices (into the AN table's rows) of every row."""
        names = [p.upper() for p in self.data.parnames]
        if "BASELINE" in names:
            bl = np.round(self._par("BASELINE")).astype(np.int64)
            a1, a2 = bl // 256, bl % 256
        elif "ANTENNA1" in names:
            a1 = np.round(self._par("ANTENNA1")).astype(np.int64)
            a2 = np.round(self._par("ANTENNA2")).astype(np.int64)
        else:
            raise InputError(f"{self.path}: no BASELINE or ANTENNA1/2 random parameters")
        nosta = self._an_numbers()
        lookup = {int(n): i for i, n in enumerate(nosta)}
        try:
            return (
                np.array([lookup[int(a)] for a in a1], np.int32),
                np.array([lookup[int(a)] for a in a2], np.int32),
            )
        except KeyError as e:
            raise InputError(
                f"{self.path}: row refers to antenna {e} not in the AN table"
            ) from None

    def _an_numbers(self) -> np.ndarray:
        return np.asarray(self.hdul["AIPS AN"].data["NOSTA"])

    def configuration(self) -> Configuration:
        """Antennas from the AIPS AN table (STABXYZ + ARRAYX/Y/Z, ITRF)."""
        if "AIPS AN" not in self.hdul:
            raise InputError(f"{self.path}: no AIPS AN (antenna) table")
        an = self.hdul["AIPS AN"]
        hd = an.header
        xyz = np.asarray(an.data["STABXYZ"], dtype=np.float64)
        centre = np.array(
            [hd.get("ARRAYX", 0.0), hd.get("ARRAYY", 0.0), hd.get("ARRAYZ", 0.0)], dtype=np.float64
        )
        frame = str(hd.get("FRAME", "ITRF")).strip().upper()
        if frame not in ("ITRF", "????", ""):
            raise InputError(f"{self.path}: antenna frame {frame!r} is not supported (ITRF only)")
        absolute = np.median(np.linalg.norm(xyz, axis=1)) > 6.0e6  # already geocentric (CASA, VLA)
        if not absolute:
            if np.linalg.norm(centre) < 1e6:
                raise InputError(
                    f"{self.path}: antenna positions are relative but ARRAYX/Y/Z is not set"
                )
            # AIPS Memo 117: relative to the array centre, in ECEF rotated so that x passes
            # through the array's meridian; rotate back by the centre's longitude
            lon = np.arctan2(centre[1], centre[0])
            c, s_ = np.cos(lon), np.sin(lon)
            xyz = np.stack(
                [c * xyz[:, 0] - s_ * xyz[:, 1], s_ * xyz[:, 0] + c * xyz[:, 1], xyz[:, 2]], axis=1
            )
            xyz = xyz + centre
        names = [str(n).replace("\x00", "").strip() for n in an.data["ANNAME"]]
        diam = (
            np.asarray(an.data["DIAMETER"], dtype=float)
            if "DIAMETER" in an.columns.names
            else np.zeros(len(names))
        )
        diam = np.where(diam > 0, diam, 25.0)
        ref = (
            centre if np.linalg.norm(centre) > 1e6 else xyz.mean(axis=0)
        )  # VLA/CASA write ARRAYX = 0
        loc = EarthLocation.from_geocentric(*ref, unit=u.m)
        return Configuration(
            name=str(self.header.get("TELESCOP", "UNKNOWN")).strip(),
            names=names,
            xyz=xyz,
            diameter=diam,
            location=loc,
        )

    def phase_centre(self) -> SkyCoord:
        """The selected source's SU-table position, else the RA/DEC axes' CRVAL (degrees).

        The frame comes from RADESYS (FK4 for B1950, else FK5/ICRS; J2000 is taken as ICRS,
        a difference of < 0.03 arcsec). OBSRA/OBSDEC is the pointing centre, used only when
        there are no RA/DEC axes.
        """
        h = self.header
        if self.source is not None:
            ra, dec = float(self.source["RAEPO"]), float(self.source["DECEPO"])
            epoch = float(self.source["EPOCH"]) if "EPOCH" in self.source.array.names else 2000.0
        else:
            ira, idec = self.ctypes.get("RA"), self.ctypes.get("DEC")
            if ira is not None and idec is not None:
                ra, dec = float(h[f"CRVAL{ira}"]), float(h[f"CRVAL{idec}"])
            elif "OBSRA" in h and "OBSDEC" in h:
                ra, dec = float(h["OBSRA"]), float(h["OBSDEC"])
            else:
                raise InputError(
                    f"{self.path}: no phase centre (no RA/DEC axes, SU table or OBSRA/OBSDEC)"
                )
            epoch = float(h.get("EPOCH", h.get("EQUINOX", 2000.0)) or 2000.0)
        radesys = str(h.get("RADESYS", "")).strip().upper()
        if radesys == "FK4" or (not radesys and abs(epoch - 1950.0) < 1e-6):
            c = SkyCoord(ra=ra * u.deg, dec=dec * u.deg, frame="fk4", equinox="B1950")
            return SkyCoord(c.icrs.ra, c.icrs.dec, frame="icrs")
        return SkyCoord(ra=ra * u.deg, dec=dec * u.deg, frame="icrs")

    def meta(self) -> StoreMeta:
        """Observation-wide metadata for the store."""
        return StoreMeta(
            phase_centre=self.phase_centre(),
            frequency=self.frequency,
            channel_width=self.channel_width,
            polarisations=self.polarisations,
            configuration=self.configuration(),
            telescope=self.configuration().name,
            provenance={
                "ingested_from": str(self.path.resolve()),
                "format": "UVFITS",
                "size": self.path.stat().st_size,
                "mtime": self.path.stat().st_mtime,
            },
        )

    # -- data ----------------------------------------------------------------------------------
    def read(self, idx: np.ndarray, chans: slice) -> Visibility:
        """Rows (indices into this reader's selected rows) and a channel range (flags from weight <= 0).

        Only those groups are read from the memory map.
        """
        idx = np.asarray(idx)
        rows = self.rows[idx]
        arr = np.asarray(
            self.data.data[rows], dtype=np.float32
        )  # [n, (dec, ra,) (if,) chan, pol, 3]
        arr = arr.reshape(arr.shape[0], -1, arr.shape[-2], arr.shape[-1])  # [n, if*chan, pol, 3]
        arr = arr[:, chans][:, :, self.pol_order]
        vis = (arr[..., 0] + 1j * arr[..., 1]).astype(np.complex64)
        weight = arr[..., 2] if arr.shape[-1] > 2 else np.ones(arr.shape[:-1], np.float32)
        flags = ~(weight > 0) | ~np.isfinite(vis)
        weight = np.where(flags, 0.0, weight).astype(np.float32)
        uvw = np.stack([self._par(n)[rows] for n in ("UU", "VV", "WW")], axis=1) * SPEED_OF_LIGHT
        if not hasattr(self, "_ants"):
            self._ants = self.antennas()
        a1, a2 = self._ants
        inttim = (
            self._par("INTTIM")[rows] if "INTTIM" in self.data.parnames else np.zeros(rows.size)
        )
        return Visibility(
            time=self.times[idx],
            uvw=uvw,
            antenna1=a1[rows],
            antenna2=a2[rows],
            vis=vis,
            weight=weight,
            flags=flags,
            frequency=self.frequency[chans],
            channel_width=self.channel_width[chans],
            polarisations=self.polarisations,
            phase_centre=self.phase_centre(),
            integration_time=inttim,
        )

    def close(self) -> None:
        """Release the memory map."""
        self.hdul.close()
