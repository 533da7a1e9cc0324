"""Public test observations, fetched from a registry package at test time (never committed).

The PyPI wheel of ``pyuvdata==2.4.5`` ships real observations in ``pyuvdata/data/``: a VLA
36 GHz UVFITS/MS of the calibrator J1008+0730 and an MWA snapshot MS of Fornax A, among
others. :func:`fetch_pyuvdata_file` downloads the wheel once into a cache
(``$ARL_TESTDATA_CACHE``, default ``~/.cache/arl_mpi/testdata``) with pip and extracts only
the file or directory asked for.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from arl_mpi.errors import InputError

log = logging.getLogger(__name__)

PYUVDATA = "pyuvdata==2.4.5"
VLA_UVFITS = "day2_TDEM0003_10s_norx_1src_1spw.uvfits"
VLA_MS = "day2_TDEM0003_10s_norx_1src_1spw.ms"
MWA_MS = "1102865728_small.ms"


def cache_dir() -> Path:
    """Where downloaded wheels and extracted files live."""
    d = Path(os.environ.get("ARL_TESTDATA_CACHE", Path.home() / ".cache" / "arl_mpi" / "testdata"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _wheel() -> Path:
    d = cache_dir() / "wheels"
    found = sorted(d.glob("pyuvdata-2.4.5-*.whl"))
    if found:
        return found[0]
    d.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-q",
            "-d",
            str(d),
            PYUVDATA,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    found = sorted(d.glob("pyuvdata-2.4.5-*.whl"))
    if r.returncode != 0 or not found:
        raise InputError(
            f"could not download {PYUVDATA} for its test data: {r.stderr.strip()[-300:]}"
        )
    return found[0]


def fetch_pyuvdata_file(name: str) -> Path:
    """Path of ``pyuvdata/data/<name>`` (a file or an MS directory), extracted once."""
    out = cache_dir() / "pyuvdata-2.4.5"
    target = out / name
    marker = out / f".{name}.complete"
    if marker.exists():
        return target
    prefix = f"pyuvdata/data/{name}"
    with zipfile.ZipFile(_wheel()) as z:
        members = [m for m in z.namelist() if m == prefix or m.startswith(prefix + "/")]
        if not members:
            raise InputError(f"{PYUVDATA} has no data file {name}")
        for m in members:
            rel = m[len("pyuvdata/data/") :]
            if m.endswith("/"):
                continue
            dest = out / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".part")
            tmp.write_bytes(z.read(m))
            tmp.replace(dest)
    marker.write_text("ok")
    return target
