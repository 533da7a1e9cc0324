"""Checkpoints of the ICAL and spectral-line pipelines (continuum's is in :mod:`.outputs`).

ICAL keeps two files, each written atomically (temporary name, then rename):

* ``PREFIX-checkpoint.h5``: the major-cycle loop of the current round (model, cycle and
  component counters), written by :func:`arl_mpi.pipeline.major_cycle.clean_loop`;
* ``PREFIX-ical-state.h5``: which round runs, the gain tables it images with (one per
  partition) and the finished rounds' records (:class:`IcalState`).

Before a new round's state is written the previous round's loop checkpoint is removed, so
a loop checkpoint always belongs to the round in the state file; a job killed between the
two steps redoes that round from its start, with the same gains, to the same result.

The spectral pipeline keeps ``PREFIX-checkpoint.h5`` (:class:`SpectralCheckpoint`): after
every major cycle, the model cube and each output channel's (channel block's) counters and
whether it has finished; a resumed run cleans only the unfinished channels, from the cycle
where the job stopped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from arl_mpi.calibration.gaintable import GainTable
from arl_mpi.errors import ConfigError, InputError
from arl_mpi.io.atomic import atomic_h5

ICAL_FORMAT = "arl_mpi.ical-state"
SPECTRAL_FORMAT = "arl_mpi.spectral-checkpoint"
VERSION = 1


def ical_state_path(prefix: str) -> Path:
    """``PREFIX-ical-state.h5``."""
    return Path(f"{prefix}-ical-state.h5")


def spectral_checkpoint_path(prefix: str) -> Path:
    """``PREFIX-checkpoint.h5`` (the spectral pipeline's format)."""
    return Path(f"{prefix}-checkpoint.h5")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def check_settings(path: Path, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Raise ConfigError naming every setting whose value differs from the checkpoint's."""
    now = json.loads(json.dumps(current, sort_keys=True, default=_json_default))
    diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if diff:
        details = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {now.get(k)!r}" for k in diff)
        raise ConfigError(f"{path}: settings differ from the checkpoint's, cannot resume ({details})")


def _open_checked(path: Path, fmt: str) -> h5py.File:
    if not path.is_file():
        raise InputError(f"{path}: no checkpoint to resume from (run without --resume first)")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise InputError(f"{path}: unreadable checkpoint ({e})") from None
    if f.attrs.get("format") != fmt or int(f.attrs.get("version", -1)) != VERSION:
        f.close()
        raise InputError(f"{path}: not an {fmt} checkpoint of version {VERSION}")
    return f


# ---- gain tables inside a checkpoint -------------------------------------------------------

_GT_ARRAYS = ("time", "interval", "freq", "gain", "weight", "flags")


def _write_gaintable(g: h5py.Group, gt: GainTable) -> None:
    for k in _GT_ARRAYS:
        g.create_dataset(k, data=getattr(gt, k))
    g.attrs["antennas"] = json.dumps([str(a) for a in gt.antennas])
    g.attrs["receptors"] = json.dumps(list(gt.receptors))
    g.attrs["phase_only"] = bool(gt.phase_only)
    g.attrs["ref_ant"] = int(gt.ref_ant)


def _read_gaintable(g: h5py.Group) -> GainTable:
    return GainTable(**{k: g[k][()] for k in _GT_ARRAYS}, antennas=np.array(json.loads(g.attrs["antennas"])),
                     receptors=json.loads(g.attrs["receptors"]), phase_only=bool(g.attrs["phase_only"]),
                     ref_ant=int(g.attrs["ref_ant"]))


# ---- ICAL ---------------------------------------------------------------------------------


@dataclass
class IcalState:
    """Where an ICAL run is: the round that runs now and what it needs.

    Attributes
    ----------
    round : the round that runs (0-based); its major-cycle loop may have a checkpoint of its own
    gains : per partition, the gain table the round images with (None: uncalibrated)
    rounds : the records of the finished rounds (as in the summary)
    settings : the image settings of the run
    """

    round: int
    gains: list[GainTable | None]
    rounds: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


def write_ical_state(prefix: str, st: IcalState) -> Path:
    """Write ``PREFIX-ical-state.h5`` atomically (owner read/write only)."""
    path = ical_state_path(prefix)
    with atomic_h5(path, mode=0o600) as f:
        f.attrs["format"] = ICAL_FORMAT
        f.attrs["version"] = VERSION
        f.attrs["round"] = st.round
        f.attrs["npartitions"] = len(st.gains)
        f.attrs["settings"] = json.dumps(st.settings, sort_keys=True, default=_json_default)
        f.attrs["rounds"] = json.dumps(st.rounds, default=_json_default)
        g = f.create_group("gains")
        for i, gt in enumerate(st.gains):
            if gt is not None:
                _write_gaintable(g.create_group(str(i)), gt)
    return path


def read_ical_state(prefix: str, settings: dict[str, Any]) -> IcalState:
    """Read ``PREFIX-ical-state.h5`` and check it was made with the same image settings.

    Raises
    ------
    InputError when missing or unreadable; ConfigError naming the settings that differ.
    """
    path = ical_state_path(prefix)
    try:
        with _open_checked(path, ICAL_FORMAT) as f:
            saved = json.loads(f.attrs["settings"])
            n = int(f.attrs["npartitions"])
            gains = [_read_gaintable(f["gains"][str(i)]) if str(i) in f["gains"] else None for i in range(n)]
            st = IcalState(round=int(f.attrs["round"]), gains=gains, rounds=json.loads(f.attrs["rounds"]),
                           settings=saved)
    except (OSError, KeyError, ValueError) as e:
        if isinstance(e, InputError | ConfigError):
            raise
        raise InputError(f"{path}: unreadable checkpoint ({e})") from None
    check_settings(path, saved, settings)
    return st


# ---- spectral line ------------------------------------------------------------------------


@dataclass
class SpectralCheckpoint:
    """The spectral pipeline after a major cycle.

    Attributes
    ----------
    model : ``[nout, ny, nx]`` model cube
    cycle : major cycles done
    niter_done, last : per output channel, components so far and in its last minor cycle (-1: none yet)
    active : per output channel, True while it is not finished
    cycles, minor_tasks : the records of the cycles and minor-cycle tasks so far (for the summary)
    """

    model: np.ndarray
    cycle: int
    niter_done: np.ndarray
    last: np.ndarray
    active: np.ndarray
    settings: dict[str, Any]
    cycles: list[dict[str, Any]] = field(default_factory=list)
    minor_tasks: list[dict[str, Any]] = field(default_factory=list)


def write_spectral_checkpoint(prefix: str, ck: SpectralCheckpoint) -> Path:
    """Write ``PREFIX-checkpoint.h5`` atomically (owner read/write only)."""
    path = spectral_checkpoint_path(prefix)
    with atomic_h5(path, mode=0o600, nbytes=np.asarray(ck.model).nbytes) as f:
        f.attrs["format"] = SPECTRAL_FORMAT
        f.attrs["version"] = VERSION
        f.attrs["cycle"] = ck.cycle
        f.attrs["settings"] = json.dumps(ck.settings, sort_keys=True, default=_json_default)
        f.attrs["cycles"] = json.dumps(ck.cycles, default=_json_default)
        f.attrs["minor_tasks"] = json.dumps(ck.minor_tasks, default=_json_default)
        f.create_dataset("model", data=ck.model)
        f.create_dataset("niter_done", data=np.asarray(ck.niter_done, dtype=np.int64))
        f.create_dataset("last", data=np.asarray(ck.last, dtype=np.int64))
        f.create_dataset("active", data=np.asarray(ck.active, dtype=bool))
    return path


def read_spectral_checkpoint(prefix: str, settings: dict[str, Any]) -> SpectralCheckpoint:
    """Read the spectral pipeline's ``PREFIX-checkpoint.h5`` and check its image settings.

    Raises
    ------
    InputError when missing or unreadable; ConfigError naming the settings that differ.
    """
    path = spectral_checkpoint_path(prefix)
    try:
        with _open_checked(path, SPECTRAL_FORMAT) as f:
            saved = json.loads(f.attrs["settings"])
            ck = SpectralCheckpoint(model=f["model"][()], cycle=int(f.attrs["cycle"]),
                                    niter_done=f["niter_done"][()], last=f["last"][()], active=f["active"][()],
                                    settings=saved, cycles=json.loads(f.attrs["cycles"]),
                                    minor_tasks=json.loads(f.attrs["minor_tasks"]))
    except (OSError, KeyError, ValueError) as e:
        if isinstance(e, InputError | ConfigError):
            raise
        raise InputError(f"{path}: unreadable checkpoint ({e})") from None
    check_settings(path, saved, settings)
    return ck


# ---- before any work ----------------------------------------------------------------------


def check_resume(pipeline: str, prefix: str, settings: dict[str, Any]) -> None:
    """With ``--resume``: refuse at once (before any output is written) a run whose checkpoint
    is missing, unreadable or made with other image settings (ConfigError naming them)."""
    if pipeline == "ical":
        read_ical_state(prefix, settings)
    elif pipeline == "spectral":
        read_spectral_checkpoint(prefix, settings)
    else:
        from arl_mpi.pipeline.outputs import read_checkpoint

        read_checkpoint(prefix, settings)
