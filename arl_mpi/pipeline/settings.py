"""Pipeline settings: WSClean-style command-line flags and the same keys in a TOML file.

Precedence: built-in defaults < ``--config FILE.toml`` < command-line flags. Every value is
validated before any cluster starts; a bad one is a one-line :class:`ConfigError`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arl_mpi.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_ANGLE_UNITS = {
    "rad": 1.0, "deg": math.pi / 180, "amin": math.pi / 180 / 60, "arcmin": math.pi / 180 / 60,
    "asec": math.pi / 180 / 3600, "arcsec": math.pi / 180 / 3600, "mas": math.pi / 180 / 3600e3,
}


def parse_angle(text: str | float, what: str = "angle") -> float:
    """Parse ``"2asec"``, ``"1.5amin"``, ``"0.01deg"``, ``"1e-5rad"`` (WSClean style) to radians.

    A bare number is taken as degrees (as WSClean does for ``-scale``).
    """
    if isinstance(text, int | float):
        return math.radians(float(text))
    m = re.fullmatch(r"\s*([-+0-9.eE]+)\s*([a-z]*)\s*", str(text))
    if not m:
        raise ConfigError(f"{what}: cannot parse angle '{text}' (e.g. 2asec, 1amin, 0.01deg)")
    try:
        value = float(m.group(1))
    except ValueError:
        raise ConfigError(f"{what}: cannot parse angle '{text}'") from None
    unit = m.group(2) or "deg"
    if unit not in _ANGLE_UNITS:
        raise ConfigError(f"{what}: unknown angle unit '{unit}' (use one of {', '.join(_ANGLE_UNITS)})")
    return value * _ANGLE_UNITS[unit]


def parse_flux(text: str | float, what: str = "flux") -> float:
    """Parse ``0.01``, ``"10mJy"``, ``"5uJy"``, ``"1Jy"`` to Jy."""
    if isinstance(text, int | float):
        return float(text)
    m = re.fullmatch(r"\s*([-+0-9.eE]+)\s*(|jy|mjy|ujy|µjy)\s*", str(text).lower())
    if not m:
        raise ConfigError(f"{what}: cannot parse flux '{text}' (e.g. 0.01, 10mJy)")
    scale = {"": 1.0, "jy": 1.0, "mjy": 1e-3, "ujy": 1e-6, "µjy": 1e-6}[m.group(2)]
    return float(m.group(1)) * scale


@dataclass
class Settings:
    """All settings of a pipeline run (WSClean names where the concept is the same)."""

    # data and outputs
    vis: str | None = None
    name: str = "arl"
    pipeline: str = "continuum"
    stokes: str = "I"
    # image geometry and gridding
    size: tuple[int, int] = (512, 512)
    scale: str = "40asec"
    epsilon: float = 1e-4
    w_correction: bool = True
    double: bool = False
    gridder_threads: int = 1
    # weighting
    weight: tuple[str, float] = ("natural", 0.0)
    taper_gaussian: str | None = None
    # deconvolution
    niter: int = 0
    gain: float = 0.1
    mgain: float = 1.0
    threshold: str | float = 0.0
    auto_threshold: float | None = None
    nmiter: int = 20
    multiscale: bool = False
    multiscale_scales: tuple[int, ...] = (0, 4, 8, 16, 32)
    multiscale_scale_bias: float = 0.6
    channels_out: int = 1
    fit_spectral_pol: int = 2
    # ICAL
    ical_rounds: int = 3
    ical_solint: float = 0.0
    ical_phase_only_rounds: int = 1
    ical_min_snr: float = 3.0
    ical_pol_mode: str = "diagonal"
    ical_point_model: bool = False
    # spectral line
    continuum_subtract_order: int = -1
    continuum_fit_channels: str | None = None
    # simulation of the built-in observation when no --vis is given
    time_partitions: int = 4
    freq_partitions: int = 1
    # cluster
    threads_per_worker: int | None = None
    memory_limit: str = "auto"
    workers: int | None = None
    scratch: str | None = None
    dashboard: bool = True
    dashboard_address: str = "127.0.0.1:8787"
    tls: bool = True
    interface: str | None = None
    cluster_timeout: float = 60.0
    # reliability
    resume: bool = False
    stream: bool = False
    checkpoint: bool = True
    verify: bool = True
    png: bool = True
    log_level: str = "INFO"
    config: str | None = None
    extra: dict = field(default_factory=dict)

    # ---- derived -------------------------------------------------------------------
    @property
    def cell_rad(self) -> float:
        """Pixel size in radians."""
        return parse_angle(self.scale, "scale")

    @property
    def threshold_jy(self) -> float:
        """Absolute CLEAN threshold in Jy."""
        return parse_flux(self.threshold, "threshold")

    @property
    def taper_rad(self) -> float | None:
        """Gaussian taper FWHM (image domain) in radians, or None."""
        return parse_angle(self.taper_gaussian, "taper-gaussian") if self.taper_gaussian else None

    def validate(self) -> Settings:
        """Check every value; raise ConfigError naming the setting."""
        nx, ny = self.size
        for n, axis in ((nx, "x"), (ny, "y")):
            if n < 32 or n % 2:
                raise ConfigError(f"size: {axis} size {n} must be even and at least 32")
        if self.cell_rad <= 0:
            raise ConfigError("scale: must be positive")
        if self.pipeline not in ("continuum", "ical", "spectral"):
            raise ConfigError(f"pipeline: '{self.pipeline}' is not one of continuum, ical, spectral")
        scheme, robust = self.weight
        if scheme not in ("natural", "uniform", "briggs"):
            raise ConfigError(f"weight: '{scheme}' is not one of natural, uniform, briggs")
        if scheme == "briggs" and not -2.0 <= robust <= 2.0:
            raise ConfigError(f"weight: briggs robustness {robust} outside [-2, 2]")
        checks = [
            (self.niter >= 0, "niter: must be >= 0"),
            (0 < self.gain <= 1, "gain: must be in (0, 1]"),
            (0 < self.mgain <= 1, "mgain: must be in (0, 1]"),
            (self.nmiter >= 1, "nmiter: must be >= 1"),
            (self.auto_threshold is None or self.auto_threshold > 0, "auto-threshold: must be > 0"),
            (self.threshold_jy >= 0, "threshold: must be >= 0"),
            (1e-12 < self.epsilon < 0.1, "epsilon: must be in (1e-12, 0.1)"),
            (self.double or self.epsilon >= 1e-5, "epsilon: below 1e-5 needs --double"),
            (self.channels_out >= 1, "channels-out: must be >= 1"),
            (1 <= self.fit_spectral_pol <= 4, "fit-spectral-pol: must be 1..4"),
            (self.gridder_threads >= 1, "gridder-threads: must be >= 1"),
            (self.time_partitions >= 1 and self.freq_partitions >= 1, "time/freq-partitions: must be >= 1"),
            (self.stokes in ("I", "Q", "U", "V"), f"stokes: '{self.stokes}' is not one of I, Q, U, V"),
            (all(s >= 0 for s in self.multiscale_scales), "multiscale-scales: must be >= 0 pixels"),
            (self.ical_rounds >= 1, "ical-rounds: must be >= 1"),
            (self.ical_min_snr >= 0, "ical-min-snr: must be >= 0"),
            (self.ical_pol_mode in ("scalar", "diagonal"), "ical-pol-mode: scalar or diagonal"),
            (self.cluster_timeout > 0, "cluster-timeout: must be > 0"),
            (self.log_level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"), "log-level: DEBUG, INFO, WARNING or ERROR"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        if self.threads_per_worker is not None and self.threads_per_worker < 1:
            raise ConfigError("threads-per-worker: must be >= 1")
        if self.workers is not None and self.workers < 1:
            raise ConfigError("workers: must be >= 1")
        return self

    def image_settings(self) -> dict[str, Any]:
        """Settings that determine the images (a checkpoint must match these to resume)."""
        keep = ("vis", "stokes", "size", "scale", "epsilon", "w_correction", "double", "weight", "taper_gaussian",
                "niter", "gain", "mgain", "threshold", "auto_threshold", "nmiter", "multiscale", "multiscale_scales",
                "multiscale_scale_bias", "channels_out", "fit_spectral_pol", "pipeline", "ical_rounds", "ical_solint",
                "ical_phase_only_rounds", "ical_min_snr", "ical_pol_mode", "ical_point_model",
                "continuum_subtract_order",
                "continuum_fit_channels")
        d = dataclasses.asdict(self)
        return {k: _jsonable(d[k]) for k in keep}

    def as_dict(self) -> dict[str, Any]:
        """All settings, JSON-friendly."""
        return {k: _jsonable(v) for k, v in dataclasses.asdict(self).items() if k != "extra"}


def _jsonable(v):
    return list(v) if isinstance(v, tuple) else v


# ---- command line -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m arl_mpi.pipeline`` argument parser (every default is None = unset)."""
    p = argparse.ArgumentParser(
        prog="python -m arl_mpi.pipeline",
        description="Distributed imaging/self-calibration. Run under mpiexec/srun (rank 0 scheduler, rank 1 "
                    "driver, ranks 2+ workers), on a local Dask cluster, or against $ARL_DASK_SCHEDULER.",
        argument_default=None,
    )
    a = p.add_argument
    a("--vis", help="visibility store (HDF5 store directory); default: simulate the built-in LOW-core observation")
    a("--name", help="output prefix, e.g. output/field1 (default: arl)")
    a("--config", help="TOML file with the same settings (keys as the long flags)")
    a("--pipeline", choices=["continuum", "ical", "spectral"])
    a("--stokes", choices=["I", "Q", "U", "V"])
    a("--size", nargs=2, type=int, metavar=("NX", "NY"))
    a("--scale", help="pixel size, e.g. 2asec, 0.5amin, 0.01deg")
    a("--epsilon", type=float, help="gridder accuracy (default 1e-4)")
    a("--no-w-correction", dest="w_correction", action="store_const", const=False, help="ignore w (2-D imaging)")
    a("--double", action="store_const", const=True, help="double-precision gridding")
    a("--gridder-threads", type=int, help="ducc0 threads per gridding task (default 1)")
    a("--weight", nargs="+", metavar="MODE", help="natural | uniform | briggs ROBUST")
    a("--taper-gaussian", help="Gaussian taper FWHM in the image domain, e.g. 60asec")
    a("--niter", type=int, help="maximum CLEAN components (0: dirty image only)")
    a("--gain", type=float, help="minor-cycle loop gain (default 0.1)")
    a("--mgain", type=float, help="major-cycle gain: fraction of the peak cleaned per minor cycle (default 1.0)")
    a("--threshold", help="stop CLEAN at this absolute peak (Jy, or e.g. 5mJy)")
    a("--auto-threshold", type=float, help="stop CLEAN at this many sigma (MAD of the residual)")
    a("--nmiter", type=int, help="maximum major cycles (default 20)")
    a("--multiscale", action="store_const", const=True, help="multiscale CLEAN")
    a("--multiscale-scales", help="comma-separated scales in pixels, e.g. 0,4,8,16")
    a("--multiscale-scale-bias", type=float)
    a("--channels-out", type=int, help="output channels; >1 deconvolves jointly with Taylor terms")
    a("--fit-spectral-pol", type=int, help="Taylor terms for --channels-out > 1 (default 2)")
    a("--ical-rounds", type=int)
    a("--ical-solint", type=float, help="gain solution interval (s); 0 = per integration")
    a("--ical-phase-only-rounds", type=int, help="first N self-cal rounds solve phase only")
    a("--ical-min-snr", type=float)
    a("--ical-point-model", action="store_const", const=True,
      help="solve the first gains against a point source at the phase centre (a calibrator) instead of the "
           "round-0 CLEAN model")
    a("--ical-pol-mode", choices=["scalar", "diagonal"],
      help="diagonal: separate X/Y (R/L) gains from the parallel hands (default); scalar: one gain per antenna")
    a("--continuum-subtract-order", type=int, help="spectral: uv-plane polynomial order to subtract (-1: none)")
    a("--continuum-fit-channels", help="spectral: line-free channels to fit the continuum on, e.g. 0-5,12-15")
    a("--time-partitions", type=int, help="partitions in time of the simulated observation")
    a("--freq-partitions", type=int)
    a("--threads-per-worker", type=int)
    a("--memory-limit", help="per worker, e.g. 4GB (Dask meaning; default auto)")
    a("--workers", type=int, help="local cluster only: number of worker processes")
    a("--scratch", help="Dask scratch/spill directory (default $ARL_SCRATCH, $SLURM_TMPDIR, $TMPDIR, ./arl-scratch)")
    a("--no-dashboard", dest="dashboard", action="store_const", const=False)
    a("--dashboard-address", help="default 127.0.0.1:8787 (use an ssh tunnel); e.g. 0.0.0.0:8787 to expose it")
    a("--no-tls", dest="tls", action="store_const", const=False, help="unencrypted cluster traffic (trusted networks)")
    a("--interface", help="network interface for the cluster, e.g. ib0")
    a("--cluster-timeout", type=float)
    a("--resume", action="store_const", const=True, help="continue from the last checkpoint of --name")
    a("--stream", action="store_const", const=True,
      help="do not keep partitions resident: re-read each from the store whenever it is gridded (for stores "
           "larger than the workers' memory; every major cycle then costs a read of the store)")
    a("--no-checkpoint", dest="checkpoint", action="store_const", const=False)
    a("--no-verify", dest="verify", action="store_const", const=False, help="skip partition SHA-256 checks")
    a("--no-png", dest="png", action="store_const", const=False)
    a("--log-level")
    return p


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def _coerce(key: str, value: Any) -> Any:
    """Convert a CLI/TOML value to the field's type, with a clear error."""
    try:
        if key == "size":
            v = list(value) if isinstance(value, list | tuple) else [value, value]
            if len(v) != 2:
                raise ValueError
            return (int(v[0]), int(v[1]))
        if key == "weight":
            v = value.split() if isinstance(value, str) else list(value)
            scheme = str(v[0]).lower()
            if scheme == "briggs":
                if len(v) != 2:
                    raise ConfigError("weight: briggs needs a robustness, e.g. --weight briggs 0")
                return ("briggs", float(v[1]))
            if len(v) != 1:
                raise ConfigError(f"weight: unexpected values after '{scheme}'")
            return (scheme, 0.0)
        if key == "multiscale_scales":
            v = value.split(",") if isinstance(value, str) else list(value)
            return tuple(int(x) for x in v)
        default = _FIELDS[key].default
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError
            return value
        if isinstance(default, int) and not isinstance(default, bool) and key != "threshold":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if isinstance(default, float) and key != "threshold":
            return float(value)
        if key in ("auto_threshold", "cluster_timeout"):
            return float(value)
        if key in ("threads_per_worker", "workers"):
            return int(value)
        return value
    except ConfigError:
        raise
    except (TypeError, ValueError, IndexError):
        raise ConfigError(f"{key.replace('_', '-')}: invalid value {value!r}") from None


def load_config_file(path: str) -> dict[str, Any]:
    """Read a TOML settings file; unknown keys are an error naming the key and file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file")
    try:
        raw = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not valid TOML ({e})") from None
    out = {}
    for k, v in raw.items():
        key = k.replace("-", "_")
        if key not in _FIELDS or key in ("config", "extra"):
            raise ConfigError(f"{p}: unknown setting '{k}'")
        try:
            out[key] = _coerce(key, v)
        except ConfigError as e:
            raise ConfigError(f"{p}: {e}") from None
    return out


def settings_from_args(argv: list[str] | None = None) -> Settings:
    """Parse the command line (and the config file it names) into validated Settings."""
    parser = build_parser()
    try:
        ns = parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed its one-line usage error
        raise ConfigExit(int(e.code or 0)) from None
    values: dict[str, Any] = {}
    if ns.config:
        values.update(load_config_file(ns.config))
    for k, v in vars(ns).items():
        if v is not None and k != "config":
            values[k] = _coerce(k, v)
    s = Settings(**values, config=ns.config)
    return s.validate()


class ConfigExit(Exception):
    """argparse asked to exit (``--help`` or a usage error); carries the exit code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code
