"""HDF5 visibility store: an observation partitioned into time x frequency blocks.

Layout (documented field by field in ``docs/hdf5-store.md``)::

    STORE/                      a directory
      index.h5                  metadata + partition table; written last, atomically
      partitions/
        t0000-f0000.h5          one HDF5 file per partition, written atomically
        ...

* Partitions are independent files, so any number of processes can write different
  partitions at once (no parallel-HDF5 build, no single writer) and read them at once.
* Every dataset is chunked with HDF5's fletcher32 filter; in addition the index records
  the SHA-256 of every partition file. Either check failing is reported as a
  :class:`~arl_mpi.errors.StoreError` naming the file and partition.
* A store is never modified in place: files are opened read-only, and a finished store
  (one with ``index.h5``) cannot be written into. A directory without ``index.h5`` is an
  unfinished store and is refused on read.
* Reading one partition reads only that partition's file.
* Partition files (schema version 2) are laid out with the dimension names and coordinates
  of MSv4 (``time``, ``baseline_id``, ``frequency``, ``polarization``, ``uvw_label``) as
  HDF5 dimension scales, so ``xarray.open_dataset(partition, engine="h5netcdf")`` gives a
  labelled dataset. Version-1 stores (one row axis) are still read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time as _time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from astropy import units as u
from astropy.coordinates import EarthLocation, SkyCoord

from arl_mpi import __version__
from arl_mpi.errors import StoreError
from arl_mpi.io.atomic import DiskFullError, atomic_h5, is_disk_full
from arl_mpi.models import Configuration, Visibility, frame_of

log = logging.getLogger(__name__)

FORMAT = "arl_mpi.visstore"
SCHEMA_VERSION = 2
#: Schema versions this module reads (1: row layout only; 2: MSv4 dimension names, see docs/hdf5-store.md).
READABLE_VERSIONS = (1, 2)
INDEX_NAME = "index.h5"
PARTITION_DIR = "partitions"
_ROW_CHUNK = 4096
_PART_FIELDS = ("time", "integration_time", "uvw", "antenna1", "antenna2", "vis", "weight", "flags")
#: Partition layouts of schema version 2: rows on a (time, baseline) grid, or a plain row axis.
LAYOUT_GRID = "time_baseline"
LAYOUT_ROW = "row"


@dataclass
class StoreMeta:
    """Observation-wide metadata held in ``index.h5``.

    Attributes
    ----------
    phase_centre : SkyCoord (ICRS)
    frequency, channel_width : ndarray [nchan] Hz (all channels of the observation)
    polarisations : list of str, correlation labels
    configuration : Configuration
    telescope : str
    provenance : dict, free-form JSON-serialisable description of how the data were made
    """

    phase_centre: SkyCoord
    frequency: np.ndarray
    channel_width: np.ndarray
    polarisations: list[str]
    configuration: Configuration
    telescope: str = "unknown"
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.frequency = np.asarray(self.frequency, dtype=np.float64)
        self.channel_width = np.asarray(self.channel_width, dtype=np.float64)
        frame_of(self.polarisations)
        if self.frequency.ndim != 1 or self.channel_width.shape != self.frequency.shape:
            raise StoreError("StoreMeta: frequency and channel_width must be 1-D of equal length")


@dataclass(frozen=True)
class PartitionInfo:
    """One row of the partition table."""

    pid: int
    filename: str
    time_block: int
    freq_block: int
    chan_start: int
    chan_stop: int
    nrow: int
    time_min: float
    time_max: float
    sha256: str

    @property
    def nsamples(self) -> int:
        """Samples of one correlation (rows x channels)."""
        return int(self.nrow * (self.chan_stop - self.chan_start))

    @property
    def name(self) -> str:
        """Human name, e.g. ``t0001-f0000``."""
        return partition_name(self.time_block, self.freq_block)


@dataclass
class StoreIndex:
    """An opened store: metadata and the partition table (no visibilities)."""

    path: Path
    meta: StoreMeta
    partitions: list[PartitionInfo]
    schema_version: int
    created: str
    arl_version: str

    @property
    def nvis(self) -> int:
        """Total complex samples (rows x channels x polarisations)."""
        npol = len(self.meta.polarisations)
        return int(sum(p.nsamples * npol for p in self.partitions))

    @property
    def ntime_blocks(self) -> int:
        """Number of time blocks."""
        return 1 + max(p.time_block for p in self.partitions)

    @property
    def nfreq_blocks(self) -> int:
        """Number of frequency blocks."""
        return 1 + max(p.freq_block for p in self.partitions)

    def partition_path(self, pid: int) -> Path:
        """Path of partition ``pid``'s file."""
        return self.path / PARTITION_DIR / self.partitions[pid].filename


