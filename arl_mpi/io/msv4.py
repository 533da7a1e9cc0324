"""MSv4 processing sets (xradio, zarr): read one for ingest, write a store as one.

A processing set is a zarr tree of MSv4 datasets (one per spectral window / field / scan
partition); each holds ``VISIBILITY`` (or ``VISIBILITY_CORRECTED`` ...), ``FLAG``,
``WEIGHT``, ``UVW`` on ``(time, baseline_id, frequency, polarization)`` with an
``antenna_xds`` and a ``field_and_source_base_xds``. ``docs/formats.md`` maps the names onto
our store and the MS. Needs ``pip install 'arl_mpi[msv4]'`` (xradio).

:class:`MSv4Reader` has the interface of :class:`arl_mpi.io.ms.MSReader` (``times``,
``rows``, ``frequency``, ``read_rows``, ``meta``), so :mod:`arl_mpi.io.ingest` ingests a
processing set the way it ingests an MS, in parallel: a *row* here is one (time, baseline)
cell of the MSv4 grid that holds data (cells the converter padded, with non-finite UVW, are
left out).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import EarthLocation, SkyCoord

from arl_mpi import __version__
from arl_mpi.errors import InputError
from arl_mpi.models import Configuration, Visibility

log = logging.getLogger(__name__)

#: MSv4 stores unix seconds; our store (like the MS) MJD seconds: MJD 40587 is 1970-01-01.
UNIX_TO_MJD_S = 40587 * 86400.0
#: MS data columns (``--column``) and the MSv4 correlated-data variables they became.
COLUMNS = {"DATA": "VISIBILITY", "CORRECTED_DATA": "VISIBILITY_CORRECTED", "MODEL_DATA": "VISIBILITY_MODEL"}
_EXTRA = "pip install 'arl_mpi[msv4]'"


def _xradio():
    try:
        from xradio.measurement_set import open_processing_set
    except ImportError:
        raise InputError(f"reading MSv4 processing sets needs xradio: {_EXTRA}") from None
    return open_processing_set


def is_processing_set(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a zarr directory whose root says ``type: processing_set``."""
    p = Path(path)
    for meta in (p / "zarr.json", p / ".zattrs"):
        if meta.is_file():
            try:
                d = json.loads(meta.read_text())
            except (OSError, ValueError):
                return False
            attrs = d.get("attributes", d)
            return isinstance(attrs, dict) and attrs.get("type") == "processing_set"
    return False


def _scalar(attr, default=None):
    """An xradio quantity attribute (``{'data': x, ...}``) or a plain value."""
    if isinstance(attr, dict):
        return attr.get("data", default)
    return default if attr is None else attr


