"""Ingest of real observations (from the pyuvdata 2.4.5 wheel) and of a synthetic UVFITS.

The real files are downloaded at test time into a cache (arl_mpi.testing.realdata); without
network those tests are skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from helpers import MPIEXEC, PYTHON, REPO, run_pipeline

from arl_mpi.constants import SPEED_OF_LIGHT
from arl_mpi.errors import InputError, StoreError
from arl_mpi.imaging.dft import dft_predict, lm_to_pixel, radec_to_lm
from arl_mpi.imaging.gridding import invert
from arl_mpi.imaging.stokes import to_stokes
from arl_mpi.ingest import ensure_store_from_input, ingest
from arl_mpi.io.store import open_store, read_partition
from arl_mpi.testing import realdata as testdata


def fetch(name: str):
    try:
        return testdata.fetch_pyuvdata_file(name)
    except InputError as e:
        pytest.skip(f"test data unavailable (offline?): {e}")


def needs_casacore():
    pytest.importorskip("casacore.tables", reason="python-casacore (arl_mpi[ms]) not installed")


def all_rows(store):
    idx = open_store(store)
    parts = [read_partition(idx, k) for k in range(len(idx.partitions))]

    def cat(f):
        return np.concatenate([getattr(v, f) for v in parts])

    order = np.lexsort((cat("antenna2"), cat("antenna1"), np.round(cat("time"), 1)))
    return idx, {
        f: cat(f)[order] for f in ("time", "uvw", "vis", "weight", "flags", "antenna1", "antenna2")
    }


def test_vla_uvfits_ingest(tmp_path):
    src = fetch(testdata.VLA_UVFITS)
    before = src.read_bytes()
    idx = ingest(src, tmp_path / "vla.store", time_partitions=2)
    hdr = fits.getheader(src)
    assert idx.meta.polarisations == ["RR", "RL", "LR", "LL"]
    assert idx.meta.frequency.size == 64 and idx.nvis == hdr["GCOUNT"] * 64 * 4
    f0 = hdr["CRVAL4"] + (1 - hdr["CRPIX4"]) * hdr["CDELT4"]
    assert idx.meta.frequency[0] == pytest.approx(f0) and np.allclose(
        np.diff(idx.meta.frequency), hdr["CDELT4"]
    )
    axis = {hdr[f"CTYPE{i}"].strip(): i for i in range(2, hdr["NAXIS"] + 1)}
    pc = SkyCoord(ra=hdr[f"CRVAL{axis['RA']}"] * u.deg, dec=hdr[f"CRVAL{axis['DEC']}"] * u.deg)
    assert idx.meta.phase_centre.separation(pc).arcsec < 1e-6
    _, rows = all_rows(tmp_path / "vla.store")
    raw = fits.getdata(src)
    assert rows["flags"].sum() == int((raw.data[..., 2] <= 0).sum())  # weight <= 0 means flagged
    assert src.read_bytes() == before  # input untouched


def test_vla_uvfits_and_ms_agree(tmp_path):
    """The same VLA observation as UVFITS and as MS gives the same uvw, data, flags, weights."""
    needs_casacore()
    ingest(fetch(testdata.VLA_UVFITS), tmp_path / "uv.store", time_partitions=1)
    ingest(fetch(testdata.VLA_MS), tmp_path / "ms.store", time_partitions=3)
    iu, a = all_rows(tmp_path / "uv.store")
    im, b = all_rows(tmp_path / "ms.store")
    np.testing.assert_array_equal(a["time"], b["time"])
    np.testing.assert_allclose(a["uvw"], b["uvw"], atol=1e-3)  # UU/VV/WW seconds x c vs UVW metres
    np.testing.assert_allclose(a["vis"], b["vis"], atol=1e-6)
    np.testing.assert_array_equal(a["flags"], b["flags"])
    np.testing.assert_allclose(a["weight"], b["weight"], rtol=1e-6)
    assert iu.meta.phase_centre.separation(im.meta.phase_centre).arcsec < 1e-3


def test_mwa_ms_ingest_and_image(tmp_path):
    needs_casacore()
    src = fetch(testdata.MWA_MS)
    idx = ingest(src, tmp_path / "mwa.store", time_partitions=1, freq_partitions=2)
    assert idx.meta.configuration.nant == 128 and idx.meta.polarisations == ["XX", "XY", "YX", "YY"]
    assert idx.meta.frequency.size == 10 and len(idx.partitions) == 2
    import casacore.tables as tables

    with tables.table(str(src), ack=False) as t:  # what the file says
        flag = t.getcol("FLAG") | t.getcol("FLAG_ROW")[:, None, None]
        wspec, data, nrow = t.getcol("WEIGHT_SPECTRUM"), t.getcol("DATA"), t.nrows()
        order = np.lexsort((t.getcol("ANTENNA2"), t.getcol("ANTENNA1"), t.getcol("TIME")))
    with tables.table(str(src / "SPECTRAL_WINDOW"), ack=False) as t:
        np.testing.assert_allclose(idx.meta.frequency, t.getcell("CHAN_FREQ", 0))
    with tables.table(str(src / "FIELD"), ack=False) as t:
        ra, dec = t.getcell("PHASE_DIR", 0)[0]
    pc = SkyCoord(ra=ra * u.rad, dec=dec * u.rad)
    assert idx.meta.phase_centre.separation(pc).arcsec < 1e-6
    v = [read_partition(idx, k) for k in range(2)]
    assert idx.nvis == nrow * 10 * 4 and v[0].nrow == nrow
    got_flags = np.concatenate([p.flags for p in v], axis=1)
    np.testing.assert_array_equal(got_flags, flag[order] | ~np.isfinite(data[order]))
    got_w = np.concatenate([p.weight for p in v], axis=1)
    np.testing.assert_allclose(got_w[~got_flags], wspec[order][~got_flags])
    assert np.all(got_w[got_flags] == 0) and got_flags.any()
    vis, wt, fl = to_stokes(
        np.concatenate([p.vis for p in v], axis=1),
        np.concatenate([p.weight for p in v], axis=1),
        np.concatenate([p.flags for p in v], axis=1),
        v[0].polarisations,
        "I",
    )
    cell = np.deg2rad(60 / 3600)
    img, _ = invert(v[0].uvw, idx.meta.frequency, vis, wt, fl, 512, 512, cell)
    # Fornax A (the field's target, at the phase centre) is the brightest thing in the image
    y, x = np.unravel_index(np.argmax(img), img.shape)
    assert np.hypot(x - 256, y - 256) * 60 < 1800, (x, y)


ARRAY_CENTRE = np.array([-2.5e6, 5.1e6, -2.8e6])


def rot_ecef(offsets, centre=ARRAY_CENTRE):
    """ITRF offsets from the array centre -> AIPS Memo 117 frame (x through the array's meridian)."""
    lon = np.arctan2(centre[1], centre[0])
    c, s = np.cos(lon), np.sin(lon)
    return np.stack(
        [
            c * offsets[:, 0] + s * offsets[:, 1],
            -s * offsets[:, 0] + c * offsets[:, 1],
            offsets[:, 2],
        ],
        1,
    )


def write_synthetic_uvfits(path, ra0, dec0, src_ra, src_dec, flux=1.0, two_sources=False):
    """A minimal AIPS-convention UVFITS of one point source (visibilities by exact DFT).

    With ``two_sources`` the rows alternate between source ids 1 and 2 (SOURCE random
    parameter + AIPS SU table; source 2 is 1 deg north of the axes' position).
    """
    rng = np.random.default_rng(0)
    nant, ntime, nchan = 12, 6, 4
    xyz = rng.normal(0, 800, (nant, 3))
    a1, a2 = np.triu_indices(nant, 1)
    freq = 150e6 + np.arange(nchan) * 1e6
    uvw = []
    for t in range(ntime):
        rot = np.deg2rad(10 * t)
        c, s = np.cos(rot), np.sin(rot)
        r = xyz @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        uvw.append(r[a2] - r[a1])
    uvw = np.concatenate(uvw)
    uvw[:, 2] *= 0.1
    nrow = uvw.shape[0]
    l, m = radec_to_lm(np.deg2rad(src_ra), np.deg2rad(src_dec), np.deg2rad(ra0), np.deg2rad(dec0))
    v = dft_predict(np.atleast_1d(l), np.atleast_1d(m), np.full((1, nchan), flux), uvw, freq)
    data = np.zeros((nrow, 1, 1, 1, nchan, 2, 3), np.float32)  # DEC RA IF FREQ STOKES COMPLEX
    for p in range(2):  # XX, YY = I
        data[:, 0, 0, 0, :, p, 0] = v.real
        data[:, 0, 0, 0, :, p, 1] = v.imag
        data[:, 0, 0, 0, :, p, 2] = 1.0
    jd_frac = np.repeat(np.arange(ntime), nant * (nant - 1) // 2) * 60 / 86400
    # float32 parameters: the Julian date is split into two DATE parameters, which readers sum
    pars = [
        uvw[:, 0] / SPEED_OF_LIGHT,
        uvw[:, 1] / SPEED_OF_LIGHT,
        uvw[:, 2] / SPEED_OF_LIGHT,
        np.full(nrow, 2460000.5),
        jd_frac,
        256.0 * (np.tile(a1, ntime) + 1) + (np.tile(a2, ntime) + 1),
    ]
    parnames = ["UU", "VV", "WW", "DATE", "DATE", "BASELINE"]
    if two_sources:
        parnames.append("SOURCE")
        pars.append(1.0 + (np.arange(nrow) % 2))
    gd = fits.GroupData(data, parnames=parnames, pardata=pars, bitpix=-32)
    hdu = fits.GroupsHDU(gd)
    h = hdu.header
    for i, (ct, crval, cdelt) in enumerate(
        [
            ("COMPLEX", 1, 1),
            ("STOKES", -5, -1),
            ("FREQ", freq[0], 1e6),
            ("IF", 1, 1),
            ("RA", ra0, 1),
            ("DEC", dec0, 1),
        ],
        start=2,
    ):
        h[f"CTYPE{i}"], h[f"CRVAL{i}"], h[f"CDELT{i}"], h[f"CRPIX{i}"] = ct, crval, cdelt, 1.0
    h["OBSRA"], h["OBSDEC"], h["TELESCOP"] = ra0, dec0, "SYNTH"
    an = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="ANNAME", format="8A", array=[f"A{i}" for i in range(nant)]),
            fits.Column(name="STABXYZ", format="3D", array=rot_ecef(xyz)),
            fits.Column(name="NOSTA", format="1J", array=np.arange(1, nant + 1)),
        ],
        name="AIPS AN",
    )
    an.header["ARRAYX"], an.header["ARRAYY"], an.header["ARRAYZ"] = ARRAY_CENTRE
    an.header["FRAME"] = "ITRF"
    hdus = [hdu, an]
    if two_sources:
        hdus.append(
            fits.BinTableHDU.from_columns(
                [
                    fits.Column(name="ID. NO.", format="1J", array=[1, 2]),
                    fits.Column(name="SOURCE", format="16A", array=["ONE", "TWO"]),
                    fits.Column(name="RAEPO", format="1D", array=[ra0, ra0]),
                    fits.Column(name="DECEPO", format="1D", array=[dec0, dec0 + 1.0]),
                    fits.Column(name="EPOCH", format="1D", array=[2000.0, 2000.0]),
                ],
                name="AIPS SU",
            )
        )
    fits.HDUList(hdus).writeto(path)
    return xyz + ARRAY_CENTRE