def partition_name(time_block: int, freq_block: int) -> str:
    """File stem of a partition: ``t{time_block:04d}-f{freq_block:04d}``."""
    return f"t{time_block:04d}-f{freq_block:04d}"


def sha256_file(path: str | os.PathLike, bufsize: int = 1 << 22) -> str:
    """SHA-256 hex digest of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------


def create_store(path: str | os.PathLike) -> Path:
    """Create the directory of a new, unfinished store.

    Refuses (``StoreError``) when ``path`` holds a finished store or is a non-empty
    directory that is not an unfinished store: stores are never modified in place.
    Safe to call from several processes at once.
    """
    p = check_new_store(path)
    (p / PARTITION_DIR).mkdir(parents=True, exist_ok=True)
    return p


def check_new_store(path: str | os.PathLike, unfinished: bool = True) -> Path:
    """Raise ``StoreError`` unless ``path`` may become a new store (see :func:`create_store`).

    ``unfinished=False`` also refuses an unfinished store that holds partition files.
    """
    p = Path(path)
    if (p / INDEX_NAME).exists():
        raise StoreError(f"{p}: a finished visibility store already exists here; refusing to overwrite it")
    if p.exists() and not p.is_dir():
        raise StoreError(f"{p}: exists and is not a directory")
    if p.is_dir() and any(x.name != PARTITION_DIR for x in p.iterdir()):
        raise StoreError(f"{p}: directory is not empty and is not an unfinished store")
    if not unfinished and (p / PARTITION_DIR).is_dir() and any((p / PARTITION_DIR).iterdir()):
        raise StoreError(f"{p}: holds an unfinished store (an interrupted write?); remove it and run again")
    return p


def store_disk_full(store: str | os.PathLike, e: BaseException) -> DiskFullError | None:
    """The one-line error for ``store`` not fitting on its disk, when ``e`` is a full disk (or
    quota) met while one of its files was written under a temporary name; else None."""
    if isinstance(e, DiskFullError):
        what, reason = Path(e.path).name, e.reason
    elif is_disk_full(e):
        what, reason = "it", os.strerror(e.errno)
    else:
        return None
    return DiskFullError(f"{store}: {reason} while writing {what} (nothing was left under {store}; "
                         "free space and run again)", str(store), reason)


def _write_partition_file(f: h5py.File, vis: Visibility, pid: int, time_block: int, freq_block: int,
                          chan_start: int) -> None:
    f.attrs["format"] = FORMAT + ".partition"
    f.attrs["schema_version"] = SCHEMA_VERSION
    f.attrs["pid"] = pid
    f.attrs["time_block"] = time_block
    f.attrs["freq_block"] = freq_block
    f.attrs["chan_start"] = chan_start
    f.attrs["chan_stop"] = chan_start + vis.nchan
    f.attrs["polarisations"] = json.dumps(list(vis.polarisations))
    _write_partition_datasets(f, vis)


def write_partition(
    store_path: str | os.PathLike,
    vis: Visibility,
    *,
    pid: int,
    time_block: int,
    freq_block: int,
    chan_start: int,
) -> PartitionInfo:
    """Write one partition file atomically; returns its row of the partition table.

    May run in any process; different processes may write different partitions at once.

    Parameters
    ----------
    store_path : path of a store made by :func:`create_store`
    vis : Visibility, the partition's data
    pid : int, partition number (index into the table)
    time_block, freq_block : int, block coordinates
    chan_start : int, first channel of this block in the observation's channel list
    """
    sp = Path(store_path)
    if (sp / INDEX_NAME).exists():
        raise StoreError(f"{sp}: store is finished; partitions cannot be added (stores are never modified in place)")
    fname = partition_name(time_block, freq_block) + ".h5"
    final = sp / PARTITION_DIR / fname
    if final.exists():
        raise StoreError(f"{final}: partition already written")
    nbytes = sum(np.asarray(getattr(vis, k)).nbytes for k in _PART_FIELDS)
    with atomic_h5(final, mode=0o444, nbytes=nbytes, make_parents=False, libver="latest") as f:
        _write_partition_file(f, vis, pid, time_block, freq_block, chan_start)
    digest = sha256_file(final)
    t = vis.time
    return PartitionInfo(
        pid=pid,
        filename=fname,
        time_block=time_block,
        freq_block=freq_block,
        chan_start=chan_start,
        chan_stop=chan_start + vis.nchan,
        nrow=vis.nrow,
        time_min=float(t.min()) if t.size else 0.0,
        time_max=float(t.max()) if t.size else 0.0,
        sha256=digest,
    )


def grid_baselines(vis: Visibility) -> int | None:
    """Baselines per time when the rows form a (time, baseline) grid, else None.

    A grid: rows time-major, every time holding the same baselines in the same order (what a
    simulation or a regular MS gives); then ``[nrow]`` is ``[ntime, nbaseline]`` in C order.
    """
    nrow = vis.nrow
    if nrow == 0:
        return None
    t = vis.time
    ntime = np.unique(t).size
    if nrow % ntime:
        return None
    nbl = nrow // ntime
    tt = t.reshape(ntime, nbl)
    if np.any(tt != tt[:, :1]) or np.any(np.diff(tt[:, 0]) <= 0):
        return None
    for a in (vis.antenna1, vis.antenna2):
        aa = a.reshape(ntime, nbl)
        if np.any(aa != aa[:1]):
            return None
    return nbl


def _put(f: h5py.File, name: str, data: np.ndarray, dims: tuple[str, ...], chunk0: int | None = None,
         chunk1: int | None = None, **attrs) -> h5py.Dataset:
    """A dataset (chunked, fletcher32 unless empty or strings) with its dimension scales attached.

    Chunks hold whole trailing axes; ``chunk0``/``chunk1`` bound the first two (rows, or
    times and baselines), so that a chunk holds at most about 4096 rows.
    """
    if data.dtype.kind in "OU":
        d = f.create_dataset(name, data=np.array([str(x) for x in data], dtype=object), dtype=h5py.string_dtype())
    elif data.size:
        chunks = list(data.shape)
        for axis, c in ((0, chunk0), (1, chunk1)):
            if c is not None:
                chunks[axis] = max(1, min(c, data.shape[axis]))
        d = f.create_dataset(name, data=data, chunks=tuple(chunks), fletcher32=True)
    else:
        d = f.create_dataset(name, data=data)
    for k, v in attrs.items():
        d.attrs[k] = v
    if len(dims) == 1 and dims[0] == name:
        d.make_scale(name)
    else:
        for i, dim in enumerate(dims):
            d.dims[i].attach_scale(f[dim])
    return d


def _write_partition_datasets(f: h5py.File, vis: Visibility) -> None:
    """Schema-2 datasets of one partition, on MSv4's dimensions (see docs/hdf5-store.md)."""
    nbl = grid_baselines(vis)
    _put(f, "frequency", np.asarray(vis.frequency, dtype=np.float64), ("frequency",), units="Hz")
    _put(f, "polarization", np.array(list(vis.polarisations)), ("polarization",))
    _put(f, "uvw_label", np.array(["u", "v", "w"]), ("uvw_label",))
    t_attrs = {"units": "s", "format": "MJD seconds", "scale": "utc"}
    if nbl is None:
        f.attrs["layout"] = LAYOUT_ROW
        _put(f, "row", np.arange(vis.nrow, dtype=np.int64), ("row",))
        rows = ("row",)
        _put(f, "time", vis.time, rows, _ROW_CHUNK, **t_attrs)
        _put(f, "antenna1", vis.antenna1, rows, _ROW_CHUNK)
        _put(f, "antenna2", vis.antenna2, rows, _ROW_CHUNK)
        _put(f, "integration_time", vis.integration_time, rows, _ROW_CHUNK, units="s")
        _put(f, "uvw", vis.uvw, ("row", "uvw_label"), _ROW_CHUNK, units="m")
        for name in ("vis", "weight", "flags"):
            _put(f, name, getattr(vis, name), ("row", "frequency", "polarization"), _ROW_CHUNK,
                 coordinates="time antenna1 antenna2")
        return
    ntime = vis.nrow // nbl
    f.attrs["layout"] = LAYOUT_GRID
    tchunk = max(1, _ROW_CHUNK // nbl)
    _put(f, "time", vis.time.reshape(ntime, nbl)[:, 0].copy(), ("time",), **t_attrs)
    _put(f, "baseline_id", np.arange(nbl, dtype=np.int64), ("baseline_id",))
    _put(f, "antenna1", vis.antenna1[:nbl], ("baseline_id",))
    _put(f, "antenna2", vis.antenna2[:nbl], ("baseline_id",))
    grid = ("time", "baseline_id")
    bchunk = min(nbl, _ROW_CHUNK)
    _put(f, "integration_time", vis.integration_time.reshape(ntime, nbl), grid, tchunk, bchunk, units="s")
    _put(f, "uvw", vis.uvw.reshape(ntime, nbl, 3), grid + ("uvw_label",), tchunk, bchunk, units="m")
    nchan, npol = vis.vis.shape[1:]
    for name in ("vis", "weight", "flags"):
        _put(f, name, getattr(vis, name).reshape(ntime, nbl, nchan, npol), grid + ("frequency", "polarization"),
             tchunk, bchunk, coordinates="antenna1 antenna2")


def _read_partition_datasets(f: h5py.File, version: int, where: Path) -> dict[str, np.ndarray]:
    """The row-axis arrays of a partition file of any readable version."""
    data = {name: _need(f, name, where)[()] for name in _PART_FIELDS}
    if version == 1:
        return data
    layout = str(_attr(f, "layout", where))
    if layout == LAYOUT_ROW:
        return data
    if layout != LAYOUT_GRID:
        raise StoreError(f"{where}: unknown partition layout '{layout}'")
    ntime, nbl = data["vis"].shape[:2]
    if data["time"].shape != (ntime,) or data["antenna1"].shape != (nbl,) or data["antenna2"].shape != (nbl,):
        raise StoreError(f"{where}: time/baseline axes do not match the visibilities")
    out = {"time": np.repeat(data["time"], nbl), "antenna1": np.tile(data["antenna1"], ntime),
           "antenna2": np.tile(data["antenna2"], ntime)}
    for name in ("integration_time", "uvw", "vis", "weight", "flags"):
        a = data[name]
        out[name] = a.reshape((ntime * nbl,) + a.shape[2:])
    return out


def finalize_store(store_path: str | os.PathLike, meta: StoreMeta, partitions: list[PartitionInfo]) -> StoreIndex:
    """Write ``index.h5`` atomically, which marks the store finished.

    Checks that every listed partition file exists and that channel ranges tile the
    observation's channels for each time block.
    """
    sp = Path(store_path)
    if (sp / INDEX_NAME).exists():
        raise StoreError(f"{sp}: store is already finished")
    parts = sorted(partitions, key=lambda p: p.pid)
    if [p.pid for p in parts] != list(range(len(parts))):
        raise StoreError(f"{sp}: partition ids must be 0..{len(parts) - 1}")
    for p in parts:
        if not (sp / PARTITION_DIR / p.filename).is_file():
            raise StoreError(f"{sp}: partition {p.name} was not written")
        if not (0 <= p.chan_start < p.chan_stop <= meta.frequency.size):
            raise StoreError(f"{sp}: partition {p.name} has channels outside the observation")
    cfg = meta.configuration
    with atomic_h5(sp / INDEX_NAME, mode=0o444, libver="latest") as f:
        f.attrs["format"] = FORMAT
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["created"] = _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime())
        f.attrs["arl_mpi_version"] = __version__
        f.attrs["telescope"] = meta.telescope
        f.attrs["provenance"] = json.dumps(meta.provenance, default=str)
        pc = meta.phase_centre.icrs
        f.attrs["phase_centre_ra_deg"] = float(pc.ra.deg)
        f.attrs["phase_centre_dec_deg"] = float(pc.dec.deg)
        f.attrs["phase_centre_frame"] = "ICRS"
        f.create_dataset("frequency", data=meta.frequency)
        f.create_dataset("channel_width", data=meta.channel_width)
        f.create_dataset("polarisations", data=np.array(meta.polarisations, dtype="S4"))
        g = f.create_group("antennas")
        g.attrs["configuration"] = cfg.name
        loc = cfg.location.to_geodetic()
        g.attrs["site_lon_deg"] = float(loc.lon.deg)
        g.attrs["site_lat_deg"] = float(loc.lat.deg)
        g.attrs["site_height_m"] = float(loc.height.to_value(u.m))
        g.create_dataset("names", data=np.array(cfg.names, dtype="S"))
        g.create_dataset("xyz", data=cfg.xyz)
        g.create_dataset("diameter", data=cfg.diameter)
        table = np.array(
            [(p.pid, p.filename, p.time_block, p.freq_block, p.chan_start, p.chan_stop, p.nrow,
              p.time_min, p.time_max, p.sha256) for p in parts],
            dtype=_PARTITION_DTYPE,
        )
        f.create_dataset("partitions", data=table)
    log.info("finished store %s: %d partitions", sp, len(parts))
    return open_store(sp)


