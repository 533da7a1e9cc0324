"""Pipeline outputs: WSClean-named FITS images, PNG previews, summary JSON, checkpoints.

Everything is written to a temporary name and renamed, so a killed run never leaves a
truncated file under a final name.
"""

from __future__ import annotations

import contextlib
import json
import logging
import platform
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from arl_mpi import __version__
from arl_mpi.errors import ConfigError, InputError
from arl_mpi.io.atomic import atomic_h5, atomic_path, write_bytes_atomic
from arl_mpi.io.fits import write_fits, write_png
from arl_mpi.io.store import StoreIndex
from arl_mpi.models import Image, image_wcs
from arl_mpi.pipeline.primary_beam_outputs import add_primary_beam_outputs

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 2  # 2: no 'extra' group; parallel_deconvolution among the settings


def output_path(prefix: str, kind: str, ext: str = "fits") -> Path:
    """``PREFIX-kind.ext`` (WSClean naming: dirty, psf, model, residual, image)."""
    return Path(f"{prefix}-{kind}.{ext}")


def make_image(index: StoreIndex, data: np.ndarray, cell: float, freqs_out: np.ndarray, bunit: str,
               beam_rad: tuple[float, float, float] | None = None, stokes: str = "I") -> Image:
    """Wrap a ``[nout, ny, nx]`` array as an Image with the standard WCS."""
    nout, ny, nx = data.shape
    cw = float(freqs_out[1] - freqs_out[0]) if nout > 1 else float(np.sum(index.meta.channel_width))
    wcs = image_wcs(index.meta.phase_centre, nx, ny, cell, freqs_out[0], cw, [stokes])
    wcs.wcs.name = index.meta.telescope
    beam = tuple(float(np.rad2deg(b)) for b in beam_rad) if beam_rad is not None else None
    # a view, not a copy, when the cube is float64 already (a 16k^2 plane is 2 GiB)
    return Image(data=np.asarray(data[:, None, :, :], dtype=np.float64), wcs=wcs, bunit=bunit, beam=beam,
                 history=[f"arl_mpi {__version__}"])


def write_image_set(prefix: str, images: dict[str, Image], png: bool) -> list[str]:
    """Write ``PREFIX-<kind>.fits`` (+ PNG previews of dirty, residual, image); returns paths."""
    written = []
    for kind, img in images.items():
        written.append(str(write_fits(output_path(prefix, kind), img)))
        if png and kind in ("dirty", "residual", "image"):
            written.append(str(write_png(output_path(prefix, kind, "png"), _mfs_plane(img),
                                         title=f"{Path(prefix).name} {kind}")))
    return written


def _mfs_plane(img: Image) -> Image:
    if img.data.shape[0] == 1:
        return img
    return Image(data=img.data.mean(axis=0, keepdims=True), wcs=img.wcs, bunit=img.bunit, beam=img.beam)


def write_summary(prefix: str, summary: dict[str, Any]) -> Path:
    """Write ``PREFIX-summary.json`` atomically (versions and host added)."""
    import dask
    import distributed
    import ducc0

    summary = add_primary_beam_outputs(prefix, dict(summary))  # --apply-primary-beam: PREFIX-beam-0, -image-pb
    summary["versions"] = {"arl_mpi": __version__, "python": platform.python_version(), "numpy": np.__version__,
                           "ducc0": ducc0.__version__, "dask": dask.__version__,
                           "distributed": distributed.__version__, "h5py": h5py.__version__}
    path = output_path(prefix, "summary", "json")
    write_bytes_atomic(path, json.dumps(summary, indent=2, default=_json_default).encode())
    return path


def dask_report_path(prefix: str) -> Path:
    """``PREFIX-dask-report.html`` (``--dask-report``)."""
    return output_path(prefix, "dask-report", "html")


