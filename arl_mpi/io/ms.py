"""MeasurementSet v2 reader (python-casacore, the optional extra ``arl_mpi[ms]``), read-only.

One field and one spectral window (data description) per ingest: ``--field``/``--spw``.
Weights come from WEIGHT_SPECTRUM when present, else WEIGHT broadcast over channels;
FLAG and FLAG_ROW are combined. UVW and visibilities are taken as stored (the MS
convention is arl_mpi's convention).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import EarthLocation, SkyCoord

from arl_mpi.errors import InputError
from arl_mpi.io.store import StoreMeta
from arl_mpi.models import POLARISATION_FRAMES, Configuration, Visibility

log = logging.getLogger(__name__)

_CORR = {5: "RR", 6: "RL", 7: "LR", 8: "LL", 9: "XX", 10: "XY", 11: "YX", 12: "YY", 1: "I"}
COLUMNS = ("DATA", "CORRECTED_DATA", "MODEL_DATA")


def _tables():
    try:
        import casacore.tables as tables
    except ImportError:
        raise InputError(
            "reading a MeasurementSet needs python-casacore: pip install 'arl_mpi[ms]'"
        ) from None
    return tables


class MSReader:
    """Open an MS read-only; select one field and one data description (spectral window)."""

    def __init__(
        self, path: str | Path, column: str = "DATA", field: int = 0, spw: int = 0
    ) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"{self.path}: no such MeasurementSet")
        if not (self.path / "table.dat").is_file():
            raise InputError(f"{self.path}: not a MeasurementSet (no table.dat)")
        if column not in COLUMNS:
            raise InputError(f"--column {column}: must be one of {', '.join(COLUMNS)}")
        tables = _tables()
        self.tables = tables
        try:
            self.main = tables.table(str(self.path), readonly=True, ack=False)
        except RuntimeError as e:
            raise InputError(
                f"{self.path}: not a readable MeasurementSet ({str(e).splitlines()[0][:120]})"
            ) from None
        if column not in self.main.colnames():
            raise InputError(
                f"{self.path}: has no {column} column "
                f"(has {', '.join(c for c in COLUMNS if c in self.main.colnames())})"
            )
        self.column = column
        self.field, self.spw = field, spw
        sub = self._sub
        ddid_spw = sub("DATA_DESCRIPTION").getcol("SPECTRAL_WINDOW_ID")
        ddid_pol = sub("DATA_DESCRIPTION").getcol("POLARIZATION_ID")
        ddids = np.nonzero(ddid_spw == spw)[0]
        if ddids.size == 0:
            raise InputError(
                f"{self.path}: no spectral window {spw} (has {sorted(set(ddid_spw.tolist()))})"
            )
        self.ddid = int(ddids[0])
        nfield = sub("FIELD").nrows()
        if not 0 <= field < nfield:
            raise InputError(f"{self.path}: no field {field} (has 0-{nfield - 1})")
        spwt = sub("SPECTRAL_WINDOW")
        self.frequency = np.asarray(spwt.getcell("CHAN_FREQ", spw), dtype=np.float64)
        self.channel_width = np.abs(np.asarray(spwt.getcell("CHAN_WIDTH", spw), dtype=np.float64))
        order = np.argsort(self.frequency)
        self.chan_order = order if np.any(order != np.arange(order.size)) else None
        self.frequency, self.channel_width = self.frequency[order], self.channel_width[order]
        corr = [int(c) for c in sub("POLARIZATION").getcell("CORR_TYPE", int(ddid_pol[self.ddid]))]
        try:
            labels = [_CORR[c] for c in corr]
        except KeyError:
            raise InputError(f"{self.path}: unsupported CORR_TYPE codes {corr}") from None
        self.pol_order = None
        for frame in POLARISATION_FRAMES.values():
            if sorted(frame) == sorted(labels):
                self.pol_order = np.array([labels.index(p) for p in frame])
                self.polarisations = list(frame)
        if self.pol_order is None:
            raise InputError(f"{self.path}: correlations {labels} form no known polarisation frame")
        sel = self.main.query(
            f"FIELD_ID=={field} AND DATA_DESC_ID=={self.ddid}",
            sortlist="TIME,ANTENNA1,ANTENNA2",
            columns="ROWID() AS ROW",
        )
        self.rows = np.asarray(sel.getcol("ROW"), dtype=np.int64)
        if self.rows.size == 0:
            raise InputError(f"{self.path}: no rows for field {field}, spectral window {spw}")
        self.times = np.asarray(self.main.getcol("TIME"), dtype=np.float64)[
            self.rows
        ]  # MJD seconds (UTC)

    def _sub(self, name: str):
        p = self.path / name
        if not p.exists():
            raise InputError(f"{self.path}: missing subtable {name}")
        return self.tables.table(str(p), readonly=True, ack=False)

    def phase_centre(self) -> SkyCoord:
        """PHASE_DIR of the selected field (J2000 taken as ICRS: < 0.03 arcsec apart; B1950 converted)."""
        ft = self._sub("FIELD")
        d = np.asarray(ft.getcell("PHASE_DIR", self.field)).reshape(-1, 2)[0]
        ref = str(ft.getcolkeyword("PHASE_DIR", "MEASINFO").get("Ref", "J2000")).upper()
        if ref == "B1950":
            c = SkyCoord(ra=d[0] * u.rad, dec=d[1] * u.rad, frame="fk4", equinox="B1950")
            return SkyCoord(c.icrs.ra, c.icrs.dec, frame="icrs")
        if ref not in ("J2000", "ICRS"):
            raise InputError(
                f"{self.path}: FIELD PHASE_DIR frame {ref} is not supported (J2000, ICRS, B1950)"
            )
        return SkyCoord(ra=d[0] * u.rad, dec=d[1] * u.rad, frame="icrs")

    def configuration(self) -> Configuration:
        """The ANTENNA table (ITRF positions)."""
        ant = self._sub("ANTENNA")
        xyz = np.asarray(ant.getcol("POSITION"), dtype=np.float64)
        names = [str(n) for n in ant.getcol("NAME")]
        diam = np.asarray(ant.getcol("DISH_DIAMETER"), dtype=np.float64)
        obs = self._sub("OBSERVATION")
        tel = str(obs.getcell("TELESCOPE_NAME", 0)) if obs.nrows() else "UNKNOWN"
        loc = EarthLocation.from_geocentric(*xyz.mean(axis=0), unit=u.m)
        return Configuration(name=tel, names=names, xyz=xyz, diameter=diam, location=loc)

    def meta(self) -> StoreMeta:
        """Observation-wide metadata for the store."""
        cfg = self.configuration()
        st = self.path.stat()
        return StoreMeta(
            phase_centre=self.phase_centre(),
            frequency=self.frequency,
            channel_width=self.channel_width,
            polarisations=self.polarisations,
            configuration=cfg,
            telescope=cfg.name,
            provenance={
                "ingested_from": str(self.path.resolve()),
                "format": "MS",
                "column": self.column,
                "field": self.field,
                "spw": self.spw,
                "mtime": st.st_mtime,
            },
        )

    def read(self, idx: np.ndarray, chans: slice) -> Visibility:
        """Selected rows (indices into this reader's row list) and a channel range."""
        rows = self.rows[np.asarray(idx)]
        sub = self.main.selectrows(rows.tolist())
        data = sub.getcol(self.column)
        flags = sub.getcol("FLAG") | sub.getcol("FLAG_ROW")[:, None, None]
        if "WEIGHT_SPECTRUM" in sub.colnames() and sub.iscelldefined("WEIGHT_SPECTRUM", 0):
            weight = sub.getcol("WEIGHT_SPECTRUM")
        else:
            weight = np.broadcast_to(sub.getcol("WEIGHT")[:, None, :], data.shape)
        if self.chan_order is not None:
            data, flags, weight = (
                data[:, self.chan_order],
                flags[:, self.chan_order],
                weight[:, self.chan_order],
            )
        take = (slice(None), chans, self.pol_order)
        vis = np.ascontiguousarray(data[take], dtype=np.complex64)
        flags = np.ascontiguousarray(flags[take]) | ~np.isfinite(vis)
        weight = np.where(flags, 0.0, weight[take]).astype(np.float32)
        return Visibility(
            time=self.times[idx],
            uvw=sub.getcol("UVW"),
            antenna1=sub.getcol("ANTENNA1"),
            antenna2=sub.getcol("ANTENNA2"),
            vis=vis,
            weight=weight,
            flags=flags,
            frequency=self.frequency[chans],
            channel_width=self.channel_width[chans],
            polarisations=self.polarisations,
            phase_centre=self.phase_centre(),
            integration_time=sub.getcol("INTERVAL"),
        )

    def close(self) -> None:
        """Close the tables."""
        self.main.close()


def write_ms(index, path: str | Path, telescope: str | None = None) -> Path:
    """Export a visibility store as a MeasurementSet v2 (for peers such as WSClean or CASA).

    One field, one spectral window (TOPO), one feed per antenna; DATA, WEIGHT, FLAG, UVW in
    the MS convention (which is the store's). ``telescope`` overrides the observatory name
    (CASA needs one it knows to convert frequency frames, e.g. "MWA" for the SKA-Low site at
    the same observatory). Written under a temporary name, then renamed.
    """
    tables = _tables()
    from arl_mpi.io.atomic import temporary_sibling
    from arl_mpi.io.store import read_partition

    final = Path(path)
    if final.exists():
        raise InputError(f"{final}: exists; refusing to overwrite")
    tmp = temporary_sibling(final)
    meta = index.meta
    pols = meta.polarisations
    codes = {v: k for k, v in _CORR.items()}
    nchan, npol = meta.frequency.size, len(pols)
    if index.nfreq_blocks != 1:
        raise InputError(f"{index.path}: write_ms needs a store with one frequency partition")
    desc = tables.maketabdesc([tables.makearrcoldesc("DATA", 0j, ndim=2, valuetype="complex")])
    ms = tables.default_ms(str(tmp), desc)
    nrow = sum(p.nrow for p in index.partitions)
    ms.addrows(nrow)
    r0 = 0
    for p in index.partitions:
        v = read_partition(index, p.pid)
        n = v.nrow
        ms.putcol("UVW", v.uvw, r0, n)
        ms.putcol("ANTENNA1", v.antenna1, r0, n)
        ms.putcol("ANTENNA2", v.antenna2, r0, n)
        ms.putcol("TIME", v.time, r0, n)
        ms.putcol("TIME_CENTROID", v.time, r0, n)
        ms.putcol("INTERVAL", v.integration_time, r0, n)
        ms.putcol("EXPOSURE", v.integration_time, r0, n)
        ms.putcol("DATA", v.vis.astype(np.complex64), r0, n)
        ms.putcol("FLAG", v.flags, r0, n)
        ms.putcol("WEIGHT", v.weight.mean(axis=1), r0, n)
        ms.putcol("SIGMA", 1.0 / np.sqrt(np.maximum(v.weight.mean(axis=1), 1e-30)), r0, n)
        r0 += n
    ms.close()
    cfg = meta.configuration
    with tables.table(str(tmp / "ANTENNA"), readonly=False, ack=False) as t:
        t.addrows(cfg.nant)
        t.putcol("POSITION", cfg.xyz)
        t.putcol("NAME", list(cfg.names))
        t.putcol("STATION", list(cfg.names))
        t.putcol("DISH_DIAMETER", cfg.diameter)
        t.putcol("TYPE", ["GROUND-BASED"] * cfg.nant)
        t.putcol("MOUNT", ["ALT-AZ"] * cfg.nant)
    with tables.table(str(tmp / "SPECTRAL_WINDOW"), readonly=False, ack=False) as t:
        t.addrows(1)
        t.putcell("CHAN_FREQ", 0, meta.frequency)
        t.putcell("CHAN_WIDTH", 0, meta.channel_width)
        t.putcell("EFFECTIVE_BW", 0, meta.channel_width)
        t.putcell("RESOLUTION", 0, meta.channel_width)
        t.putcell("REF_FREQUENCY", 0, float(meta.frequency[0]))
        t.putcell("TOTAL_BANDWIDTH", 0, float(meta.channel_width.sum()))
        t.putcell("NUM_CHAN", 0, nchan)
        t.putcell("MEAS_FREQ_REF", 0, 5)  # TOPO
    with tables.table(str(tmp / "POLARIZATION"), readonly=False, ack=False) as t:
        t.addrows(1)
        t.putcell("CORR_TYPE", 0, np.array([codes[p] for p in pols], dtype=np.int32))
        t.putcell("NUM_CORR", 0, npol)
    with tables.table(str(tmp / "DATA_DESCRIPTION"), readonly=False, ack=False) as t:
        t.addrows(1)
        t.putcell("SPECTRAL_WINDOW_ID", 0, 0)
        t.putcell("POLARIZATION_ID", 0, 0)
    pc = meta.phase_centre.icrs
    direction = np.array([[[pc.ra.rad, pc.dec.rad]]])
    with tables.table(str(tmp / "FIELD"), readonly=False, ack=False) as t:
        t.addrows(1)
        for col in ("PHASE_DIR", "DELAY_DIR", "REFERENCE_DIR"):
            t.putcell(col, 0, direction[0])
        t.putcell("NAME", 0, "FIELD0")
    receptors = ["R", "L"] if pols[0].startswith("R") else ["X", "Y"]
    with tables.table(str(tmp / "FEED"), readonly=False, ack=False) as t:
        n = cfg.nant
        t.addrows(n)
        t.putcol("ANTENNA_ID", np.arange(n, dtype=np.int32))
        t.putcol("FEED_ID", np.zeros(n, np.int32))
        t.putcol("SPECTRAL_WINDOW_ID", np.full(n, -1, np.int32))
        t.putcol("BEAM_ID", np.full(n, -1, np.int32))
        t.putcol("NUM_RECEPTORS", np.full(n, 2, np.int32))
        t.putcol("POLARIZATION_TYPE", np.array([receptors] * n))
        t.putcol("RECEPTOR_ANGLE", np.zeros((n, 2)))
        t.putcol("POL_RESPONSE", np.tile(np.eye(2, dtype=complex), (n, 1, 1)))
        t.putcol("BEAM_OFFSET", np.zeros((n, 2, 2)))
        t.putcol("INTERVAL", np.full(n, 1e30))
        t.putcol("TIME", np.zeros(n))
    times = [p.time_min for p in index.partitions] + [p.time_max for p in index.partitions]
    with tables.table(str(tmp / "OBSERVATION"), readonly=False, ack=False) as t:
        t.addrows(1)
        t.putcell("TELESCOPE_NAME", 0, telescope or meta.telescope)
        t.putcell("TIME_RANGE", 0, np.array([min(times), max(times)]))
    tmp.rename(final)
    return final