def test_synthetic_uvfits_source_lands_at_its_position(tmp_path):
    """Pins the UVFITS conventions (UU/VV/WW in light-seconds, signs, Stokes order)."""
    ra0, dec0 = 60.0, -30.0
    src = SkyCoord(ra=ra0 * u.deg, dec=dec0 * u.deg).spherical_offsets_by(1.0 * u.deg, 0.5 * u.deg)
    path = tmp_path / "synth.uvfits"
    itrf = write_synthetic_uvfits(path, ra0, dec0, src.ra.deg, src.dec.deg)
    idx = ingest(path, tmp_path / "s.store", time_partitions=2)
    # AN table: Memo-117 relative, rotated positions come back as ITRF
    np.testing.assert_allclose(idx.meta.configuration.xyz, itrf, atol=1e-6)
    assert (
        idx.meta.phase_centre.separation(SkyCoord(ra=ra0 * u.deg, dec=dec0 * u.deg)).arcsec < 1e-6
    )
    v = [read_partition(idx, k) for k in range(2)]
    vis, wt, fl = to_stokes(
        np.concatenate([p.vis for p in v]),
        np.concatenate([p.weight for p in v]),
        np.concatenate([p.flags for p in v]),
        v[0].polarisations,
        "I",
    )
    uvw = np.concatenate([p.uvw for p in v])
    cell = np.deg2rad(30 / 3600)
    img, _ = invert(uvw, idx.meta.frequency, vis, wt, fl, 512, 512, cell, double=True, epsilon=1e-7)
    l, m = radec_to_lm(src.ra.rad, src.dec.rad, np.deg2rad(ra0), np.deg2rad(dec0))
    x, y = lm_to_pixel(l, m, 512, 512, cell)
    yi, xi = np.unravel_index(np.argmax(img), img.shape)
    assert abs(xi - x) <= 1 and abs(yi - y) <= 1, ((xi, yi), (x, y))
    assert img.max() == pytest.approx(1.0, abs=0.05)