_PARTITION_DTYPE = np.dtype([
    ("pid", "<i4"), ("filename", "S32"), ("time_block", "<i4"), ("freq_block", "<i4"),
    ("chan_start", "<i4"), ("chan_stop", "<i4"), ("nrow", "<i8"),
    ("time_min", "<f8"), ("time_max", "<f8"), ("sha256", "S64"),
])


def plan_partitions(times: np.ndarray, nchan: int, ntime_parts: int,
                    nfreq_parts: int) -> list[tuple[int, int, np.ndarray, slice]]:
    """Split unique times and channels into blocks.

    Returns
    -------
    list of ``(time_block, freq_block, times_in_block, channel_slice)`` in partition-id order.
    """
    ut = np.unique(np.asarray(times))
    if ntime_parts < 1 or nfreq_parts < 1:
        raise StoreError("partition counts must be >= 1")
    if ntime_parts > ut.size:
        raise StoreError(f"cannot make {ntime_parts} time partitions from {ut.size} times")
    if nfreq_parts > nchan:
        raise StoreError(f"cannot make {nfreq_parts} frequency partitions from {nchan} channels")
    tblocks = np.array_split(ut, ntime_parts)
    cedges = np.linspace(0, nchan, nfreq_parts + 1).round().astype(int)
    out = []
    for tb, tt in enumerate(tblocks):
        for fb in range(nfreq_parts):
            out.append((tb, fb, tt, slice(int(cedges[fb]), int(cedges[fb + 1]))))
    return out