class MSv4Reader:
    """One MSv4 of a processing set, read as MS-like rows.

    Parameters
    ----------
    path : the processing set (``*.ps.zarr``)
    column : ``DATA``, ``CORRECTED_DATA`` or ``MODEL_DATA`` (the MS column the MSv4 variable came from)
    field : must be 0 (choose a field by converting with a partition scheme)
    spw : which spectral window (index into the processing set's spectral windows in name order)
    select_rows : read the rows and their times (the driver); workers pass False

    Raises
    ------
    InputError
        xradio missing, no MSv4 for the spectral window, several MSv4s for it, or no such
        data variable; one line naming the path.
    """

    def __init__(self, path: str | os.PathLike, column: str = "DATA", field: int = 0, spw: int = 0, *,
                 select_rows: bool = True) -> None:
        self.path = Path(path)
        if column not in COLUMNS:
            raise InputError(f"{self.path}: --column {column}: a processing set has {', '.join(COLUMNS)}")
        if field != 0:
            raise InputError(f"{self.path}: --field applies to MeasurementSets; a processing set has one field "
                             "per MSv4 (convert with xradio's partition_scheme=['FIELD_ID'] and pick --spw)")
        try:
            ps = _xradio()(str(self.path))
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001 - xradio/zarr raise many kinds
            raise InputError(f"{self.path}: cannot open as an MSv4 processing set ({str(e).splitlines()[0]})") from None
        names = sorted(ps.children)
        by_spw: dict[str, list[str]] = {}
        for n in names:
            swn = str(ps[n].ds.frequency.attrs.get("spectral_window_name", n))
            by_spw.setdefault(swn, []).append(n)
        spws = sorted(by_spw)
        if not 0 <= spw < len(spws):
            raise InputError(f"{self.path}: no spectral window {spw} (the processing set has {len(spws)})")
        chosen = by_spw[spws[spw]]
        if len(chosen) > 1:
            raise InputError(f"{self.path}: spectral window {spws[spw]} is split over {len(chosen)} MSv4s "
                             f"({', '.join(chosen[:3])}...); ingest needs one (convert with partition_scheme=[])")
        self.name = chosen[0]
        self.node = ps[self.name]
        self.ds = self.node.ds
        self.column = column
        self.var = COLUMNS[column]
        if self.var not in self.ds:
            raise InputError(f"{self.path}/{self.name}: no {self.var} (for --column {column})")
        self.field, self.spw = field, spw
        ds = self.ds
        self.frequency = np.asarray(ds.frequency.values, dtype=np.float64)
        cw = ds.frequency.attrs.get("channel_width")
        self.channel_width = np.abs(np.broadcast_to(np.asarray(_scalar(cw, 0.0), dtype=np.float64),
                                                    self.frequency.shape)).copy()
        self.polarisations = [str(p) for p in ds.polarization.values]
        self._utime = np.asarray(ds.time.values, dtype=np.float64) + UNIX_TO_MJD_S
        self.nbl = int(ds.sizes["baseline_id"])
        ant_names = [str(a) for a in self.node["antenna_xds"].ds.antenna_name.values]
        pos = {n: i for i, n in enumerate(ant_names)}
        self.a1 = np.array([pos[str(a)] for a in ds.baseline_antenna1_name.values], dtype=np.int32)
        self.a2 = np.array([pos[str(a)] for a in ds.baseline_antenna2_name.values], dtype=np.int32)
        itime = _scalar(ds.time.attrs.get("integration_time"))
        self.interval = float(itime) if itime is not None else None
        self.rows = np.zeros(0, np.int64)
        self.times = np.zeros(0)
        if select_rows:
            uvw = np.asarray(ds.UVW.values)
            have = np.isfinite(uvw).all(axis=-1).ravel()
            self.rows = np.nonzero(have)[0].astype(np.int64)
            self.times = self._utime[self.rows // self.nbl]
            if self.rows.size == 0:
                raise InputError(f"{self.path}/{self.name}: no rows with data")

    def read_rows(self, rows: np.ndarray, times: np.ndarray, chans: slice, on_rows=None) -> Visibility:
        """Grid cells ``rows`` (``time_index * nbaseline + baseline_id``) and channels ``chans``.

        Reads only the time range the rows span. Rows come back ordered by (time, antenna1,
        antenna2); NaN/Inf visibilities are flagged; flagged samples get weight 0.
        """
        rows = np.asarray(rows, dtype=np.int64)
        ds = self.ds
        c0, c1, _ = chans.indices(self.frequency.size)
        if rows.size:
            t_lo, t_hi = int(rows.min() // self.nbl), int(rows.max() // self.nbl) + 1
        else:
            t_lo = t_hi = 0
        sub = ds.isel(time=slice(t_lo, t_hi), frequency=slice(c0, c1))
        ti = rows // self.nbl - t_lo
        bi = rows % self.nbl

        def cells(name):
            a = np.asarray(sub[name].values)
            return a[ti, bi]

        vis = cells(self.var).astype(np.complex64, copy=False)
        flags = cells("FLAG").astype(bool, copy=False) if "FLAG" in sub else np.zeros(vis.shape, bool)
        weight = (cells("WEIGHT").astype(np.float32, copy=False) if "WEIGHT" in sub
                  else np.ones(vis.shape, np.float32))
        uvw = cells("UVW").astype(np.float64, copy=False)
        if self.interval is not None:
            interval = np.full(rows.size, self.interval)
        else:
            interval = cells("EFFECTIVE_INTEGRATION_TIME").astype(np.float64)
        a1, a2 = self.a1[bi], self.a2[bi]
        flags = flags | ~np.isfinite(vis)
        weight = np.where(flags, np.float32(0), weight)
        times = self._utime[rows // self.nbl] if rows.size else np.zeros(0)
        order = np.lexsort((a2, a1, times))
        if on_rows is not None:
            on_rows(int(rows.size))
        return Visibility(time=times[order], uvw=uvw[order], antenna1=a1[order], antenna2=a2[order],
                          vis=np.ascontiguousarray(vis[order]), weight=np.ascontiguousarray(weight[order]),
                          flags=np.ascontiguousarray(flags[order]), frequency=self.frequency[c0:c1],
                          channel_width=self.channel_width[c0:c1], polarisations=list(self.polarisations),
                          phase_centre=self.phase_centre(), integration_time=interval[order])

    def phase_centre(self) -> SkyCoord:
        """FIELD_PHASE_CENTER_DIRECTION of the MSv4's field (fk5/J2000 taken as ICRS, as for an MS)."""
        fs = self.node["field_and_source_base_xds"].ds
        d = fs.FIELD_PHASE_CENTER_DIRECTION
        frame = str(d.attrs.get("frame", "icrs")).lower()
        radec = np.asarray(d.values, dtype=np.float64).reshape(-1, 2)[0]
        if frame not in ("icrs", "fk5", "j2000"):
            raise InputError(f"{self.path}/{self.name}: phase centre frame {frame} is not supported (icrs, fk5)")
        return SkyCoord(ra=radec[0] * u.rad, dec=radec[1] * u.rad, frame="icrs")

    def configuration(self) -> Configuration:
        """antenna_xds: names, ITRF positions, dish diameters."""
        ax = self.node["antenna_xds"].ds
        xyz = np.asarray(ax.ANTENNA_POSITION.values, dtype=np.float64)
        diam = (np.asarray(ax.ANTENNA_DISH_DIAMETER.values, dtype=np.float64) if "ANTENNA_DISH_DIAMETER" in ax
                else np.zeros(xyz.shape[0]))
        tel = str(ax.attrs.get("overall_telescope_name", "UNKNOWN"))
        loc = EarthLocation.from_geocentric(*xyz.mean(axis=0), unit=u.m)
        return Configuration(name=tel, names=[str(n) for n in ax.antenna_name.values], xyz=xyz, diameter=diam,
                             location=loc)

    def meta(self):
        """Observation-wide metadata for the store."""
        from arl_mpi.io.store import StoreMeta

        cfg = self.configuration()
        return StoreMeta(phase_centre=self.phase_centre(), frequency=self.frequency,
                         channel_width=self.channel_width, polarisations=self.polarisations, configuration=cfg,
                         telescope=cfg.name,
                         provenance={"ingested_from": str(self.path.resolve()), "format": "MSv4",
                                     "msv4": self.name, "column": self.column, "variable": self.var,
                                     "spw": self.spw, "arl_mpi_version": __version__})

    def close(self) -> None:
        """Nothing to close (zarr is read on demand)."""


# --------------------------------------------------------------------------------------
# writing: a store as a processing set
# --------------------------------------------------------------------------------------


def write_processing_set(index, path: str | os.PathLike, name: str | None = None) -> Path:
    """Write a store as an MSv4 processing set (one MSv4, zarr), atomically.

    Rows become cells of the (time, baseline_id) grid of the store's unique times and
    baselines; cells without data (baselines missing at some time) are written as xradio
    pads them: NaN visibilities and UVW, FLAG True, WEIGHT 0. The grid is assembled in
    memory (one process), so this suits stores that fit in memory.

    Parameters
    ----------
    index : StoreIndex of the store (from :func:`arl_mpi.io.store.open_store`)
    path : the processing set to create (refused if it exists)
    name : the MSv4's name inside it (default: the store's name + ``_0``)

    Returns
    -------
    pathlib.Path, the processing set written
    """
    try:
        import xarray as xr
    except ImportError:
        raise InputError(f"writing MSv4 processing sets needs xarray and zarr: {_EXTRA}") from None
    from arl_mpi.io.atomic import temporary_sibling
    from arl_mpi.io.store import read_partition

    out = Path(path)
    if out.exists():
        raise InputError(f"{out}: already exists; refusing to overwrite it")
    meta = index.meta
    name = name or f"{index.path.stem}_0"
    nchan, npol = meta.frequency.size, len(meta.polarisations)
    times, pairs = [], set()
    for p in index.partitions:
        v = read_partition(index, p.pid, verify=True) if p.freq_block == 0 else None
        if v is not None:
            times.append(np.unique(v.time))
            pairs.update(zip(v.antenna1.tolist(), v.antenna2.tolist(), strict=True))
    utime = np.unique(np.concatenate(times))
    bl = np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)
    nbl = bl.shape[0]
    bl_index = {(int(a), int(b)): i for i, (a, b) in enumerate(bl)}
    names = np.array(meta.configuration.names)
    dims4 = ("time", "baseline_id", "frequency", "polarization")
    vis = np.full((utime.size, nbl, nchan, npol), np.nan + 0j, dtype=np.complex64)
    flag = np.ones(vis.shape, bool)
    weight = np.zeros(vis.shape, np.float32)
    uvw = np.full((utime.size, nbl, 3), np.nan)
    eff = np.full((utime.size, nbl), np.nan)
    for p in index.partitions:
        v = read_partition(index, p.pid, verify=True)
        ti = np.searchsorted(utime, v.time)
        bi = np.array([bl_index[(int(a), int(b))] for a, b in zip(v.antenna1, v.antenna2, strict=True)],
                      dtype=np.int64)
        cs = slice(p.chan_start, p.chan_stop)
        vis[ti, bi, cs] = v.vis
        flag[ti, bi, cs] = v.flags
        weight[ti, bi, cs] = v.weight
        uvw[ti, bi] = v.uvw
        eff[ti, bi] = v.integration_time
    itime = float(np.nanmedian(eff)) if np.isfinite(eff).any() else 0.0
    pc = meta.phase_centre.icrs
    main = xr.Dataset(
        {"VISIBILITY": (dims4, vis, {"type": "quanta", "units": "Jy"}),
         "FLAG": (dims4, flag), "WEIGHT": (dims4, weight),
         "UVW": (("time", "baseline_id", "uvw_label"), uvw, {"type": "uvw", "units": "m", "frame": "icrs"}),
         "EFFECTIVE_INTEGRATION_TIME": (("time", "baseline_id"), eff, {"type": "quantity", "units": "s"})},
        coords={
            "time": ("time", utime - UNIX_TO_MJD_S,
                     {"type": "time", "units": "s", "scale": "utc", "format": "unix",
                      "integration_time": {"data": itime, "dims": [], "attrs": {"units": "s", "type": "quantity"}}}),
            "baseline_id": ("baseline_id", np.arange(nbl)),
            "baseline_antenna1_name": ("baseline_id", names[bl[:, 0]]),
            "baseline_antenna2_name": ("baseline_id", names[bl[:, 1]]),
            "frequency": ("frequency", meta.frequency,
                          {"type": "spectral_coord", "units": "Hz", "observer": "TOPO",
                           "spectral_window_name": f"{name}_spw0",
                           "reference_frequency": {"data": float(meta.frequency[0]), "dims": [],
                                                   "attrs": {"units": "Hz", "observer": "TOPO",
                                                             "type": "spectral_coord"}},
                           "channel_width": {"data": float(np.median(meta.channel_width)), "dims": [],
                                             "attrs": {"units": "Hz", "type": "quantity"}}}),
            "polarization": ("polarization", np.array(meta.polarisations)),
            "uvw_label": ("uvw_label", np.array(["u", "v", "w"])),
            "field_name": ("time", np.full(utime.size, "field0")),
            "scan_name": ("time", np.full(utime.size, "0")),
        },
        attrs={"schema_version": "4.0.1", "type": "visibility",
               "creator": {"software_name": "arl_mpi", "version": __version__},
               "data_groups": {"base": {"correlated_data": "VISIBILITY", "flag": "FLAG", "weight": "WEIGHT",
                                        "uvw": "UVW", "field_and_source": "field_and_source_base_xds",
                                        "description": f"exported from the arl_mpi store {index.path}"}},
               "observation_info": {"observer": ["unknown"], "project_UID": "", "release_date": ""},
               "processor_info": {"type": "CORRELATOR", "sub_type": ""}})
    cfg = meta.configuration
    ant = xr.Dataset(
        {"ANTENNA_POSITION": (("antenna_name", "cartesian_pos_label"), cfg.xyz,
                              {"type": "location", "units": "m", "frame": "ITRS", "coordinate_system": "geocentric",
                               "origin_object_name": "earth"}),
         "ANTENNA_DISH_DIAMETER": ("antenna_name", cfg.diameter, {"type": "quantity", "units": "m"})},
        coords={"antenna_name": ("antenna_name", names), "cartesian_pos_label": ("cartesian_pos_label",
                                                                                  np.array(["x", "y", "z"])),
                "station_name": ("antenna_name", names), "telescope_name": ("antenna_name",
                                                                           np.full(names.size, meta.telescope))},
        attrs={"type": "antenna", "overall_telescope_name": meta.telescope, "relocatable_antennas": False})
    field = xr.Dataset(
        {"FIELD_PHASE_CENTER_DIRECTION": (("field_name", "sky_dir_label"), [[pc.ra.rad, pc.dec.rad]],
                                          {"type": "sky_coord", "units": "rad", "frame": "icrs"})},
        coords={"field_name": ("field_name", ["field0"]), "sky_dir_label": ("sky_dir_label", ["ra", "dec"]),
                "source_name": ("field_name", ["source0"])},
        attrs={"type": "field_and_source"})
    tree = xr.DataTree.from_dict({"/": xr.Dataset(attrs={"type": "processing_set"}), f"/{name}": main,
                                  f"/{name}/antenna_xds": ant, f"/{name}/field_and_source_base_xds": field})
    tmp = temporary_sibling(out)
    try:
        tree.to_zarr(str(tmp), mode="w-", consolidated=True)
        os.replace(tmp, out)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote processing set %s (%d times x %d baselines x %d channels)", out, utime.size, nbl, nchan)
    return out
