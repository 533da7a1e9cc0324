"""Pipeline settings: WSClean-style command-line flags and the same keys in a TOML file.

Precedence: built-in defaults < ``--config FILE.toml`` < command-line flags. Every value is
validated before any cluster starts; a bad one is a one-line :class:`ConfigError`.

Each setting is declared once, as a field of :class:`Settings` (the cluster's fields are
inherited from :class:`~arl_mpi.cluster.settings.ClusterSettings`). The field's type, default
and metadata are the only facts about it; the argument parser, ``--help``, the TOML loader,
the resume check (:meth:`Settings.image_settings`) and the table in ``docs/settings.md``
(``python -m arl_mpi.pipeline.settings --markdown docs/settings.md``) are derived from them.

Field metadata, made with :func:`~arl_mpi.cluster.settings.setting`:

``help``
    ``--help`` text; for a boolean, what its flag does.
``flag``
    the flag when it is not ``--`` + the field name with ``-`` for ``_`` (a boolean that
    defaults to True gets ``--no-`` + the name).
``images``
    True when the value changes the images: a checkpoint must match it to resume.
``group``
    the ``--help`` section (fields without one, the inherited cluster fields, are ``cluster``).
``parse``
    ``parse(value, key)``: the field's value from a TOML value or the parsed flag's
    arguments, raising ConfigError/ValueError/TypeError; without it the type of the field's
    annotation decides (bool, int, float, str).
``type``, ``nargs``, ``metavar``, ``choices``
    passed to argparse; ``type`` defaults to the annotation's int/float for fields without
    ``parse``. ``choices`` are also checked on values from a TOML file.
``show``
    ``show(value) -> str``: how a value is written after the flag (for ``--help`` and docs).
``toml``
    False for a flag that has no TOML key (``--config``).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import re
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arl_mpi.cluster.settings import ClusterSettings, setting
from arl_mpi.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_ANGLE_UNITS = {
    "rad": 1.0,
    "deg": math.pi / 180,
    "amin": math.pi / 180 / 60,
    "arcmin": math.pi / 180 / 60,
    "asec": math.pi / 180 / 3600,
    "arcsec": math.pi / 180 / 3600,
    "mas": math.pi / 180 / 3600e3,
}

PIPELINES = ("continuum", "ical", "spectral")
#: Pipelines that write checkpoints and can ``--resume``.
CHECKPOINTING_PIPELINES = ("continuum", "ical", "spectral")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: ``--help`` sections in order; the inherited cluster fields (no ``group``) go in ``cluster``.
GROUPS = (
    "data and outputs",
    "image geometry and gridding",
    "weighting",
    "deconvolution",
    "ICAL",
    "spectral line",
    "simulated observation",
    "data distribution",
    "cluster",
    "reliability",
)
_CLUSTER_GROUP = "cluster"


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
        raise ConfigError(
            f"{what}: unknown angle unit '{unit}' (use one of {', '.join(_ANGLE_UNITS)})"
        )
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


# ---- per-field parse functions: parse(value, key) -> field value ------------------------


def _parse_int(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(value)
    return int(value)


def _parse_size(value: Any, key: str) -> tuple[int, int]:
    """``[NX, NY]`` (or one number for a square image)."""
    v = list(value) if isinstance(value, list | tuple) else [value, value]
    if len(v) != 2:
        raise ValueError(value)
    return (_parse_int(v[0]), _parse_int(v[1]))


def _parse_weight(value: Any, key: str) -> tuple[str, float]:
    """``natural``, ``uniform`` or ``briggs ROBUST`` (a string or a list)."""
    v = value.split() if isinstance(value, str) else list(value)
    scheme = str(v[0]).lower()
    if scheme == "briggs":
        if len(v) != 2:
            raise ConfigError(f"{key}: briggs needs a robustness, e.g. --weight briggs 0")
        return ("briggs", float(v[1]))
    if len(v) != 1:
        raise ConfigError(f"{key}: unexpected values after '{scheme}'")
    return (scheme, 0.0)


def _show_weight(value: tuple[str, float]) -> str:
    scheme, robust = value
    return f"briggs {robust:g}" if scheme == "briggs" else scheme


def _parse_scales(value: Any, key: str) -> tuple[int, ...]:
    """Comma-separated pixels (``0,4,8``) or a list of them."""
    v = value.split(",") if isinstance(value, str) else list(value)
    return tuple(_parse_int(x) for x in v)


def _show_scales(value: tuple[int, ...]) -> str:
    return ",".join(str(x) for x in value)


def _angle_text(value: Any, key: str) -> str | float:
    """An angle as given (``2asec``, or a number of degrees), checked to parse."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(value)
    parse_angle(value, key)
    return value if isinstance(value, str) else float(value)