def write_store(path: str | os.PathLike, meta: StoreMeta, vis: Visibility, ntime_parts: int = 1,
                nfreq_parts: int = 1) -> StoreIndex:
    """Partition an in-memory observation and write it as a store (serially).

    Convenience for small data and tests; large observations are written in parallel by
    :mod:`arl_mpi.simulate` / :mod:`arl_mpi.graphs`.
    """
    create_store(path)
    infos = []
    for pid, (tb, fb, tt, cs) in enumerate(plan_partitions(vis.time, vis.nchan, ntime_parts, nfreq_parts)):
        infos.append(write_partition(path, select(vis, np.isin(vis.time, tt), cs), pid=pid,
                                     time_block=tb, freq_block=fb, chan_start=cs.start))
    return finalize_store(path, meta, infos)


def select(vis: Visibility, rows: np.ndarray | slice, chans: slice) -> Visibility:
    """Sub-select rows and a channel range of a Visibility (copies)."""
    return Visibility(
        time=vis.time[rows], uvw=vis.uvw[rows], antenna1=vis.antenna1[rows], antenna2=vis.antenna2[rows],
        vis=np.ascontiguousarray(vis.vis[rows][:, chans]), weight=np.ascontiguousarray(vis.weight[rows][:, chans]),
        flags=np.ascontiguousarray(vis.flags[rows][:, chans]), frequency=vis.frequency[chans],
        channel_width=vis.channel_width[chans], polarisations=list(vis.polarisations),
        phase_centre=vis.phase_centre, integration_time=vis.integration_time[rows], meta=dict(vis.meta),
    )


