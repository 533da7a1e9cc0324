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

#: Groups read per block (bounds the temporary float32 copy of a read; progress granularity).
ROW_BLOCK = 65536

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
                self._times = None  # read on first use (the DATE of every group)
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

    def _par(self, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        """Random parameter ``name`` of ``rows`` (default: every group), scaled and summed by astropy."""
        if rows is None:
            return np.asarray(self.data.par(name), dtype=np.float64)
        rows = np.asarray(rows)
        if rows.size and np.all(np.diff(rows) == 1):  # a slice reads only those groups
            return np.asarray(self.data[rows[0] : rows[-1] + 1].par(name), dtype=np.float64)
        return np.asarray(self.data.par(name), dtype=np.float64)[rows]

    def _jd_seconds(self, rows: np.ndarray) -> np.ndarray:
        jd = self._par("DATE", rows)  # astropy sums repeated DATE parameters and applies PZERO
        return (jd - 2400000.5) * 86400.0

    @property
    def times(self) -> np.ndarray:
        """Times of the selected rows, MJD seconds."""
        if self._times is None:
            self._times = self._jd_seconds(self.rows)
        return self._times

    def antennas(self, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """0-based antenna indices (into the AN table's rows) of ``rows`` (default: every group)."""
        names = [p.upper() for p in self.data.parnames]
        if "BASELINE" in names:
            bl = np.round(self._par("BASELINE", rows)).astype(np.int64)
            a1, a2 = bl // 256, bl % 256
        elif "ANTENNA1" in names:
            a1 = np.round(self._par("ANTENNA1", rows)).astype(np.int64)
            a2 = np.round(self._par("ANTENNA2", rows)).astype(np.int64)
        else:
            raise InputError(f"{self.path}: no BASELINE or ANTENNA1/2 random parameters")
        nosta = np.asarray(self._an_numbers(), dtype=np.int64)
        order = np.argsort(nosta, kind="stable")
        known = nosta[order]
        out = []
        for a in (a1, a2):
            pos = np.clip(np.searchsorted(known, a), 0, max(known.size - 1, 0))
            bad = known[pos] != a if known.size else np.ones(a.shape, bool)
            if np.any(bad):
                raise InputError(
                    f"{self.path}: row refers to antenna {int(a[np.argmax(bad)])} not in the AN table"
                )
            out.append(order[pos].astype(np.int32))
        return out[0], out[1]

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
    def read(self, idx: np.ndarray, chans: slice, on_rows=None) -> Visibility:
        """Rows (indices into this reader's selected rows) and a channel range (flags from weight <= 0)."""
        idx = np.asarray(idx)
        return self.read_rows(self.rows[idx], self.times[idx], chans, on_rows)

    def read_rows(
        self, rows: np.ndarray, times: np.ndarray, chans: slice, on_rows=None
    ) -> Visibility:
        """Groups ``rows`` of the file and channels ``chans`` (``times``: theirs, or None to read them).

        Only those groups are read from the memory map, in blocks of :data:`ROW_BLOCK`;
        ``on_rows(n)``, when given, is called after each block of ``n`` rows (progress).
        """
        rows = np.asarray(rows, dtype=np.int64)
        c0, c1, _ = chans.indices(self.frequency.size)
        nrow, nchan, npol = rows.size, c1 - c0, self.pol_order.size
        vis = np.empty((nrow, nchan, npol), np.complex64)
        weight = np.empty((nrow, nchan, npol), np.float32)
        for k in range(0, nrow, ROW_BLOCK):
            r = rows[k : k + ROW_BLOCK]
            if np.all(np.diff(r) == 1):
                raw = self.data.data[r[0] : r[-1] + 1]
            else:
                raw = self.data.data[r]
            arr = np.asarray(raw, dtype=np.float32)  # [n, (dec, ra,) (if,) chan, pol, 3]
            arr = arr.reshape(arr.shape[0], -1, arr.shape[-2], arr.shape[-1])  # [n, if*chan, pol, 3]
            arr = arr[:, c0:c1][:, :, self.pol_order]
            vis[k : k + r.size] = arr[..., 0] + 1j * arr[..., 1]
            weight[k : k + r.size] = arr[..., 2] if arr.shape[-1] > 2 else 1.0
            if on_rows is not None:
                on_rows(r.size)
        flags = ~(weight > 0) | ~np.isfinite(vis)
        weight[flags] = 0.0
        uvw = np.stack([self._par(n, rows) for n in ("UU", "VV", "WW")], axis=1) * SPEED_OF_LIGHT
        bad = ~np.isfinite(uvw).all(axis=1)
        if bad.any():
            raise InputError(f"{self.path}: {int(bad.sum())} groups have non-finite UVW (random parameters "
                             f"UU/VV/WW), the first is group {int(rows[np.argmax(bad)])}")
        a1, a2 = self.antennas(rows)
        inttim = self._par("INTTIM", rows) if "INTTIM" in self.data.parnames else np.zeros(nrow)
        times = self._jd_seconds(rows) if times is None else times
        return Visibility(
            time=np.asarray(times, dtype=np.float64),
            uvw=uvw,
            antenna1=a1,
            antenna2=a2,
            vis=vis,
            weight=weight,
            flags=flags,
            frequency=self.frequency[c0:c1],
            channel_width=self.channel_width[c0:c1],
            polarisations=self.polarisations,
            phase_centre=self.phase_centre(),
            integration_time=inttim,
        )

    def close(self) -> None:
        """Release the memory map."""
        self.hdul.close()
