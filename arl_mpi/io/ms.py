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
#: casacore locking of the (read-only) input: no read locks, so that several processes
#: reading their own rows at once do not re-synchronise the table on every access.
_READ_LOCKING = "autonoread"
#: Rows read per casacore call (bounds the temporary memory of a read; progress granularity).
ROW_BLOCK = 65536


def _tables():
    try:
        import casacore.tables as tables
    except ImportError:
        raise InputError(
            "reading a MeasurementSet needs python-casacore: pip install 'arl_mpi[ms]'"
        ) from None
    return tables


def _time_baseline_order(times: np.ndarray, a1: np.ndarray, a2: np.ndarray) -> np.ndarray | None:
    """The stable order by (time, antenna1, antenna2), or None when the rows are in it already."""
    dt, d1, d2 = np.diff(times), np.diff(a1.astype(np.int64)), np.diff(a2.astype(np.int64))
    if np.all((dt > 0) | ((dt == 0) & ((d1 > 0) | ((d1 == 0) & (d2 >= 0))))):
        return None
    return np.lexsort((a2, a1, times))


class MSReader:
    """Open an MS read-only; select one field and one data description (spectral window)."""

    def __init__(
        self,
        path: str | Path,
        column: str = "DATA",
        field: int = 0,
        spw: int = 0,
        *,
        select_rows: bool = True,
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
            self.main = tables.table(str(self.path), readonly=True, ack=False, lockoptions=_READ_LOCKING)
        except RuntimeError as e:
            raise InputError(
                f"{self.path}: not a readable MeasurementSet ({str(e).splitlines()[0][:120]})"
            ) from None
        if self.main.nrows() == 0:
            raise InputError(f"{self.path}: the MeasurementSet has no rows (no visibilities)")
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
        self._phase_centre = None
        self.rows = np.zeros(0, np.int64)
        self.times = np.zeros(0)
        if select_rows:
            self.rows, self.times = self._select()

    def _select(self) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the selected field and spectral window, in time order, with their times.

        Reads only TIME (and FIELD_ID, DATA_DESC_ID when the MS has several fields or data
        descriptions). Rows of equal time keep the MS's order here; :meth:`read_rows` orders
        the rows it reads by (time, antenna1, antenna2).
        """
        m = self.main
        times = np.asarray(m.getcol("TIME"), dtype=np.float64)  # MJD seconds (UTC)
        if self._sub("FIELD").nrows() > 1 or self._sub("DATA_DESCRIPTION").nrows() > 1:
            keep = (np.asarray(m.getcol("FIELD_ID")) == self.field) & (
                np.asarray(m.getcol("DATA_DESC_ID")) == self.ddid
            )
            rows = np.nonzero(keep)[0].astype(np.int64)
        else:
            rows = np.arange(times.size, dtype=np.int64)
        if rows.size == 0:
            raise InputError(
                f"{self.path}: no rows for field {self.field}, spectral window {self.spw}"
            )
        times = times[rows]
        if np.any(np.diff(times) < 0):
            order = np.argsort(times, kind="stable")
            rows, times = rows[order], times[order]
        return rows, times

    def _sub(self, name: str):
        p = self.path / name
        if not p.exists():
            raise InputError(f"{self.path}: missing subtable {name}")
        return self.tables.table(str(p), readonly=True, ack=False, lockoptions=_READ_LOCKING)

    def phase_centre(self) -> SkyCoord:
        """PHASE_DIR of the selected field (J2000 taken as ICRS: < 0.03 arcsec apart; B1950 converted)."""
        if self._phase_centre is None:
            self._phase_centre = self._read_phase_centre()
        return self._phase_centre

    def _read_phase_centre(self) -> SkyCoord:
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

    def read(self, idx: np.ndarray, chans: slice, on_rows=None) -> Visibility:
        """Selected rows (indices into this reader's row list) and a channel range."""
        idx = np.asarray(idx)
        return self.read_rows(self.rows[idx], self.times[idx], chans, on_rows)

    def _runs(self, rows: np.ndarray):
        """``(table, startrow, nrow, offset)`` pieces covering ``rows`` in order.

        Runs of consecutive rows (the usual case: an MS is written in time order) are read
        straight from the main table in blocks of at most :data:`ROW_BLOCK` rows; rows
        scattered into many runs are read through one row selection instead.
        """
        if rows.size == 0:
            return
        cuts = np.nonzero(np.diff(rows) != 1)[0] + 1
        starts = np.concatenate([[0], cuts])
        stops = np.concatenate([cuts, [rows.size]])
        if starts.size > 64:
            table, starts, stops, first = self.main.selectrows(rows.tolist()), [0], [rows.size], [0]
        else:
            table, first = self.main, rows[starts]
        for a, b, r0 in zip(starts, stops, first, strict=True):
            for k in range(a, b, ROW_BLOCK):
                n = min(ROW_BLOCK, b - k)
                yield table, int(r0 + (k - a)), n, k

    def read_rows(
        self, rows: np.ndarray, times: np.ndarray, chans: slice, on_rows=None
    ) -> Visibility:
        """MS rows ``rows`` (row numbers of the main table), channels ``chans``.

        ``times`` are the rows' TIME values when the caller has them (None: read here).

        Rows are read in blocks of :data:`ROW_BLOCK` (straight from the main table when
        they are consecutive) and ordered by (time, antenna1, antenna2). ``on_rows(n)``,
        when given, is called after each block of ``n`` rows (progress).
        """
        rows = np.asarray(rows, dtype=np.int64)
        nrow = rows.size
        nchan_all = self.frequency.size
        c0, c1, _ = chans.indices(nchan_all)
        nchan, npol = c1 - c0, self.pol_order.size
        vis = np.empty((nrow, nchan, npol), np.complex64)
        flags = np.empty((nrow, nchan, npol), bool)
        weight = np.empty((nrow, nchan, npol), np.float32)
        uvw = np.empty((nrow, 3))
        a1 = np.empty(nrow, np.int32)
        a2 = np.empty(nrow, np.int32)
        interval = np.empty(nrow)
        tm = np.empty(nrow)
        m = self.main
        spectrum = (
            nrow > 0
            and "WEIGHT_SPECTRUM" in m.colnames()
            and m.iscelldefined("WEIGHT_SPECTRUM", int(rows[0]))
        )
        pol = None if np.array_equal(self.pol_order, np.arange(npol)) else self.pol_order
        direct = self.chan_order is None and (c0, c1) == (0, nchan_all) and pol is None
        take = np.arange(c0, c1) if self.chan_order is None else self.chan_order[c0:c1]
        buffers: dict[str, np.ndarray] = {}

        def cells(t, name: str, r0: int, n: int, out: np.ndarray) -> None:
            """Column ``name``'s cells of rows r0..r0+n into ``out`` (channels, correlations ordered)."""
            if direct:  # straight into the result (casacore converts the type)
                t.getcolnp(name, out, startrow=r0, nrow=n)
                return
            buf = buffers.get(name)
            if buf is None:
                buf = buffers[name] = np.empty((min(ROW_BLOCK, nrow), nchan_all, npol), out.dtype)
            t.getcolnp(name, buf[:n], startrow=r0, nrow=n)
            b = buf[:n, c0:c1] if self.chan_order is None else buf[:n][:, take]
            out[...] = b if pol is None else b[:, :, pol]

        row_flag = np.empty(min(ROW_BLOCK, nrow), bool)
        row_weight = np.empty((min(ROW_BLOCK, nrow), npol), np.float32)
        for t, r0, n, k in self._runs(rows):
            out = slice(k, k + n)
            cells(t, self.column, r0, n, vis[out])
            cells(t, "FLAG", r0, n, flags[out])
            t.getcolnp("FLAG_ROW", row_flag[:n], startrow=r0, nrow=n)
            flags[out] |= row_flag[:n, None, None]
            if spectrum:
                cells(t, "WEIGHT_SPECTRUM", r0, n, weight[out])
            else:
                t.getcolnp("WEIGHT", row_weight[:n], startrow=r0, nrow=n)
                w = row_weight[:n] if pol is None else row_weight[:n, pol]
                weight[out] = w[:, None, :]
            t.getcolnp("UVW", uvw[out], startrow=r0, nrow=n)
            t.getcolnp("ANTENNA1", a1[out], startrow=r0, nrow=n)
            t.getcolnp("ANTENNA2", a2[out], startrow=r0, nrow=n)
            t.getcolnp("INTERVAL", interval[out], startrow=r0, nrow=n)
            if times is None:
                t.getcolnp("TIME", tm[out], startrow=r0, nrow=n)
            if on_rows is not None:
                on_rows(n)
        flags |= ~np.isfinite(vis)
        weight[flags] = 0.0
        times = tm if times is None else np.asarray(times, dtype=np.float64)
        order = _time_baseline_order(times, a1, a2)
        if order is not None:
            times, uvw, a1, a2, interval = (x[order] for x in (times, uvw, a1, a2, interval))
            vis, flags, weight = vis[order], flags[order], weight[order]
        return Visibility(
            time=times,
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
            integration_time=interval,
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


def write_model_data(path: str | Path, index, field: int = 0, spw: int = 0) -> int:
    """Write the visibilities of store ``index`` into the MODEL_DATA column of MS ``path``.

    The one writer of an input file in arl_mpi, called only when asked (``--predict
    --write-model-data``). Rows of the selected field and spectral window are matched to the
    store's rows by (TIME, ANTENNA1, ANTENNA2); channels and correlations are put back in the
    MS's order. The column is added (as DATA is stored) when missing; matched rows are
    overwritten, the selection's rows absent from the store get 0, other rows are untouched.
    Not atomic: a failure part-way leaves MODEL_DATA partly written (nothing else changes).

    Returns
    -------
    int
        Rows written.

    Raises
    ------
    InputError
        The MS cannot be opened for writing, or its channels/correlations are not the store's.
    """
    from arl_mpi.io.store import read_partition

    reader = MSReader(path, field=field, spw=spw)
    tables = reader.tables
    reader.close()
    meta = index.meta
    if reader.frequency.size != meta.frequency.size or not np.allclose(reader.frequency, meta.frequency, rtol=1e-12):
        raise InputError(f"{path}: channels differ from those of {index.path}")
    if list(reader.polarisations) != list(meta.polarisations):
        raise InputError(f"{path}: correlations {reader.polarisations} differ from {meta.polarisations} "
                         f"of {index.path}")
    parts = [read_partition(index, pid) for pid in range(len(index.partitions))]
    nchan, npol = meta.frequency.size, len(meta.polarisations)
    s_time = np.concatenate([p.time for p in parts]) if parts else np.zeros(0)
    s_bl = np.concatenate([p.antenna1.astype(np.int64) * 65536 + p.antenna2 for p in parts]) if parts else s_time
    s_vis = np.zeros((s_time.size, nchan, npol), np.complex64)
    r0 = 0
    for p, info in zip(parts, index.partitions, strict=True):
        s_vis[r0:r0 + p.nrow, info.chan_start:info.chan_stop] = p.vis
        r0 += p.nrow
    key = np.zeros(s_time.size, dtype=[("t", "f8"), ("b", "i8")])
    key["t"], key["b"] = s_time, s_bl
    order = np.argsort(key, order=("t", "b"))
    key = key[order]
    try:
        main = tables.table(str(reader.path), readonly=False, ack=False)
    except RuntimeError as e:
        raise InputError(f"{path}: cannot open for writing ({str(e).splitlines()[0][:120]})") from None
    try:
        if "MODEL_DATA" not in main.colnames():
            desc = tables.makecoldesc("MODEL_DATA", main.getcoldesc("DATA"))
            dminfo = main.getdminfo("DATA")
            dminfo["NAME"] = "ModelData"
            main.addcols(tables.maketabdesc(desc), dminfo)
        rows = np.sort(reader.rows)
        chan_back = np.argsort(reader.chan_order) if reader.chan_order is not None else None
        pol_back = np.argsort(reader.pol_order)
        written = 0
        for k in range(0, rows.size, ROW_BLOCK):
            blk = rows[k:k + ROW_BLOCK]
            sel = main.selectrows(blk.tolist())
            want = np.zeros(blk.size, dtype=key.dtype)
            want["t"] = sel.getcol("TIME")
            want["b"] = sel.getcol("ANTENNA1").astype(np.int64) * 65536 + sel.getcol("ANTENNA2")
            pos = np.minimum(np.searchsorted(key, want), max(key.size - 1, 0))
            found = (key[pos] == want) if key.size else np.zeros(blk.size, bool)
            data = np.zeros((blk.size, nchan, npol), np.complex64)
            data[found] = s_vis[order[pos[found]]]
            if chan_back is not None:
                data = data[:, chan_back]  # sorted channels -> the MS's order
            sel.putcol("MODEL_DATA", data[:, :, pol_back])  # frame order -> the MS's CORR_TYPE order
            written += int(np.count_nonzero(found))
    finally:
        main.close()
    log.info("wrote MODEL_DATA of %d rows into %s", written, path)
    return written