# --------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------


def _need(f: h5py.File | h5py.Group, name: str, where: Path) -> h5py.Dataset:
    if name not in f:
        raise StoreError(f"{where}: missing dataset '{name}'")
    return f[name]


def _attr(f: h5py.File | h5py.Group, name: str, where: Path):
    if name not in f.attrs:
        raise StoreError(f"{where}: missing attribute '{name}'")
    v = f.attrs[name]
    return v.decode() if isinstance(v, bytes) else v


def _check_schema(f: h5py.File, where: Path, fmt: str) -> int:
    got_fmt = _attr(f, "format", where)
    if got_fmt != fmt:
        raise StoreError(f"{where}: not an arl_mpi visibility store file (format '{got_fmt}', expected '{fmt}')")
    ver = int(_attr(f, "schema_version", where))
    if ver not in READABLE_VERSIONS:
        raise StoreError(f"{where}: unsupported store schema version {ver} "
                         f"(this arl_mpi {__version__} reads versions {', '.join(map(str, READABLE_VERSIONS))})")
    return ver


def open_store(path: str | os.PathLike) -> StoreIndex:
    """Open a finished store read-only and return its index (metadata only).

    Raises
    ------
    StoreError
        Missing path, not a store, unfinished store, not HDF5, unknown schema version,
        or missing fields; the message names the file.
    """
    p = Path(path)
    if not p.exists():
        raise StoreError(f"{p}: no such visibility store")
    if p.is_file():
        raise StoreError(f"{p}: is a file; a visibility store is a directory holding {INDEX_NAME}")
    ipath = p / INDEX_NAME
    if not ipath.exists():
        if (p / PARTITION_DIR).is_dir():
            raise StoreError(f"{p}: unfinished visibility store (no {INDEX_NAME}); the writer did not complete")
        raise StoreError(f"{p}: not a visibility store (no {INDEX_NAME})")
    if not h5py.is_hdf5(ipath):
        raise StoreError(f"{ipath}: not an HDF5 file")
    try:
        with h5py.File(ipath, "r") as f:
            ver = _check_schema(f, ipath, FORMAT)
            freq = _need(f, "frequency", ipath)[()]
            cw = _need(f, "channel_width", ipath)[()]
            pols = [x.decode() for x in _need(f, "polarisations", ipath)[()]]
            ant = f["antennas"] if "antennas" in f else None
            if ant is None:
                raise StoreError(f"{ipath}: missing group 'antennas'")
            loc = EarthLocation.from_geodetic(
                float(_attr(ant, "site_lon_deg", ipath)) * u.deg,
                float(_attr(ant, "site_lat_deg", ipath)) * u.deg,
                float(_attr(ant, "site_height_m", ipath)) * u.m,
            )
            cfg = Configuration(
                name=str(_attr(ant, "configuration", ipath)),
                names=[x.decode() for x in _need(ant, "names", ipath)[()]],
                xyz=_need(ant, "xyz", ipath)[()],
                diameter=_need(ant, "diameter", ipath)[()],
                location=loc,
            )
            pc = SkyCoord(ra=float(_attr(f, "phase_centre_ra_deg", ipath)) * u.deg,
                          dec=float(_attr(f, "phase_centre_dec_deg", ipath)) * u.deg, frame="icrs")
            meta = StoreMeta(phase_centre=pc, frequency=freq, channel_width=cw, polarisations=pols,
                             configuration=cfg, telescope=str(_attr(f, "telescope", ipath)),
                             provenance=json.loads(_attr(f, "provenance", ipath)))
            table = _need(f, "partitions", ipath)[()]
            created = str(_attr(f, "created", ipath))
            version = str(_attr(f, "arl_mpi_version", ipath))
    except StoreError:
        raise
    except (OSError, KeyError, ValueError) as e:
        raise StoreError(f"{ipath}: unreadable store index ({e})") from None
    parts = [
        PartitionInfo(pid=int(r["pid"]), filename=r["filename"].decode(), time_block=int(r["time_block"]),
                      freq_block=int(r["freq_block"]), chan_start=int(r["chan_start"]), chan_stop=int(r["chan_stop"]),
                      nrow=int(r["nrow"]), time_min=float(r["time_min"]), time_max=float(r["time_max"]),
                      sha256=r["sha256"].decode())
        for r in table
    ]
    if not parts:
        raise StoreError(f"{ipath}: store has no partitions")
    return StoreIndex(path=p, meta=meta, partitions=parts, schema_version=ver, created=created, arl_version=version)