def test_multi_source_uvfits_selects_field(tmp_path):
    """SOURCE parameter + AIPS SU table: --field picks one source's rows and its position."""
    path = tmp_path / "two.uvfits"
    write_synthetic_uvfits(path, 60.0, -30.0, 60.5, -30.0, two_sources=True)
    nrow = fits.getheader(path)["GCOUNT"]
    a = ingest(path, tmp_path / "a.store", time_partitions=2, field=0)
    b = ingest(path, tmp_path / "b.store", time_partitions=2, field=1)
    assert a.nvis + b.nvis == nrow * 4 * 2 and a.nvis == b.nvis
    assert a.meta.phase_centre.dec.deg == pytest.approx(
        -30.0
    ) and b.meta.phase_centre.dec.deg == pytest.approx(-29.0)
    with pytest.raises(InputError, match="no field 2"):
        ingest(path, tmp_path / "c.store", field=2)


@pytest.mark.parametrize(
    "case,needle",
    [
        ("missing", "no such visibility store, MeasurementSet or UVFITS file"),
        ("not-ms", "neither a visibility store"),
        ("truncated", "truncated UVFITS file"),
        ("truncated-tail", "truncated UVFITS file"),
        ("spw", "--spw applies to MeasurementSets"),
        ("not-fits", "not a MeasurementSet, UVFITS file or visibility store"),
        ("unknown-column", "--column FOO: must be DATA, CORRECTED_DATA or MODEL_DATA"),
        ("column", "--column MODEL_DATA"),
    ],
)
def test_bad_inputs(tmp_path, env_cli, case, needle):
    target = tmp_path / "input"
    extra = []
    if case == "not-ms":
        target.mkdir()
        (target / "foo").write_text("x")
    elif case == "truncated":
        raw = fetch(testdata.VLA_UVFITS).read_bytes()
        target = tmp_path / "cut.uvfits"
        target.write_bytes(raw[: len(raw) // 2])
    elif case == "truncated-tail":  # only the last extension table is short
        raw = fetch(testdata.VLA_UVFITS).read_bytes()
        target = tmp_path / "cut.uvfits"
        target.write_bytes(raw[:-100])
    elif case == "spw":
        target = fetch(testdata.VLA_UVFITS)
        extra = ["--spw", "1"]
    elif case == "not-fits":
        target.write_text("just text\n")
    elif case == "unknown-column":
        target = fetch(testdata.VLA_UVFITS)
        extra = ["--column", "FOO"]
    elif case == "column":
        target = fetch(testdata.VLA_UVFITS)
        extra = ["--column", "MODEL_DATA"]
    r = subprocess.run(
        [PYTHON, "-m", "arl_mpi.ingest", str(target), str(tmp_path / "out.store"), *extra],
        capture_output=True,
        text=True,
        env=env_cli,
        cwd=REPO,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "out.store").exists()


def test_pipeline_vis_accepts_uvfits_and_reuses_store(tmp_path, env_cli):
    src = tmp_path / "vla.uvfits"
    shutil.copy(fetch(testdata.VLA_UVFITS), src)
    args = [
        "--vis",
        str(src),
        "--size",
        "128",
        "128",
        "--scale",
        "0.5asec",
        "--workers",
        "1",
        "--no-dashboard",
        "--no-png",
        "--time-partitions",
        "2",
    ]

    def image(name: str) -> subprocess.CompletedProcess:
        return run_pipeline(tmp_path, name, args, env_cli)

    r = image("a")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "vla.uvfits.arlstore" / "index.h5").exists() and "ingesting" in r.stderr
    r = image("b")
    assert r.returncode == 0 and "reusing" in r.stderr
    a, b = fits.getdata(tmp_path / "a-dirty.fits"), fits.getdata(tmp_path / "b-dirty.fits")
    np.testing.assert_array_equal(a, b)
    assert ensure_store_from_input(src) == str(tmp_path / "vla.uvfits.arlstore")


def test_write_ms_round_trip(tmp_path):
    """Store -> MeasurementSet (for peers) -> store gives the same data back."""
    needs_casacore()
    from helpers import small_meta, small_visibility

    from arl_mpi.io.ms import write_ms
    from arl_mpi.io.store import write_store

    vis = small_visibility(nrow=60, nchan=3)
    vis.flags[:] = False
    vis.time[:] = np.repeat(np.arange(6) * 10.0 + 5e9, 10)
    idx = write_store(tmp_path / "a.store", small_meta(vis), vis, ntime_parts=2)
    write_ms(idx, tmp_path / "a.ms")
    back = ingest(tmp_path / "a.ms", tmp_path / "b.store", time_partitions=1)
    v = read_partition(back, 0)
    order = np.lexsort((vis.antenna2, vis.antenna1, vis.time))
    got = np.lexsort((v.antenna2, v.antenna1, v.time))
    np.testing.assert_allclose(v.uvw[got], vis.uvw[order])
    np.testing.assert_allclose(v.vis[got], vis.vis[order], rtol=1e-6)
    assert back.meta.polarisations == ["XX", "YY"]


def test_ensure_store_reingests_a_changed_input(tmp_path):
    """--vis INPUT: reused while unchanged, replaced when the input changes, foreign stores refused."""
    src = tmp_path / "vla.uvfits"
    shutil.copy(fetch(testdata.VLA_UVFITS), src)
    store = ensure_store_from_input(src, time_partitions=2)
    first = open_store(store).meta.provenance["fingerprint"]
    assert ensure_store_from_input(src, time_partitions=2) == store
    os.utime(src, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns + 10**9))  # "modified"
    assert ensure_store_from_input(src, time_partitions=2) == store
    assert open_store(store).meta.provenance["fingerprint"] != first
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no temporaries left
    other = tmp_path / "other.uvfits"
    shutil.copy(src, other)
    shutil.rmtree(store)
    shutil.copytree(open_store(ensure_store_from_input(other, time_partitions=1)).path, store)
    with pytest.raises(StoreError, match="not ingested from"):
        ensure_store_from_input(src)