def _flux_text(value: Any, key: str) -> str | float:
    """A flux as given (``5mJy``, or a number of Jy), checked to parse."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(value)
    parse_flux(value, key)
    return value if isinstance(value, str) else float(value)


# ---- the settings ------------------------------------------------------------------------


def _section(title: str):
    """A :func:`setting` maker for the fields of one ``--help`` section."""

    def make(default, help: str, **meta):  # noqa: A002
        return setting(default, help, group=title, **meta)

    return make


_data = _section("data and outputs")
_geometry = _section("image geometry and gridding")
_weighting = _section("weighting")
_deconvolution = _section("deconvolution")
_ical = _section("ICAL")
_spectral = _section("spectral line")
_simulation = _section("simulated observation")
_distribution = _section("data distribution")
_reliability = _section("reliability")


@dataclass
class Settings(ClusterSettings):
    """All settings of a pipeline run (WSClean names where the concept is the same).

    The cluster's fields (``--threads-per-worker``, ``--memory-limit``, ...) are inherited from
    :class:`~arl_mpi.cluster.settings.ClusterSettings`; every field's ``help`` metadata says what
    it does (``python -m arl_mpi.pipeline --help``, ``docs/settings.md``).
    """

    # data and outputs
    vis: str | None = _data(
        None,
        "visibility store (HDF5 store directory, or a MeasurementSet/UVFITS file ingested "
        "once); unset: simulate the built-in LOW-core observation",
        images=True,
    )
    name: str = _data("arl", "output prefix, e.g. output/field1")
    config: str | None = _data(
        None,
        "TOML file with the same settings (keys as the long flags, "
        "e.g. auto-threshold = 3; flags override it)",
        toml=False,
    )
    pipeline: str = _data(
        "continuum",
        "continuum imaging, ical (self-calibration) or spectral (a cube)",
        choices=PIPELINES,
        images=True,
    )
    stokes: str = _data("I", "Stokes parameter to image", choices=("I", "Q", "U", "V"), images=True)
    pol: str | None = _data(
        None,
        "WSClean's -pol: image these products in one run (one load), e.g. I, IQUV, xx,yy, I,V; "
        "several: PREFIX-Q-image.fits ... (continuum); unset: --stokes",
        metavar="LIST",
        images=True,
    )
    join_polarizations: bool = _data(
        False,
        "WSClean's -join-polarizations: with several --pol products, find CLEAN peaks in the sum of "
        "squares over them and subtract each component from every product (Hogbom, --channels-out 1)",
        images=True,
    )
    predict: bool = _data(
        False,
        "WSClean's -predict: no imaging; predict model visibilities from PREFIX-model.fits (or "
        "--predict-model) into PREFIX-predict.store",
    )
    predict_model: str | None = _data(None, "--predict: the model FITS image instead of PREFIX-model.fits",
                                      metavar="FITS")
    write_model_data: bool = _data(
        False,
        "--predict with a MeasurementSet --vis: also write the model into its MODEL_DATA column "
        "(the only write into an input, only when asked)",
    )
    save_source_list: bool = _data(
        False,
        "WSClean's -save-source-list: write the CLEAN components as PREFIX-sources.txt (WSClean/DP3 "
        "text format, with polynomial spectral terms when --channels-out > 1)",
    )
    apply_primary_beam: bool = _data(
        False,
        "WSClean's -apply-primary-beam: also write the Stokes-I primary beam PREFIX[-000N|-MFS]-beam-0.fits "
        "and the beam-corrected PREFIX[-000N|-MFS]-image-pb.fits (EveryBeam from the ingested MS, needs the "
        "[beam] extra; analytic Airy dish for VLA, MeerKAT, ATCA, ...)",
    )
    primary_beam_limit: float = _data(
        0.005, "WSClean's -primary-beam-limit: blank (NaN) PREFIX-image-pb.fits where the beam is below this"
    )
    mwa_path: str | None = _data(None, "WSClean's -mwa-path: the MWA FEE beam coefficients file (or its directory)",
                                 metavar="PATH")
    apply_solutions: str | None = _data(
        None,
        "h5parm gain solutions (DP3/LoSoTo/WSClean: phase, amplitude; scalar or diagonal) to "
        "correct the visibilities with before imaging, interpolated onto the data's times and "
        "channels (on the workers)",
        metavar="FILE.h5",
        images=True,
    )
    # image geometry and gridding
    size: tuple[int, int] = _geometry(
        (512, 512),
        "image size in pixels",
        parse=_parse_size,
        type=int,
        nargs=2,
        metavar=("NX", "NY"),
        images=True,
    )
    scale: str | float = _geometry(
        "40asec",
        "pixel size, e.g. 2asec, 0.5amin, 0.01deg (a bare number is degrees)",
        parse=_angle_text,
        images=True,
    )
    epsilon: float = _geometry(1e-4, "gridder accuracy", images=True)
    w_correction: bool = _geometry(
        True, "ignore w (2-D imaging)", flag="--no-w-correction", images=True
    )
    double: bool = _geometry(
        False, "double-precision gridding (needed for --epsilon below 1e-5)", images=True
    )
    # weighting
    weight: tuple[str, float] = _weighting(
        ("natural", 0.0),
        "natural, uniform, or briggs ROBUST (-2..2)",
        parse=_parse_weight,
        nargs="+",
        metavar="MODE",
        show=_show_weight,
        images=True,
    )
    taper_gaussian: str | float | None = _weighting(
        None, "Gaussian taper FWHM in the image domain, e.g. 60asec", parse=_angle_text, images=True
    )
    padding: float = _weighting(
        1.2,
        "WSClean's -padding: uniform/briggs grid the uv weight density on the image padded by this "
        "factor (rounded up to a multiple of 4 pixels); ducc0 pads the gridded image itself to --epsilon",
        metavar="FACTOR",
        images=True,
    )
    weighting_rank_filter: float = _weighting(
        3.0,
        "WSClean's -weighting-rank-filter: cap each uv cell's uniform/briggs weight at LEVEL x the "
        "mean weight of its neighbourhood (values below 1: off)",
        metavar="LEVEL",
        images=True,
    )
    weighting_rank_filter_size: int = _weighting(
        16, "WSClean's -weighting-rank-filter-size: the rank filter's window in uv cells", metavar="N",
        images=True,
    )
    # deconvolution
    niter: int = _deconvolution(0, "maximum CLEAN components (0: dirty image only)", images=True)
    gain: float = _deconvolution(0.1, "minor-cycle loop gain", images=True)
    mgain: float = _deconvolution(
        1.0, "major-cycle gain: fraction of the peak cleaned per minor cycle", images=True
    )
    threshold: str | float = _deconvolution(
        0.0, "stop CLEAN at this absolute peak (Jy, or e.g. 5mJy)", parse=_flux_text, images=True
    )
    auto_threshold: float | None = _deconvolution(
        None, "stop CLEAN at this many sigma (MAD of the residual)", images=True
    )
    nmiter: int = _deconvolution(20, "maximum major cycles", images=True)
    multiscale: bool = _deconvolution(False, "multiscale CLEAN", images=True)
    multiscale_scales: tuple[int, ...] = _deconvolution(
        (0, 4, 8, 16, 32),
        "comma-separated scales in pixels, e.g. 0,4,8,16",
        parse=_parse_scales,
        show=_show_scales,
        images=True,
    )
    multiscale_scale_bias: float = _deconvolution(
        0.6,
        "multiscale CLEAN: bias towards small scales (WSClean's -multiscale-scale-bias)",
        images=True,
    )
    parallel_deconvolution: int = _deconvolution(
        0,
        "minor cycle on sub-images of at most MAXSIZE pixels a side, cleaned in parallel as tasks "
        "on the workers (WSClean's -parallel-deconvolution); 0: one minor cycle on the driver; "
        "otherwise at least 32",
        metavar="MAXSIZE",
        images=True,
    )
    deconvolver: str = _deconvolution(
        "auto",
        "minor-cycle engine: arl (ours: Hogbom with sub-minor loops), radler (WSClean's library, "
        "the [radler] extra; ours where Radler lacks something: margins, Taylor terms, "
        "multiscale), auto (the faster as accurate one: arl, docs/performance.md)",
        choices=("auto", "arl", "radler"),
        images=True,
    )
    fits_mask: str | None = _deconvolution(
        None,
        "WSClean's -fits-mask: clean only where this FITS image is non-zero (its shape must be the "
        "image's)",
        metavar="FILE",
        images=True,
    )
    auto_mask: float | None = _deconvolution(
        None,
        "WSClean's -auto-mask: clean to SIGMA x the noise, make a mask of the components found so "
        "far, then continue inside it to --auto-threshold",
        metavar="SIGMA",
        images=True,
    )
    local_rms: bool = _deconvolution(
        False,
        "WSClean's -local-rms: --auto-threshold and --auto-mask relative to a local RMS map, not "
        "one global noise value",
        images=True,
    )
    local_rms_window: float = _deconvolution(
        25.0,
        "WSClean's -local-rms-window: the local RMS map's window in PSF main-lobe widths",
        metavar="BEAMS",
        images=True,
    )
    channels_out: int = _deconvolution(
        1, "output channels; >1 deconvolves jointly with Taylor terms", images=True
    )
    fit_spectral_pol: int = _deconvolution(
        2, "Taylor terms for --channels-out > 1 (1..4)", images=True
    )
    # ICAL
    ical_rounds: int = _ical(3, "self-calibration rounds", images=True)
    ical_solint: float = _ical(0.0, "gain solution interval (s); 0 = per integration", images=True)
    ical_phase_only_rounds: int = _ical(1, "first N self-cal rounds solve phase only", images=True)
    ical_min_snr: float = _ical(
        3.0, "flag gain solutions below this signal-to-noise ratio", images=True
    )
    ical_pol_mode: str = _ical(
        "diagonal",
        "diagonal: separate X/Y (R/L) gains from the parallel hands; scalar: one gain per antenna",
        choices=("scalar", "diagonal"),
        images=True,
    )
    ical_point_model: bool = _ical(
        False,
        "solve the first gains against a point source at the phase centre (a calibrator) "
        "instead of the round-0 CLEAN model",
        images=True,
    )
    # spectral line
    continuum_subtract_order: int = _spectral(
        -1, "spectral: uv-plane polynomial order to subtract (-1: none)", images=True
    )
    continuum_fit_channels: str | None = _spectral(
        None,
        "spectral: line-free channels to fit the continuum on, e.g. 0-5,12-15 (default all)",
        images=True,
    )
    # simulation of the built-in observation when no --vis is given
    time_partitions: int = _simulation(4, "partitions in time of the simulated observation")
    freq_partitions: int = _simulation(1, "partitions in frequency of the simulated observation")
    # how the visibilities are spread over the workers
    stream: bool = _distribution(
        False,
        "do not keep partitions resident: re-read each from the store whenever it is gridded "
        "(for stores larger than the workers' memory; every major cycle then costs a read "
        "of the store)",
    )
    memory_check: str = _distribution(
        "auto",
        "when the resident visibilities would not fit the workers' memory limit: auto (or "
        "stream) = switch to --stream and say so, refuse = stop with an error, off = no "
        "check",
        choices=("auto", "stream", "refuse", "off"),
    )
    shards: str = _distribution(
        "worker",
        "worker: each worker merges its partitions into one shard (one gridding call per "
        "output channel per worker); partition: one task per partition (the old "
        "behaviour, for comparisons)",
        choices=("worker", "partition"),
    )
    # reliability and logging
    resume: bool = _reliability(False, "continue from the last checkpoint of --name")
    checkpoint: bool = _reliability(
        True,
        "do not write a checkpoint after each major cycle (and, in ICAL, each self-calibration round)",
        flag="--no-checkpoint",
    )
    verify: bool = _reliability(True, "skip partition SHA-256 checks", flag="--no-verify")
    png: bool = _reliability(True, "do not write PNG previews of the images", flag="--no-png")
    log_level: str = _reliability("INFO", "DEBUG, INFO, WARNING or ERROR")
    dask_report: bool = _reliability(
        False, "write Dask's performance report of the whole run (task stream, profile, worker "
        "load; open in a browser) as PREFIX-dask-report.html"
    )

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
        """Check every value; raise ConfigError naming the setting.

        Returns
        -------
        Settings
            ``self``, so that ``Settings(...).validate()`` can be chained.
        """
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise ConfigError(f"{_key(f.name)}: '{value}' is not one of {', '.join(choices)}")
        nx, ny = self.size
        for n, axis in ((nx, "x"), (ny, "y")):
            if n < 32 or n % 2:
                raise ConfigError(f"size: {axis} size {n} must be even and at least 32")
        if self.cell_rad <= 0:
            raise ConfigError("scale: must be positive")
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
            (self.padding >= 1.0, "padding: must be >= 1"),
            (0 <= self.primary_beam_limit < 1, "primary-beam-limit: must be in [0, 1)"),
            (not (self.predict_model or self.write_model_data) or self.predict,
             "predict-model/write-model-data: only with --predict"),
            (not self.pol or (self.pipeline == "continuum" and not (self.resume or self.predict or self.stream)),
             "pol: only with the continuum pipeline, without --resume, --predict or --stream (every correlation "
             "stays resident on the workers)"),
            (self.weighting_rank_filter >= 0, "weighting-rank-filter: must be >= 0 (below 1: off)"),
            (self.weighting_rank_filter_size >= 2, "weighting-rank-filter-size: must be >= 2"),
            (self.double or self.epsilon >= 1e-5, "epsilon: below 1e-5 needs --double"),
            (self.channels_out >= 1, "channels-out: must be >= 1"),
            (1 <= self.fit_spectral_pol <= 4, "fit-spectral-pol: must be 1..4"),
            (self.gridder_threads >= 0, "gridder-threads: must be >= 0 (0: the worker's threads)"),
            (
                self.time_partitions >= 1 and self.freq_partitions >= 1,
                "time/freq-partitions: must be >= 1",
            ),
            (all(s >= 0 for s in self.multiscale_scales), "multiscale-scales: must be >= 0 pixels"),
            (
                self.parallel_deconvolution == 0 or self.parallel_deconvolution >= 32,
                f"parallel-deconvolution: {self.parallel_deconvolution} must be 0 (off) or at "
                "least 32 pixels",
            ),
            (
                self.deconvolver != "radler" or importlib.util.find_spec("radler") is not None,
                "deconvolver: radler needs the radler package: pip install 'arl_mpi[radler]'",
            ),
            (self.auto_mask is None or self.auto_mask > 0, "auto-mask: must be > 0"),
            (self.local_rms_window > 0, "local-rms-window: must be > 0"),
            (
                not (self.local_rms and (self.multiscale or self.channels_out > 1)),
                "local-rms: only with single-channel Hogbom (not --multiscale or --channels-out > 1)",
            ),
            (
                not ((self.local_rms or self.auto_mask is not None)
                     and (self.parallel_deconvolution or self.pipeline == "spectral")),
                "auto-mask/local-rms: not with --parallel-deconvolution or --pipeline spectral",
            ),
            (
                not (self.auto_mask is not None and self.resume),
                "auto-mask: not with --resume (the auto-mask is not in the checkpoint)",
            ),
            (self.ical_rounds >= 1, "ical-rounds: must be >= 1"),
            (self.ical_min_snr >= 0, "ical-min-snr: must be >= 0"),
            (self.cluster_timeout > 0, "cluster-timeout: must be > 0"),
            (self.log_level.upper() in LOG_LEVELS, "log-level: DEBUG, INFO, WARNING or ERROR"),
            (
                self.threads_per_worker is None or self.threads_per_worker >= 1,
                "threads-per-worker: must be >= 1",
            ),
            (self.workers is None or self.workers >= 1, "workers: must be >= 1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        if self.pol:
            from arl_mpi.pipeline.polarisation import parse_pol

            parse_pol(self.pol)  # a one-line ConfigError when it cannot be read
        if self.join_polarizations:
            if not self.pol or len(parse_pol(self.pol)) < 2:
                raise ConfigError("join-polarizations: needs --pol with two or more products, e.g. --pol IQUV")
            masks = getattr(self, "fits_mask", None) or getattr(self, "auto_mask", None)
            if self.channels_out != 1 or self.multiscale or self.parallel_deconvolution or masks:
                raise ConfigError("join-polarizations: only Hogbom CLEAN with --channels-out 1 (no --multiscale, "
                                  "--parallel-deconvolution, masks)")
        if self.apply_solutions is not None and not Path(self.apply_solutions).is_file():
            raise ConfigError(f"apply-solutions: no such h5parm file '{self.apply_solutions}'")
        if self.pipeline not in CHECKPOINTING_PIPELINES:
            only = ", ".join(CHECKPOINTING_PIPELINES)
            if self.resume:
                raise ConfigError(
                    f"resume: not supported by the {self.pipeline} pipeline "
                    f"(only {only} checkpoints)"
                )
            if not self.checkpoint:
                raise ConfigError(
                    f"no-checkpoint: not supported by the {self.pipeline} pipeline, "
                    f"which writes no checkpoints (only {only} does)"
                )
        return self

    def image_settings(self) -> dict[str, Any]:
        """Settings that determine the images (fields with ``images`` metadata).

        A checkpoint must match these to resume.
        """
        return {
            f.name: _jsonable(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.metadata.get("images")
        }

    def as_dict(self) -> dict[str, Any]:
        """All settings, JSON-friendly."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _jsonable(v):
    return list(v) if isinstance(v, tuple) else v