def read_partition(index: StoreIndex, pid: int, *, verify: bool = True) -> Visibility:
    """Read one partition (its file only), read-only, checking its integrity.

    Parameters
    ----------
    index : StoreIndex from :func:`open_store`
    pid : int, partition id
    verify : bool, check the file's SHA-256 against the index before reading
        (fletcher32 chunk checksums are always checked by HDF5)

    Raises
    ------
    StoreError naming the file and partition on any corruption or inconsistency.
    """
    if not 0 <= pid < len(index.partitions):
        raise StoreError(f"{index.path}: no partition {pid} (store has {len(index.partitions)})")
    info = index.partitions[pid]
    fpath = index.partition_path(pid)
    what = f"{fpath} (partition {info.name})"
    if not fpath.is_file():
        raise StoreError(f"{what}: partition file is missing")
    if verify and sha256_file(fpath) != info.sha256:
        raise StoreError(f"{what}: checksum mismatch, the file is corrupted or was modified")
    try:
        with h5py.File(fpath, "r") as f:
            ver = _check_schema(f, fpath, FORMAT + ".partition")
            data = _read_partition_datasets(f, ver, fpath)
            cs, ce = int(_attr(f, "chan_start", fpath)), int(_attr(f, "chan_stop", fpath))
            part_pols = json.loads(f.attrs["polarisations"]) if "polarisations" in f.attrs else None
    except StoreError:
        raise
    except OSError as e:
        raise StoreError(f"{what}: unreadable or corrupted ({str(e).splitlines()[0]})") from None
    if (cs, ce) != (info.chan_start, info.chan_stop):
        lo, hi = info.chan_start, info.chan_stop - 1
        raise StoreError(f"{what}: holds channels {cs}-{ce - 1} where the store index has {lo}-{hi} "
                         f"({index.meta.frequency[lo] / 1e6:.6g}-{index.meta.frequency[hi] / 1e6:.6g} MHz): "
                         "does not match the store index")
    if data["time"].shape[0] != info.nrow:
        raise StoreError(f"{what}: holds {data['time'].shape[0]} rows where the store index has {info.nrow}: "
                         "does not match the store index")
    m = index.meta
    if part_pols is not None and list(part_pols) != list(m.polarisations):
        raise StoreError(f"{what}: polarisations {' '.join(part_pols)} differ from the store's "
                         f"{' '.join(m.polarisations)}")
    if data["vis"].shape[1:] != (ce - cs, len(m.polarisations)):
        raise StoreError(f"{what}: holds {data['vis'].shape[1]} channels x {data['vis'].shape[2]} polarisations "
                         f"where the store index has {ce - cs} channels ({m.frequency[cs] / 1e6:.6g}-"
                         f"{m.frequency[ce - 1] / 1e6:.6g} MHz) x {len(m.polarisations)}")
    return Visibility(
        time=data["time"], uvw=data["uvw"], antenna1=data["antenna1"], antenna2=data["antenna2"],
        vis=data["vis"], weight=data["weight"], flags=data["flags"],
        frequency=m.frequency[cs:ce], channel_width=m.channel_width[cs:ce],
        polarisations=list(m.polarisations), phase_centre=m.phase_centre,
        integration_time=data["integration_time"],
        meta={"pid": pid, "partition": info.name, "store": str(index.path)},
    )


def verify_store(index: StoreIndex) -> list[str]:
    """Check every partition; return a list of one-line problems (empty when sound)."""
    problems = []
    for p in index.partitions:
        try:
            read_partition(index, p.pid, verify=True)
        except StoreError as e:
            problems.append(str(e))
    return problems
