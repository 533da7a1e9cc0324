"""Pipeline settings: one declaration per setting, from which flags, TOML keys, the resume check
and docs/settings.md are derived; and every flag either acts or is refused."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys

import pytest
from helpers import PYTHON, REPO

from arl_mpi.cluster.settings import ClusterSettings
from arl_mpi.errors import ConfigError
from arl_mpi.pipeline.__main__ import cluster_settings
from arl_mpi.pipeline.settings import (
    ConfigExit,
    Settings,
    build_parser,
    flag_of,
    load_config_file,
    settings_from_args,
    settings_markdown,
)

# The flags of the pipeline before the settings were derived from the field metadata, and the
# three added for the scale-out work: none may disappear.
OLD_FLAGS = {
    "--auto-threshold",
    "--channels-out",
    "--cluster-timeout",
    "--config",
    "--continuum-fit-channels",
    "--continuum-subtract-order",
    "--dashboard-address",
    "--double",
    "--epsilon",
    "--fit-spectral-pol",
    "--freq-partitions",
    "--gain",
    "--gridder-threads",
    "--ical-min-snr",
    "--ical-phase-only-rounds",
    "--ical-point-model",
    "--ical-pol-mode",
    "--ical-rounds",
    "--ical-solint",
    "--interface",
    "--log-level",
    "--memory-limit",
    "--mgain",
    "--multiscale",
    "--multiscale-scale-bias",
    "--multiscale-scales",
    "--name",
    "--niter",
    "--nmiter",
    "--no-checkpoint",
    "--no-dashboard",
    "--no-png",
    "--no-tls",
    "--no-verify",
    "--no-w-correction",
    "--pipeline",
    "--resume",
    "--scale",
    "--scratch",
    "--size",
    "--stokes",
    "--stream",
    "--taper-gaussian",
    "--threads-per-worker",
    "--threshold",
    "--time-partitions",
    "--vis",
    "--weight",
    "--workers",
}
NEW_FLAGS = {"--parallel-deconvolution", "--memory-check", "--shards", "--apply-solutions"}
# WSClean's weighting grid (-padding, -weighting-rank-filter[-size]): they change the images
WEIGHTING_FIELDS = {"padding", "weighting_rank_filter", "weighting_rank_filter_size"}
NEW_FLAGS |= {"--" + f.replace("_", "-") for f in WEIGHTING_FIELDS}
# --dask-report: Dask's performance report of the run (a diagnostic; does not change the images)
DASK_REPORT_FIELDS = {"dask_report"}
NEW_FLAGS |= {"--dask-report"}
# --deconvolver (issue 13), the masks (issue 14): minor-cycle engine and masks; change the images
DECONVOLUTION_FIELDS = {"deconvolver", "fits_mask", "auto_mask", "local_rms", "local_rms_window"}
NEW_FLAGS |= {"--" + f.replace("_", "-") for f in DECONVOLUTION_FIELDS}
# --pol (issue 14, changes the images); --predict, --predict-model, --write-model-data, --save-source-list (outputs)
POL_FIELDS = {"pol", "join_polarizations"}
OUTPUT_FIELDS = {"predict", "predict_model", "write_model_data", "save_source_list"}
NEW_FLAGS |= {"--" + f.replace("_", "-") for f in POL_FIELDS | OUTPUT_FIELDS}
# --apply-primary-beam, --primary-beam-limit, --mwa-path (issue 14): extra outputs, the images unchanged
PRIMARY_BEAM_FIELDS = {"apply_primary_beam", "primary_beam_limit", "mwa_path"}
NEW_FLAGS |= {"--" + f.replace("_", "-") for f in PRIMARY_BEAM_FIELDS}

# The keep-list of image_settings() before it was derived from ``images`` metadata.
OLD_IMAGE_KEYS = {
    "vis",
    "stokes",
    "size",
    "scale",
    "epsilon",
    "w_correction",
    "double",
    "weight",
    "taper_gaussian",
    "niter",
    "gain",
    "mgain",
    "threshold",
    "auto_threshold",
    "nmiter",
    "multiscale",
    "multiscale_scales",
    "multiscale_scale_bias",
    "channels_out",
    "fit_spectral_pol",
    "pipeline",
    "ical_rounds",
    "ical_solint",
    "ical_phase_only_rounds",
    "ical_min_snr",
    "ical_pol_mode",
    "ical_point_model",
    "continuum_subtract_order",
    "continuum_fit_channels",
}

# Settings().as_dict() before the refactoring (the defaults must not move).
OLD_DEFAULTS = json.loads(
    '{"vis": null, "name": "arl", "pipeline": "continuum", "stokes": "I", "size": [512, 512], '
    '"scale": "40asec", "epsilon": 0.0001, "w_correction": true, "double": false, '
    '"gridder_threads": 1, '
    '"weight": ["natural", 0.0], "taper_gaussian": null, "niter": 0, "gain": 0.1, "mgain": 1.0, '
    '"threshold": 0.0, "auto_threshold": null, "nmiter": 20, "multiscale": false, '
    '"multiscale_scales": [0, 4, 8, 16, 32], "multiscale_scale_bias": 0.6, "channels_out": 1, '
    '"fit_spectral_pol": 2, "ical_rounds": 3, "ical_solint": 0.0, "ical_phase_only_rounds": 1, '
    '"ical_min_snr": 3.0, "ical_pol_mode": "diagonal", "ical_point_model": false, '
    '"continuum_subtract_order": -1, "continuum_fit_channels": null, "time_partitions": 4, '
    '"freq_partitions": 1, "threads_per_worker": null, "memory_limit": "auto", "workers": null, '
    '"scratch": null, "dashboard": true, "dashboard_address": "127.0.0.1:8787", "tls": true, '
    '"interface": null, "cluster_timeout": 60.0, "resume": false, "stream": false, '
    '"checkpoint": true, '
    '"verify": true, "png": true, "log_level": "INFO", "config": null}'
)


def toml(tmp_path, text: str) -> str:
    p = tmp_path / "s.toml"
    p.write_text(text)
    return str(p)


# ---- one source of truth ------------------------------------------------------------------


def test_cluster_fields_declared_once():
    assert issubclass(Settings, ClusterSettings)
    cluster = {f.name for f in dataclasses.fields(ClusterSettings)}
    assert not cluster & set(Settings.__dict__.get("__annotations__", {}))
    s = settings_from_args(
        ["--workers", "3", "--no-tls", "--memory-limit", "4GB", "--cluster-timeout", "5"]
    )
    c = cluster_settings(s)
    assert type(c) is ClusterSettings
    assert (c.workers, c.tls, c.memory_limit, c.cluster_timeout, c.dashboard) == (
        3,
        False,
        "4GB",
        5.0,
        True,
    )


def test_every_field_has_help_and_a_flag_in_help_text():
    parser = build_parser()
    text = parser.format_help()
    flags = set()
    for f in dataclasses.fields(Settings):
        assert f.metadata.get("help"), f.name
        flag = flag_of(f)
        flags.add(flag)
        assert f" {flag}" in text, flag
    assert flags == OLD_FLAGS | NEW_FLAGS
    assert set(parser._option_string_actions) - {"-h", "--help"} == flags


def test_help_lists_every_flag_cli():
    r = subprocess.run(
        [PYTHON, "-m", "arl_mpi.pipeline", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    for flag in OLD_FLAGS | NEW_FLAGS:
        assert f" {flag}" in r.stdout, flag


def test_defaults_unchanged_and_no_extra():
    d = Settings().as_dict()
    assert "extra" not in d
    assert {k: v for k, v in d.items() if k in OLD_DEFAULTS} == OLD_DEFAULTS
    assert set(d) - set(OLD_DEFAULTS) == ({"parallel_deconvolution", "memory_check", "shards", "apply_solutions"}
                                          | WEIGHTING_FIELDS | DASK_REPORT_FIELDS | DECONVOLUTION_FIELDS
                                          | POL_FIELDS | OUTPUT_FIELDS | PRIMARY_BEAM_FIELDS)
    assert d["apply_solutions"] is None
    assert (d["padding"], d["weighting_rank_filter"], d["weighting_rank_filter_size"]) == (1.2, 3.0, 16)
    assert (d["parallel_deconvolution"], d["memory_check"], d["shards"]) == (0, "auto", "worker")
    json.dumps(d)  # JSON-friendly


def test_image_settings_from_metadata():
    keys = set(Settings().image_settings())
    assert keys == (OLD_IMAGE_KEYS | {"parallel_deconvolution", "apply_solutions"} | WEIGHTING_FIELDS
                    | DECONVOLUTION_FIELDS | POL_FIELDS)
    a = settings_from_args(["--niter", "5"]).image_settings()
    assert a != settings_from_args(["--niter", "6"]).image_settings()
    # settings that do not change the images do not block a resume
    assert (
        a
        == settings_from_args(
            [
                "--niter",
                "5",
                "--no-png",
                "--workers",
                "2",
                "--stream",
                "--shards",
                "partition",
                "--memory-check",
                "off",
            ]
        ).image_settings()
    )
    assert (
        a != settings_from_args(["--niter", "5", "--parallel-deconvolution", "64"]).image_settings()
    )


def test_docs_table_up_to_date():
    path = REPO / "docs" / "settings.md"
    assert path.read_text() == settings_markdown(), (
        "docs/settings.md is stale: run "
        "python -m arl_mpi.pipeline.settings --markdown docs/settings.md"
    )
    for f in dataclasses.fields(Settings):
        assert f"`{flag_of(f)}" in path.read_text(), f.name


# ---- flags and TOML keys parse alike ------------------------------------------------------


def test_special_flags():
    s = settings_from_args(
        [
            "--size",
            "256",
            "128",
            "--weight",
            "briggs",
            "0",
            "--multiscale-scales",
            "0,4,8",
            "--threshold",
            "5mJy",
            "--no-w-correction",
            "--no-png",
            "--no-dashboard",
            "--no-checkpoint",
            "--no-verify",
            "--scale",
            "2asec",
            "--taper-gaussian",
            "1amin",
        ]
    )
    assert s.size == (256, 128)
    assert s.weight == ("briggs", 0.0)
    assert s.multiscale_scales == (0, 4, 8)
    assert s.threshold_jy == pytest.approx(5e-3, rel=1e-12)
    assert (s.w_correction, s.png, s.dashboard, s.checkpoint, s.verify) == (False,) * 5
    assert s.cell_rad == pytest.approx(math.radians(2 / 3600), rel=1e-12)
    assert s.taper_rad == pytest.approx(math.radians(1 / 60), rel=1e-12)
    assert settings_from_args(["--weight", "uniform"]).weight == ("uniform", 0.0)


def test_toml_same_as_flags(tmp_path):
    cfg = toml(
        tmp_path,
        'size = [256, 128]\nweight = ["briggs", 0]\nmultiscale-scales = [0, 4, 8]\n'
        'threshold = "5mJy"\nw-correction = false\npng = false\ndashboard = false\n'
        'parallel_deconvolution = 64\nmemory-check = "refuse"\nshards = "partition"\n'
        "threads-per-worker = 2\ncluster-timeout = 5\n",
    )
    a = settings_from_args(["--config", cfg])
    b = settings_from_args(
        [
            "--size",
            "256",
            "128",
            "--weight",
            "briggs",
            "0",
            "--multiscale-scales",
            "0,4,8",
            "--threshold",
            "5mJy",
            "--no-w-correction",
            "--no-png",
            "--no-dashboard",
            "--parallel-deconvolution",
            "64",
            "--memory-check",
            "refuse",
            "--shards",
            "partition",
            "--threads-per-worker",
            "2",
            "--cluster-timeout",
            "5",
        ]
    )
    assert {k: v for k, v in a.as_dict().items() if k != "config"} == {
        k: v for k, v in b.as_dict().items() if k != "config"
    }
    assert a.config == cfg


def test_toml_numbers_and_types(tmp_path):
    v = load_config_file(toml(tmp_path, "scale = 0.01\nsize = 256\ngain = 1\nniter = 50.0\n"))
    assert v == {"scale": 0.01, "size": (256, 256), "gain": 1.0, "niter": 50}
    assert isinstance(v["gain"], float) and isinstance(v["niter"], int)
    for text, msg in [
        ("niter = 2.5", "niter: invalid value 2.5"),
        ("png = 1", "png: invalid value 1"),
        ("niter = true", "niter: invalid value True"),
        ("size = [1, 2, 3]", "size: invalid value"),
        ('scale = "3 parsecs"', "scale: unknown angle unit"),
        ('threshold = "5 furlongs"', "threshold: cannot parse flux"),
        ('weight = "briggs"', "weight: briggs needs a robustness"),
        ('config = "other.toml"', "unknown setting 'config'"),
        ("extra = {}", "unknown setting 'extra'"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            load_config_file(toml(tmp_path, text + "\n"))


def test_choices_checked_for_toml_values(tmp_path):
    for key, value in [
        ("pipeline", "mosaic"),
        ("memory-check", "maybe"),
        ("shards", "node"),
        ("stokes", "XX"),
        ("ical-pol-mode", "full"),
    ]:
        with pytest.raises(ConfigError, match=f"^{key}: '{value}' is not one of"):
            settings_from_args(["--config", toml(tmp_path, f'{key} = "{value}"\n')])


def test_bad_flag_values_exit_2(capsys):
    for argv in (
        ["--memory-check", "maybe"],
        ["--shards", "node"],
        ["--parallel-deconvolution", "x"],
    ):
        with pytest.raises(ConfigExit) as e:
            settings_from_args(argv)
        assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_help_exits_0(capsys):
    with pytest.raises(ConfigExit) as e:
        settings_from_args(["--help"])
    assert e.value.code == 0
    assert "--parallel-deconvolution MAXSIZE" in capsys.readouterr().out


# ---- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize("pipeline", ["ical", "spectral"])
def test_resume_and_no_checkpoint_accepted_by_every_pipeline(pipeline, tmp_path):
    s = settings_from_args(["--pipeline", pipeline, "--resume"])
    assert s.resume and s.checkpoint
    assert not settings_from_args(["--pipeline", pipeline, "--no-checkpoint"]).checkpoint
    s = settings_from_args(["--config", toml(tmp_path, f'pipeline = "{pipeline}"\nresume = true\n')])
    assert s.resume and s.pipeline == pipeline


def test_resume_and_no_checkpoint_continuum():
    s = settings_from_args(["--resume"])
    assert s.resume and s.checkpoint
    assert not settings_from_args(["--no-checkpoint"]).checkpoint


def test_parallel_deconvolution_range():
    assert settings_from_args([]).parallel_deconvolution == 0
    assert settings_from_args(["--parallel-deconvolution", "32"]).parallel_deconvolution == 32
    assert settings_from_args(["--parallel-deconvolution", "1024"]).parallel_deconvolution == 1024
    for bad in ("31", "-1"):
        with pytest.raises(
            ConfigError, match="^parallel-deconvolution: .* must be 0 .*or at least 32"
        ):
            settings_from_args(["--parallel-deconvolution", bad])


def test_existing_validation_messages():
    for argv, msg in [
        (["--size", "101", "100"], "size: x size 101 must be even"),
        (["--weight", "briggs", "3"], "outside \\[-2, 2\\]"),
        (["--epsilon", "1e-6"], "epsilon: below 1e-5 needs --double"),
        (["--workers", "0"], "workers: must be >= 1"),
        (["--threads-per-worker", "0"], "threads-per-worker: must be >= 1"),
        (["--log-level", "LOUD"], "log-level:"),
        (["--weight", "natural", "1"], "weight: unexpected values after 'natural'"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            settings_from_args(argv)
    assert settings_from_args(["--log-level", "debug"]).log_level == "debug"


def test_markdown_command(tmp_path):
    out = tmp_path / "s.md"
    r = subprocess.run(
        [PYTHON, "-m", "arl_mpi.pipeline.settings", "--markdown", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert out.read_text() == settings_markdown()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