def _key(name: str) -> str:
    """The TOML key / error-message name of a field: ``auto_threshold`` -> ``auto-threshold``."""
    return name.replace("_", "-")


_FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(Settings)}
_HINTS: dict[str, Any] = typing.get_type_hints(Settings)


def _base_type(name: str) -> Any:
    """The annotation of a field without ``| None`` (``int | None`` -> ``int``)."""
    hint = _HINTS[name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def flag_of(f: dataclasses.Field) -> str:
    """The command-line flag of a settings field (its ``flag`` metadata, else derived)."""
    if "flag" in f.metadata:
        return f.metadata["flag"]
    if _base_type(f.name) is bool and f.default is True:
        return f"--no-{_key(f.name)}"
    return f"--{_key(f.name)}"


def group_of(f: dataclasses.Field) -> str:
    """The ``--help`` section of a settings field."""
    return f.metadata.get("group", _CLUSTER_GROUP)


def _fields_by_group() -> list[dataclasses.Field]:
    """The Settings fields, section by section (in :data:`GROUPS` order)."""
    return sorted(dataclasses.fields(Settings), key=lambda f: GROUPS.index(group_of(f)))


def _by_type(tp: Any, value: Any) -> Any:
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(value)
        return value
    if tp is int:
        return _parse_int(value)
    if tp is float:
        if isinstance(value, bool):
            raise ValueError(value)
        return float(value)
    if tp is str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError(value)
        return str(value)
    return value


def _coerce(key: str, value: Any) -> Any:
    """Convert a CLI/TOML value to the field's type (its ``parse`` metadata), with a clear error."""
    f = _FIELDS[key]
    try:
        parse = f.metadata.get("parse")
        return parse(value, _key(key)) if parse else _by_type(_base_type(key), value)
    except ConfigError:
        raise
    except (TypeError, ValueError, IndexError):
        raise ConfigError(f"{_key(key)}: invalid value {value!r}") from None


def show_value(f: dataclasses.Field, value: Any) -> str:
    """A value of a settings field as written after its flag (``512 512``, ``briggs 0``)."""
    show = f.metadata.get("show")
    if show:
        return show(value)
    if isinstance(value, tuple | list):
        return " ".join(str(v) for v in value)
    return str(value)


# ---- command line -----------------------------------------------------------------------


def _help_text(f: dataclasses.Field) -> str:
    """The ``--help`` text: the field's help, plus its default unless the help names one."""
    text = f.metadata.get("help", "")
    if f.default is not None and not isinstance(f.default, bool) and "default" not in text:
        text = f"{text} (default {show_value(f, f.default)})"
    return text.replace("%", "%%")


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m arl_mpi.pipeline`` argument parser, derived from the Settings fields.

    Every default is None (unset), so that a config file's value is kept unless a flag is given.
    """
    p = argparse.ArgumentParser(
        prog="python -m arl_mpi.pipeline",
        description="Distributed imaging/self-calibration. Run under mpiexec/srun (rank 0 "
        "scheduler, rank 1 driver, ranks 2+ workers), on a local Dask cluster, or against "
        "$ARL_DASK_SCHEDULER. Every flag is also a key of a --config TOML file.",
        argument_default=None,
    )
    groups = {title: p.add_argument_group(title) for title in GROUPS}
    for f in _fields_by_group():
        md = f.metadata
        kw: dict[str, Any] = {"dest": f.name, "help": _help_text(f)}
        tp = _base_type(f.name)
        if tp is bool:
            kw.update(action="store_const", const=not f.default)
        else:
            argtype = md.get("type", None if "parse" in md or tp not in (int, float) else tp)
            if argtype is not None:
                kw["type"] = argtype
            for k in ("nargs", "metavar", "choices"):
                if k in md:
                    kw[k] = md[k]
        groups[group_of(f)].add_argument(flag_of(f), **kw)
    return p


def load_config_file(path: str) -> dict[str, Any]:
    """Read a TOML settings file; unknown keys are an error naming the key and file.

    Returns
    -------
    dict
        Field name -> value, parsed like the flag of the same name.
    """
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
        if key not in _FIELDS or _FIELDS[key].metadata.get("toml", True) is False:
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


# ---- documentation ----------------------------------------------------------------------


def _toml_value(f: dataclasses.Field, value: Any) -> str:
    """A value as it would be written in a TOML file."""
    if "show" in f.metadata:
        value = f.metadata["show"](value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return repr(value)


def settings_markdown() -> str:
    """The settings table of ``docs/settings.md`` (generated; see the module docstring)."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [
        "# Pipeline settings",
        "",
        "<!-- Generated from the fields of arl_mpi.pipeline.settings.Settings: do not edit. -->",
        "<!-- Regenerate: python -m arl_mpi.pipeline.settings --markdown docs/settings.md -->",
        "",
        "Every setting of `python -m arl_mpi.pipeline` is a flag and, under its TOML key, a line",
        "of a `--config FILE.toml` file; flags override the file. *Affects images*: a checkpoint",
        "must have been made with the same value for `--resume` to continue from it.",
    ]
    fields = _fields_by_group()
    for title in GROUPS:
        rows = [f for f in fields if group_of(f) == title]
        if not rows:
            continue
        lines += [
            "",
            f"## {title[0].upper()}{title[1:]}",
            "",
            "| Flag | TOML key | Default | Affects images | Help |",
            "|---|---|---|---|---|",
        ]
        for f in rows:
            md = f.metadata
            flag = flag_of(f)
            if md.get("metavar") and not isinstance(md["metavar"], tuple):
                flag += f" {md['metavar']}"
            elif isinstance(md.get("metavar"), tuple):
                flag += " " + " ".join(md["metavar"])
            elif md.get("choices"):
                flag += " {" + ",".join(md["choices"]) + "}"
            key = f"`{_key(f.name)}`" if md.get("toml", True) else "—"
            default = "unset" if f.default is None else f"`{cell(_toml_value(f, f.default))}`"
            lines.append(
                f"| `{cell(flag)}` | {key} | {default} | "
                f"{'yes' if md.get('images') else ''} | {cell(md.get('help', ''))} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m arl_mpi.pipeline.settings --markdown [PATH]``: print or write the docs table."""
    p = argparse.ArgumentParser(
        prog="python -m arl_mpi.pipeline.settings",
        description="Write the settings table (docs/settings.md).",
    )
    p.add_argument(
        "--markdown",
        nargs="?",
        const="-",
        required=True,
        metavar="PATH",
        help="write the markdown table to PATH (default: standard output)",
    )
    ns = p.parse_args(argv)
    text = settings_markdown()
    if ns.markdown == "-":
        sys.stdout.write(text)
    else:
        Path(ns.markdown).write_text(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