@pytest.mark.mpi
def test_mpi_ingest_matches_serial(tmp_path, env_cli):
    """mpiexec -n 2: every rank reads and writes its own partitions; same data as serially."""
    src = fetch(testdata.VLA_UVFITS)
    ingest(src, tmp_path / "serial.store", time_partitions=4)
    r = subprocess.run(
        [MPIEXEC, "-n", "2", PYTHON, "-m", "arl_mpi.ingest", str(src), str(tmp_path / "mpi.store"),
         "--time-partitions", "4"],
        capture_output=True, text=True, env=env_cli, cwd=REPO, timeout=180,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    _, a = all_rows(tmp_path / "serial.store")
    idx, b = all_rows(tmp_path / "mpi.store")
    assert len(idx.partitions) == 4
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_ms_errors_are_one_line(tmp_path, env_cli):
    """An MS without the asked-for column, and a reader without python-casacore."""
    needs_casacore()
    ms = fetch(testdata.MWA_MS)
    out = tmp_path / "out.store"
    r = subprocess.run(
        [PYTHON, "-m", "arl_mpi.ingest", str(ms), str(out), "--column", "CORRECTED_DATA"],
        capture_output=True, text=True, env=env_cli, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2 and "has no CORRECTED_DATA column" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()
    hide = "import sys; sys.modules['casacore'] = None; from arl_mpi.ingest import entry; entry()"
    r = subprocess.run(
        [PYTHON, "-c", hide, str(ms), str(out)], capture_output=True, text=True, env=env_cli, cwd=REPO,
        timeout=120,
    )  # fmt: skip
    assert r.returncode == 2 and "pip install 'arl_mpi[ms]'" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()