@contextlib.contextmanager
def dask_report(prefix: str, enabled: bool) -> Iterator[dict[str, Any]]:
    """Record Dask's performance report (``distributed.performance_report``) of the block.

    Yields a dict whose ``"path"``, once the block has ended without an exception, is the
    written ``PREFIX-dask-report.html`` (written to a temporary name, then renamed). It stays
    None when ``enabled`` is False, when the block raised (nothing is written), or when the
    scheduler could not make the report (a warning: a finished run is not failed for its
    diagnostics, e.g. an external scheduler without bokeh).
    """
    out: dict[str, Any] = {"path": None}
    if not enabled:
        yield out
        return
    from distributed import performance_report

    path = dask_report_path(prefix)
    report = performance_report(filename=str(path), mode="inline")  # bokeh inlined: viewable offline
    try:
        report.__enter__()
    except Exception as e:  # noqa: BLE001
        log.warning("dask-report: not recorded (%s: %s)", type(e).__name__, e)
        yield out
        return
    yield out
    try:
        with atomic_path(path) as tmp:
            report.filename = str(tmp)
            report.__exit__(None, None, None)
    except Exception as e:  # noqa: BLE001
        log.warning("dask-report: %s not written (%s: %s)", path, type(e).__name__, e)
        return
    out["path"] = str(path)
    log.info("dask-report: %s", path)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


@dataclass
class Checkpoint:
    """Driver state after a major cycle."""

    model: np.ndarray
    cycle: int
    niter_done: int
    settings: dict[str, Any]
    cycles: list[dict[str, Any]] = field(default_factory=list)
    taylor: np.ndarray | None = None


def checkpoint_path(prefix: str) -> Path:
    """``PREFIX-checkpoint.h5``."""
    return Path(f"{prefix}-checkpoint.h5")


def write_checkpoint(prefix: str, ck: Checkpoint) -> Path:
    """Write the checkpoint atomically (owner read/write only)."""
    path = checkpoint_path(prefix)
    nbytes = np.asarray(ck.model).nbytes + (0 if ck.taylor is None else np.asarray(ck.taylor).nbytes)
    with atomic_h5(path, mode=0o600, nbytes=nbytes) as f:
        f.attrs["format"] = "arl_mpi.checkpoint"
        f.attrs["version"] = CHECKPOINT_VERSION
        f.attrs["cycle"] = ck.cycle
        f.attrs["niter_done"] = ck.niter_done
        f.attrs["settings"] = json.dumps(ck.settings, sort_keys=True)
        f.attrs["cycles"] = json.dumps(ck.cycles, default=_json_default)
        f.create_dataset("model", data=ck.model)
        if ck.taylor is not None:
            f.create_dataset("taylor", data=ck.taylor)
    return path


def read_checkpoint(prefix: str, settings: dict[str, Any]) -> Checkpoint:
    """Read ``PREFIX-checkpoint.h5`` and check it was made with the same image settings.

    Raises
    ------
    InputError when missing or unreadable; ConfigError naming the settings that differ.
    """
    path = checkpoint_path(prefix)
    if not path.is_file():
        raise InputError(f"{path}: no checkpoint to resume from (run without --resume first)")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != "arl_mpi.checkpoint" or int(f.attrs.get("version", -1)) != CHECKPOINT_VERSION:
                raise InputError(f"{path}: not an arl_mpi checkpoint of version {CHECKPOINT_VERSION}")
            saved = json.loads(f.attrs["settings"])
            ck = Checkpoint(model=f["model"][()], cycle=int(f.attrs["cycle"]), niter_done=int(f.attrs["niter_done"]),
                            settings=saved, cycles=json.loads(f.attrs["cycles"]),
                            taylor=f["taylor"][()] if "taylor" in f else None)
    except OSError as e:
        raise InputError(f"{path}: unreadable checkpoint ({e})") from None
    current = json.loads(json.dumps(settings, sort_keys=True))
    diff = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if diff:
        details = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {current.get(k)!r}" for k in diff)
        raise ConfigError(f"{path}: settings differ from the checkpoint's, cannot resume ({details})")
    return ck
