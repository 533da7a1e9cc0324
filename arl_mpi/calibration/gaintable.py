"""Gain-table container and its HDF5 reader/writer.

A :class:`GainTable` holds complex antenna gains on a grid of solution cells
``[ntime, nant, nfreq_sol, nrec]``.  The HDF5 layout written by
:func:`write_gaintable` is documented in ``docs/calibration.md``; it is
self-describing and can be read with plain ``h5py``. The same table can be written and
read as an h5parm (:func:`write_gaintable_h5parm`, :func:`read_gaintable_h5parm`), the format
of DP3, LoSoTo and WSClean; ours also keeps the solution intervals, which h5parm lacks.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from arl_mpi.io.atomic import atomic_h5
from arl_mpi.io.h5parm import H5parmError, Solset, Soltab, read_h5parm, write_h5parm

log = logging.getLogger(__name__)

SCHEMA_NAME = "arl_mpi.gaintable"
SCHEMA_VERSION = 1

_ARRAY_FIELDS = ("time", "interval", "freq", "antennas", "gain", "weight", "flags")


class GainTableFormatError(ValueError):
    """Raised when a file is not a gain table of a supported schema."""


def _as_real_1d(name: str, value: object) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise ValueError(f"GainTable.{name}: expected a 1-D array, got shape {arr.shape}")
    if arr.dtype.kind in "iu":
        arr = arr.astype(np.float64)
    if arr.dtype.kind != "f":
        raise ValueError(f"GainTable.{name}: expected a real floating dtype, got {arr.dtype}")
    return arr


@dataclass(eq=False)
class GainTable:
    """Complex antenna gains on solution cells.

    Parameters
    ----------
    time : numpy.ndarray
        float [ntime]; solution-interval centres (MJD seconds).
    interval : numpy.ndarray
        float [ntime]; width of each solution interval in seconds.
    freq : numpy.ndarray
        float [nfreq_sol]; solution frequency centres in Hz.
    antennas : numpy.ndarray
        str [nant]; antenna names (row antenna indices index this axis).
    gain : numpy.ndarray
        complex [ntime, nant, nfreq_sol, nrec].
    weight : numpy.ndarray
        float, same shape as ``gain``; inverse variance of each solution
        (0 for flagged solutions).
    flags : numpy.ndarray
        bool, same shape as ``gain``; True = solution unusable (no data,
        low SNR or not converged).
    receptors : list of str
        ``['X', 'Y']``, ``['R', 'L']`` (diagonal) or ``['I']`` (scalar);
        ``len(receptors) == nrec``.
    phase_only : bool
        True if the gains were constrained to unit amplitude.
    ref_ant : int
        Index of the reference antenna (its phase is zero where it has data).

    Raises
    ------
    ValueError
        On construction, naming the offending field, if shapes or dtypes are
        inconsistent.
    """

    time: np.ndarray
    interval: np.ndarray
    freq: np.ndarray
    antennas: np.ndarray
    gain: np.ndarray
    weight: np.ndarray
    flags: np.ndarray
    receptors: list[str] = field(default_factory=lambda: ["I"])
    phase_only: bool = False
    ref_ant: int = 0

    def __post_init__(self) -> None:
        self.time = _as_real_1d("time", self.time)
        self.interval = _as_real_1d("interval", self.interval)
        self.freq = _as_real_1d("freq", self.freq)
        ants = np.asarray(self.antennas)
        if ants.ndim != 1:
            raise ValueError(f"GainTable.antennas: expected a 1-D array, got shape {ants.shape}")
        if ants.size and ants.dtype.kind not in "UO":
            raise ValueError(f"GainTable.antennas: expected strings, got dtype {ants.dtype}")
        self.antennas = ants.astype(str)
        if isinstance(self.receptors, str):
            raise ValueError("GainTable.receptors: expected a list of strings, got a str")
        self.receptors = [str(r) for r in self.receptors]
        if not self.receptors:
            raise ValueError("GainTable.receptors: must not be empty")

        ntime, nant, nfreq, nrec = (
            self.time.size,
            self.antennas.size,
            self.freq.size,
            len(self.receptors),
        )
        if self.interval.shape != (ntime,):
            raise ValueError(
                f"GainTable.interval: shape {self.interval.shape} != time shape ({ntime},)"
            )
        expected = (ntime, nant, nfreq, nrec)

        gain = np.asarray(self.gain)
        if gain.dtype.kind != "c":
            raise ValueError(f"GainTable.gain: expected a complex dtype, got {gain.dtype}")
        if gain.shape != expected:
            raise ValueError(
                f"GainTable.gain: shape {gain.shape} != (ntime, nant, nfreq, nrec) = {expected}"
            )
        self.gain = gain

        weight = np.asarray(self.weight)
        if weight.dtype.kind in "iu":
            weight = weight.astype(np.float64)
        if weight.dtype.kind != "f":
            raise ValueError(
                f"GainTable.weight: expected a real floating dtype, got {weight.dtype}"
            )
        if weight.shape != expected:
            raise ValueError(f"GainTable.weight: shape {weight.shape} != gain shape {expected}")
        self.weight = weight

        flags = np.asarray(self.flags)
        if flags.dtype != np.bool_:
            raise ValueError(f"GainTable.flags: expected dtype bool, got {flags.dtype}")
        if flags.shape != expected:
            raise ValueError(f"GainTable.flags: shape {flags.shape} != gain shape {expected}")
        self.flags = flags

        if isinstance(self.phase_only, np.bool_):
            self.phase_only = bool(self.phase_only)
        if not isinstance(self.phase_only, bool):
            raise ValueError(f"GainTable.phase_only: expected bool, got {type(self.phase_only)}")
        if isinstance(self.ref_ant, bool) or not isinstance(self.ref_ant, int | np.integer):
            raise ValueError(f"GainTable.ref_ant: expected int, got {type(self.ref_ant)}")
        self.ref_ant = int(self.ref_ant)
        if nant and not 0 <= self.ref_ant < nant:
            raise ValueError(f"GainTable.ref_ant: {self.ref_ant} outside [0, {nant})")

    # ------------------------------------------------------------------ helpers
    @property
    def ntime(self) -> int:
        """Number of solution intervals."""
        return int(self.time.size)

    @property
    def nant(self) -> int:
        """Number of antennas."""
        return int(self.antennas.size)

    @property
    def nfreq(self) -> int:
        """Number of solution frequency cells."""
        return int(self.freq.size)

    @property
    def nrec(self) -> int:
        """Number of receptors (1 scalar, 2 diagonal)."""
        return len(self.receptors)

    @property
    def snr(self) -> np.ndarray:
        """Signal-to-noise ratio of each solution, ``|g| * sqrt(weight)``.

        Returns
        -------
        numpy.ndarray
            float, same shape as ``gain`` (0 where the weight is 0).
        """
        return np.abs(self.gain) * np.sqrt(np.maximum(self.weight, 0.0))

    def copy(self) -> GainTable:
        """Return a deep copy."""
        return GainTable(
            time=self.time.copy(),
            interval=self.interval.copy(),
            freq=self.freq.copy(),
            antennas=self.antennas.copy(),
            gain=self.gain.copy(),
            weight=self.weight.copy(),
            flags=self.flags.copy(),
            receptors=list(self.receptors),
            phase_only=self.phase_only,
            ref_ant=self.ref_ant,
        )


# ---------------------------------------------------------------------- HDF5 IO
def _is_within(path: Path, directory: Path) -> bool:
    try:
        path.relative_to(directory)
    except ValueError:
        return False
    return True


def check_not_inside(path: str | os.PathLike, forbidden_dir: str | os.PathLike) -> None:
    """Raise if ``path`` lies inside ``forbidden_dir`` (e.g. a visibility store).

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    forbidden_dir : str or os.PathLike
        Directory that must not receive the file.

    Raises
    ------
    ValueError
        If the resolved ``path`` is inside the resolved ``forbidden_dir``.
    """
    p = Path(path).resolve()
    d = Path(forbidden_dir).resolve()
    if _is_within(p, d):
        raise ValueError(f"refusing to write gain table {p} inside protected directory {d}")


def write_gaintable(
    path: str | os.PathLike,
    gt: GainTable,
    *,
    forbidden_dirs: Sequence[str | os.PathLike] = (),
) -> Path:
    """Write a gain table to HDF5 atomically.

    The file is built in memory, written under a temporary name in the
    destination directory and moved into place (:func:`arl_mpi.io.atomic.atomic_h5`),
    so readers never see a partial file; a full disk is a one-line
    :class:`~arl_mpi.errors.OutputError` naming ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file (conventionally ``*.h5``), beside — not inside — any
        visibility store.
    gt : GainTable
        Table to write.
    forbidden_dirs : sequence of path-like, optional
        Directories (e.g. visibility stores) the file must not be written in.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    ValueError
        If ``path`` lies inside one of ``forbidden_dirs``.
    OutputError
        If the disk (or quota) is full; nothing is left under ``path`` or a temporary name.
    """
    if not isinstance(gt, GainTable):
        raise TypeError(f"write_gaintable: expected GainTable, got {type(gt).__name__}")
    path = Path(path)
    for d in forbidden_dirs:
        check_not_inside(path, d)
    with atomic_h5(path) as f:
        f.attrs["schema"] = SCHEMA_NAME
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["receptors"] = np.array(gt.receptors, dtype=h5py.string_dtype("utf-8"))
        f.attrs["phase_only"] = np.bool_(gt.phase_only)
        f.attrs["ref_ant"] = np.int64(gt.ref_ant)
        f.attrs["axes"] = np.array(
            ["time", "antenna", "freq", "receptor"], dtype=h5py.string_dtype("utf-8")
        )
        f.create_dataset("time", data=gt.time)
        f.create_dataset("interval", data=gt.interval)
        f.create_dataset("freq", data=gt.freq)
        f.create_dataset(
            "antennas",
            data=np.array(gt.antennas.tolist(), dtype=object),
            dtype=h5py.string_dtype("utf-8"),
        )
        f.create_dataset("gain", data=gt.gain)
        f.create_dataset("weight", data=gt.weight)
        f.create_dataset("flags", data=gt.flags)
    log.debug("wrote gain table %s %s", path, gt.gain.shape)
    return path


def read_gaintable(path: str | os.PathLike) -> GainTable:
    """Read a gain table written by :func:`write_gaintable`.

    Parameters
    ----------
    path : str or os.PathLike
        HDF5 file.

    Returns
    -------
    GainTable

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    GainTableFormatError
        If the file is not HDF5, not a gain table, or of an unsupported
        schema version (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"gain table file not found: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise GainTableFormatError(f"{path}: not a readable HDF5 file ({exc})") from None
    with f:
        schema = f.attrs.get("schema")
        if isinstance(schema, bytes):
            schema = schema.decode()
        if schema != SCHEMA_NAME:
            raise GainTableFormatError(f"{path}: not a gain table (schema attribute {schema!r})")
        version = f.attrs.get("schema_version")
        if version is None or int(version) != SCHEMA_VERSION:
            raise GainTableFormatError(
                f"{path}: unsupported gain table schema_version {version!r} "
                f"(this reader supports {SCHEMA_VERSION})"
            )
        missing = [k for k in _ARRAY_FIELDS if k not in f]
        if missing:
            raise GainTableFormatError(f"{path}: gain table is missing datasets {missing}")
        try:
            receptors = [
                r.decode() if isinstance(r, bytes) else str(r) for r in f.attrs["receptors"]
            ]
            gt = GainTable(
                time=f["time"][()],
                interval=f["interval"][()],
                freq=f["freq"][()],
                antennas=np.array(f["antennas"].asstr()[()], dtype=str),
                gain=f["gain"][()],
                weight=f["weight"][()],
                flags=f["flags"][()],
                receptors=receptors,
                phase_only=bool(f.attrs["phase_only"]),
                ref_ant=int(f.attrs["ref_ant"]),
            )
        except (KeyError, ValueError) as exc:
            raise GainTableFormatError(f"{path}: invalid gain table ({exc})") from None
    return gt


# ---------------------------------------------------------------------- h5parm
#: Extension attributes of our solsets/soltabs (ignored by DP3 and LoSoTo): what a GainTable
#: carries beyond the h5parm standard, so that our own tables survive the round trip.
_H5PARM_EXTRA = ("arl_mpi_interval", "arl_mpi_ref_ant", "arl_mpi_phase_only")


def _pol_labels(receptors: Sequence[str]) -> list[str] | None:
    """h5parm ``pol`` axis of a table's receptors: X,Y -> XX,YY; R,L -> RR,LL; scalar -> None."""
    if len(receptors) == 1:
        return None
    return [r + r for r in receptors]


def gaintable_to_solset(
    gt: GainTable,
    *,
    antenna_positions: np.ndarray | None = None,
    source_name: str = "pointing",
    source_dir: tuple[float, float] = (0.0, 0.0),
) -> Solset:
    """Express a gain table as an h5parm solset: ``phase000`` (and ``amplitude000`` unless
    the table is phase-only) on axes ``time,freq,ant,dir,pol`` (no ``pol`` axis for a scalar
    table), as DP3's gain calibration writes them.

    Parameters
    ----------
    gt : GainTable
    antenna_positions : [nant, 3] ITRF metres for the ``antenna`` table (zeros if None)
    source_name, source_dir : the one direction (RA, Dec in rad: the phase centre)

    Returns
    -------
    Solset
        Flagged solutions get weight 0; other weights are the table's inverse variances.
    """
    pols = _pol_labels(gt.receptors)
    axes = ("time", "freq", "ant", "dir") + (("pol",) if pols else ())
    coords: dict[str, np.ndarray] = {"time": gt.time, "freq": gt.freq, "ant": gt.antennas,
                                     "dir": np.array([source_name])}
    if pols:
        coords["pol"] = np.array(pols)
    # [ntime, nant, nfreq, nrec] -> [time, freq, ant, dir(1), pol]
    g = np.transpose(gt.gain, (0, 2, 1, 3))[:, :, :, None, :]
    w = np.transpose(np.where(gt.flags, 0.0, gt.weight), (0, 2, 1, 3))[:, :, :, None, :]
    if not pols:
        g, w = g[..., 0], w[..., 0]
    extra = {"arl_mpi_interval": np.asarray(gt.interval, dtype=np.float64)}
    soltabs = {"phase000": Soltab("phase", axes, coords, np.angle(g), w, attrs=dict(extra))}
    if not gt.phase_only:
        soltabs["amplitude000"] = Soltab("amplitude", axes, coords, np.abs(g), w, attrs=dict(extra))
    pos = np.zeros((gt.nant, 3)) if antenna_positions is None else np.asarray(antenna_positions, dtype=np.float64)
    return Solset(antenna_names=list(gt.antennas), antenna_positions=pos, source_names=[source_name],
                  source_dirs=np.array([source_dir], dtype=np.float64), soltabs=soltabs,
                  attrs={"arl_mpi_ref_ant": np.int64(gt.ref_ant), "arl_mpi_phase_only": np.bool_(gt.phase_only)})


def write_gaintable_h5parm(path: str | os.PathLike, gt: GainTable, *,
                           forbidden_dirs: Sequence[str | os.PathLike] = (), **kwargs) -> Path:
    """Write a gain table as an h5parm file (atomically); ``kwargs`` go to :func:`gaintable_to_solset`.

    Raises
    ------
    ValueError
        If ``path`` lies inside one of ``forbidden_dirs`` (e.g. the visibility store).
    """
    for d in forbidden_dirs:
        check_not_inside(path, d)
    return write_h5parm(path, gaintable_to_solset(gt, **kwargs))


def solset_to_gaintable(solset: Solset, where: str = "h5parm") -> GainTable:
    """The gain table of a solset whose phase and amplitude soltabs share one time/freq/ant grid
    (as :func:`gaintable_to_solset` writes them). A missing amplitude soltab means unit
    amplitudes (phase-only); the solution interval is our extension attribute when present,
    else the spacing of the time axis.

    Raises
    ------
    H5parmError
        No phase/amplitude soltab, soltabs on different grids, or more than one direction.
    """
    from arl_mpi.calibration.solutions import canonical_soltab

    tabs = [canonical_soltab(st, f"{where}/{k}") for k, st in solset.soltabs.items()
            if st.soltype in ("phase", "amplitude", "scalarphase", "scalaramplitude")]
    if not tabs:
        raise H5parmError(f"{where}: no phase or amplitude soltab")
    ref = tabs[0]
    for t in tabs[1:]:
        same = (np.array_equal(t.time, ref.time) and np.array_equal(t.freq, ref.freq)
                and list(t.ant) == list(ref.ant) and t.receptors == ref.receptors)
        if not same:
            raise H5parmError(f"{where}: soltabs {ref.name} and {t.name} are on different axes; "
                              "apply it with --apply-solutions (which interpolates each)")
    shape = ref.val.shape  # [time, freq, ant, rec]
    phase = np.zeros(shape)
    amp = np.ones(shape)
    flags = np.zeros(shape, dtype=bool)
    weight = np.ones(shape)
    for t in tabs:
        if t.kind == "phase":
            phase += t.val
        else:
            amp *= t.val
        flags |= t.flags
        weight = np.where(t.flags, 0.0, t.weight)
    gain = amp * np.exp(1j * phase)
    gain = np.where(flags & (gain == 0), 1.0 + 0j, gain)  # flagged and blank (NaN in the file): unit gain
    interval = None
    for k in ("phase000", "amplitude000"):
        st = solset.soltabs.get(k)
        if st is not None and "arl_mpi_interval" in st.attrs:
            interval = np.asarray(st.attrs["arl_mpi_interval"], dtype=np.float64).ravel()
    if interval is None or interval.size != ref.time.size:
        dt = np.diff(np.sort(ref.time))
        interval = np.full(ref.time.size, float(np.median(dt)) if dt.size else 0.0)
    ref_ant = int(solset.attrs.get("arl_mpi_ref_ant", 0))
    phase_only = bool(solset.attrs.get("arl_mpi_phase_only", not any(t.kind == "amplitude" for t in tabs)))
    return GainTable(time=ref.time, interval=interval, freq=ref.freq, antennas=np.asarray(ref.ant, dtype=str),
                     gain=np.transpose(gain, (0, 2, 1, 3)), weight=np.transpose(weight, (0, 2, 1, 3)),
                     flags=np.transpose(flags, (0, 2, 1, 3)), receptors=list(ref.receptors),
                     phase_only=phase_only, ref_ant=ref_ant if 0 <= ref_ant < len(ref.ant) else 0)


def read_gaintable_h5parm(path: str | os.PathLike, solset: str | None = None) -> GainTable:
    """Read an h5parm file (one solset) into a :class:`GainTable` (see :func:`solset_to_gaintable`)."""
    return solset_to_gaintable(read_h5parm(path, solset), where=str(path))
