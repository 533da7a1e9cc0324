"""h5parm gain solutions (DP3 / LoSoTo / WSClean): our writer's round trip and file layout,
solutions written by an independent writer (plain h5py in this file, other axis orders, other
time/frequency grids than the data) applied on the workers' load path recover injected gains,
one-line errors for missing antennas and axes, and DP3's own ApplyCal on our h5parm."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from helpers import run_pipeline, small_configuration

from arl_mpi import graphs
from arl_mpi.calibration.gaintable import GainTable, read_gaintable_h5parm, write_gaintable_h5parm
from arl_mpi.calibration.solutions import apply_solutions, load_solutions, solutions_from_file
from arl_mpi.graphs import shard_tasks as tasks
from arl_mpi.imaging.dft import dft_predict, pixel_to_lm
from arl_mpi.io.h5parm import H5parmError
from arl_mpi.io.store import StoreMeta, open_store, write_store
from arl_mpi.models import Visibility

NANT, NTIME, NCHAN = 8, 8, 4
POLS = ["XX", "XY", "YX", "YY"]
T0, DT = 5.0e9, 10.0
FREQ = np.linspace(100e6, 115e6, NCHAN)
NPIX, CELL = 64, np.deg2rad(2 / 60)
SRC_PIX = (NPIX // 2 + 5, NPIX // 2 - 3)  # (x, y) of the point source
FLUX = 2.0
# the source's correlations (a little polarised, so the cross-hands test receptor pairing)
POL_FRAC = np.array([1.0, 0.2 + 0.05j, 0.2 - 0.05j, 0.9])


# ---- the observation and the true gains -----------------------------------------------------


def observation() -> tuple[Visibility, StoreMeta]:
    """A point source off centre, 8 antennas, 8 integrations, 4 channels, 4 correlations."""
    cfg = small_configuration(nant=NANT, seed=1)
    rng = np.random.default_rng(2)
    pos = rng.normal(0, 150, (NANT, 3)) * [1, 1, 0.05]
    a1, a2 = np.triu_indices(NANT, 1)
    rows = []
    for k in range(NTIME):
        c, s = np.cos(0.08 * k), np.sin(0.08 * k)
        p = pos @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]).T
        rows.append(p[a2] - p[a1])
    uvw = np.concatenate(rows)
    nbl = a1.size
    time = np.repeat(T0 + DT * np.arange(NTIME), nbl)
    l0, m0 = pixel_to_lm(SRC_PIX[0], SRC_PIX[1], NPIX, NPIX, CELL)
    v = dft_predict(np.array([l0]), np.array([m0]), np.array([FLUX]), uvw, FREQ)  # [nrow, nchan]
    vis = v[:, :, None] * POL_FRAC[None, None, :]
    shape = vis.shape
    pc = SkyCoord(ra=15 * u.deg, dec=-45 * u.deg)
    vv = Visibility(time=time, uvw=uvw, antenna1=np.tile(a1, NTIME), antenna2=np.tile(a2, NTIME),
                    vis=vis.astype(np.complex128), weight=np.ones(shape, np.float32), flags=np.zeros(shape, bool),
                    frequency=FREQ, channel_width=np.full(NCHAN, 1e6), polarisations=POLS, phase_centre=pc,
                    integration_time=np.full(time.size, DT))
    meta = StoreMeta(phase_centre=pc, frequency=FREQ, channel_width=np.full(NCHAN, 1e6), polarisations=POLS,
                     configuration=cfg, telescope="TEST")
    return vv, meta


def true_amp(ant, tau, nu, rec):
    """Amplitude, linear in time and frequency (so linear interpolation is exact)."""
    return 1.0 + 0.05 * ant - 0.1 * tau + 0.08 * nu + 0.03 * rec


def true_phase(ant, tau, nu, rec):
    """Phase (rad), linear in time and frequency, steps of < 0.3 rad between solution points."""
    return 0.4 * np.sin(ant + 1.0) + (0.35 + 0.02 * ant) * tau - 0.2 * nu * (ant % 3) + 0.1 * rec


def _tau(t):
    return (np.asarray(t) - T0) / (DT * (NTIME - 1))


def _nu(f):
    return (np.asarray(f) - FREQ[0]) / (FREQ[-1] - FREQ[0])


def corrupt(vis: Visibility) -> np.ndarray:
    """V_ab(i, j) g_i^a conj(g_j^b) with the true gains at every row and channel."""
    tau, nu = _tau(vis.time)[:, None], _nu(vis.frequency)[None, :]

    def g(ant, rec):
        return true_amp(ant[:, None], tau, nu, rec) * np.exp(1j * true_phase(ant[:, None], tau, nu, rec))

    out = vis.vis.copy()
    for p, lab in enumerate(POLS):
        ra, rb = "XY".index(lab[0]), "XY".index(lab[1])
        out[:, :, p] *= g(vis.antenna1, ra) * np.conj(g(vis.antenna2, rb))
    return out


# ---- an independent h5parm writer (plain h5py, LoSoTo/DP3 layout) ---------------------------


def write_independent_h5parm(path: Path, names: list[str], *, drop_antenna: str | None = None,
                             drop_axis: str | None = None, flag: tuple[int, int] | None = None) -> None:
    """Phase and amplitude soltabs on their own grids and axis orders; antennas shuffled, one extra.

    ``phase000``: AXES ``time,ant,freq,pol,dir``, 5 times, 2 frequencies.
    ``amplitude000``: AXES ``ant,pol,freq,time``, 3 times, 3 frequencies.
    """
    ants = list(names[::-1]) + ["EXTRA"]
    if drop_antenna:
        ants.remove(drop_antenna)
    ant_idx = np.array([names.index(a) if a in names else 99 for a in ants])
    t_ph = T0 + np.linspace(0, DT * (NTIME - 1), 5)
    f_ph = np.array([FREQ[0], FREQ[-1]])
    t_am = T0 + np.linspace(0, DT * (NTIME - 1), 3)
    f_am = np.linspace(FREQ[0], FREQ[-1], 3)
    with h5py.File(path, "w") as f:
        ss = f.create_group("sol000")
        ant_t = np.zeros(len(ants), dtype=[("name", "S16"), ("position", "<f4", (3,))])
        ant_t["name"] = [a.encode() for a in ants]
        ss.create_dataset("antenna", data=ant_t)
        src = np.zeros(1, dtype=[("name", "S128"), ("dir", "<f4", (2,))])
        src["name"] = [b"[pointing]"]
        ss.create_dataset("source", data=src)

        ph = ss.create_group("phase000")
        ph.attrs["TITLE"] = b"phase"
        a, t, fr, r = np.meshgrid(ant_idx, _tau(t_ph), _nu(f_ph), [0, 1], indexing="ij")
        val = np.transpose(true_phase(a, t, fr, r), (1, 0, 2, 3))[..., None]  # time,ant,freq,pol,dir
        wt = np.ones_like(val)
        if flag is not None:  # (time index, antenna index into `names`)
            wt[flag[0], ants.index(names[flag[1]])] = 0.0
        axes = {"time": t_ph, "ant": np.array(ants, dtype="S16"), "freq": f_ph,
                "pol": np.array([b"XX", b"YY"]), "dir": np.array([b"[pointing]"])}
        order = "time,ant,freq,pol,dir"
        for name in order.split(","):
            if name != drop_axis:
                ph.create_dataset(name, data=axes[name])
        for dname, data in (("val", val), ("weight", wt)):
            ph.create_dataset(dname, data=data).attrs["AXES"] = order.encode()

        am = ss.create_group("amplitude000")
        am.attrs["TITLE"] = b"amplitude"
        a, r, fr, t = np.meshgrid(ant_idx, [0, 1], _nu(f_am), _tau(t_am), indexing="ij")
        val = true_amp(a, t, fr, r)  # ant,pol,freq,time
        order = "ant,pol,freq,time"
        for name, data in (("ant", np.array(ants, dtype="S16")), ("pol", np.array([b"XX", b"YY"])),
                           ("freq", f_am), ("time", t_am)):
            am.create_dataset(name, data=data)
        for dname, data in (("val", val), ("weight", np.ones_like(val))):
            am.create_dataset(dname, data=data).attrs["AXES"] = order.encode()


@pytest.fixture(scope="module")
def obs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("h5parm")
    vis, meta = observation()
    truth = vis.vis.copy()
    vis.vis = corrupt(vis)
    write_store(tmp / "obs.store", meta, vis, ntime_parts=2)
    h5 = tmp / "independent.h5"
    write_independent_h5parm(h5, list(meta.configuration.names))
    return tmp, vis, truth, meta, h5


# ---- our writer ------------------------------------------------------------------------------


def _table(receptors, phase_only=False, seed=0):
    rng = np.random.default_rng(seed)
    shape = (3, 5, 2, len(receptors))
    gain = (rng.uniform(0.5, 1.5, shape) * np.exp(1j * rng.uniform(-np.pi, np.pi, shape)))
    if phase_only:
        gain = gain / np.abs(gain)
    flags = rng.uniform(size=shape) < 0.2
    gain[flags] = 1.0
    weight = np.where(flags, 0.0, rng.uniform(1, 100, shape))
    return GainTable(time=T0 + np.array([0.0, 30, 60]), interval=np.array([30.0, 30, 30]),
                     freq=np.array([100e6, 110e6]), antennas=np.array([f"A{i}" for i in range(5)]),
                     gain=gain, weight=weight, flags=flags, receptors=receptors, phase_only=phase_only, ref_ant=2)


@pytest.mark.parametrize("receptors,phase_only", [(["X", "Y"], False), (["I"], False), (["R", "L"], True)])
def test_round_trip_and_layout(tmp_path, receptors, phase_only):
    gt = _table(receptors, phase_only)
    path = write_gaintable_h5parm(tmp_path / "g.h5parm", gt, antenna_positions=np.arange(15.0).reshape(5, 3),
                                  source_dir=(0.25, -0.5))
    back = read_gaintable_h5parm(path)
    np.testing.assert_allclose(back.gain, gt.gain, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(back.flags, gt.flags)
    np.testing.assert_array_equal(back.weight[~gt.flags], gt.weight[~gt.flags])
    for name in ("time", "interval", "freq"):
        np.testing.assert_array_equal(getattr(back, name), getattr(gt, name))
    assert list(back.antennas) == list(gt.antennas) and back.receptors == gt.receptors
    assert (back.phase_only, back.ref_ant) == (phase_only, 2)
    # what DP3 / LoSoTo read: the standard's groups, TITLEs, AXES and tables
    with h5py.File(path, "r") as f:
        ss = f["sol000"]
        tabs = sorted(k for k in ss if isinstance(ss[k], h5py.Group))
        assert tabs == (["phase000"] if phase_only else ["amplitude000", "phase000"])
        axes = "time,freq,ant,dir" + ("" if receptors == ["I"] else ",pol")
        for k in tabs:
            assert ss[k].attrs["TITLE"].decode() == k[:-3]
            for d in ("val", "weight"):
                assert ss[k][d].attrs["AXES"].decode() == axes
            assert ss[k]["val"].shape == tuple(ss[k][a].shape[0] for a in axes.split(","))
        if receptors != ["I"]:
            assert [p.decode() for p in ss["phase000/pol"][()]] == [r + r for r in receptors]
        np.testing.assert_allclose(ss["phase000/val"][()][1, 0, 3, 0], np.angle(gt.gain[1, 3, 0, :]), atol=1e-12)
        ant = ss["antenna"][()]
        assert [n.decode() for n in ant["name"]] == list(gt.antennas)
        np.testing.assert_allclose(ant["position"][4], [12, 13, 14])
        src = ss["source"][()]
        assert src["name"][0] == b"pointing" and np.allclose(src["dir"][0], [0.25, -0.5])


# ---- solutions from an independent writer ------------------------------------------------------


def test_independent_h5parm_recovers_injected_gains(obs):
    tmp, vis, truth, meta, h5 = obs
    sol = solutions_from_file(h5)
    assert sorted(t.kind for t in sol.tabs) == ["amplitude", "phase"] and sol.receptors == ["X", "Y"]
    out, fl = apply_solutions(vis.time, vis.antenna1, vis.antenna2, vis.vis, vis.frequency, POLS,
                              meta.configuration.names, sol)
    assert not fl.any()
    # amplitudes are exact under linear interpolation; phases are interpolated through their unit
    # phasors, which departs from linear-in-phase by < 1e-3 rad for these steps (< 0.3 rad)
    ratio = out / truth
    assert np.max(np.abs(np.abs(ratio) - 1)) < 1e-9
    assert np.max(np.abs(np.angle(ratio))) < 2e-3
    # a flagged solution (time point 2 of antenna A3) flags exactly the samples that use it
    h5f = tmp / "flagged.h5"
    write_independent_h5parm(h5f, list(meta.configuration.names), flag=(2, 3))
    _, fl = apply_solutions(vis.time, vis.antenna1, vis.antenna2, vis.vis, vis.frequency, POLS,
                            meta.configuration.names, solutions_from_file(h5f))
    t_flag = T0 + 2 * DT * (NTIME - 1) / 4  # solution point 2 of 5, between data times 3 and 4
    near = np.abs(vis.time - t_flag) < DT * (NTIME - 1) / 4
    uses = (vis.antenna1 == 3) | (vis.antenna2 == 3)
    np.testing.assert_array_equal(fl[:, 0, 0], uses & near)  # XX uses receptor X of both antennas


def test_corrected_image_on_the_load_path(obs):
    """The workers' load task with ``solutions`` (resident and streamed) images the source at
    its true flux; the corrupted data do not."""
    tmp, vis, truth, meta, h5 = obs
    store = tmp / "obs.store"
    grid = graphs.GridSpec(npix_x=NPIX, npix_y=NPIX, cell=CELL, epsilon=1e-6, double=True, nchan_total=NCHAN)
    chunks = [list(range(len(open_store(store).partitions)))]
    x, y = SRC_PIX
    peaks = {}
    for label, solutions in (("raw", None), ("corrected", str(h5))):
        shard = tasks.load_shard(str(store), chunks, "I", True, solutions)
        img = graphs.normalise(tasks.invert_shard(shard, grid))[0]
        peaks[label] = img[y, x]
        if solutions:
            assert np.unravel_index(np.argmax(img), img.shape) == (y, x)
            stream = tasks.StreamShard(str(store), tuple(tuple(c) for c in chunks), solutions=solutions,
                                       max_batch_samples=1)
            np.testing.assert_allclose(graphs.normalise(tasks.invert_shard(stream, grid))[0], img, atol=1e-12)
    stokes_i = FLUX * (POL_FRAC[0] + POL_FRAC[3]).real / 2
    assert abs(peaks["corrected"] - stokes_i) < 2e-3 * stokes_i, peaks
    assert abs(peaks["raw"] - stokes_i) > 0.05 * stokes_i, peaks  # the gains matter


# ---- errors --------------------------------------------------------------------------------------


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_missing_antenna_and_axis_errors(obs, tmp_path):
    _, vis, _, meta, _ = obs
    names = list(meta.configuration.names)
    h5 = tmp_path / "noant.h5"
    write_independent_h5parm(h5, names, drop_antenna="A5")
    with pytest.raises(H5parmError) as e:
        apply_solutions(vis.time, vis.antenna1, vis.antenna2, vis.vis, vis.frequency, POLS, names,
                        solutions_from_file(h5))
    msg = _one_line(e)
    assert "noant.h5" in msg and "no solutions for antenna 'A5'" in msg and "sol000/amplitude000" in msg
    h5 = tmp_path / "noaxis.h5"
    write_independent_h5parm(h5, names, drop_axis="freq")
    with pytest.raises(H5parmError) as e:
        solutions_from_file(h5)
    assert "axis 'freq' named in AXES 'time,ant,freq,pol,dir' has no dataset" in _one_line(e)
    with h5py.File(h5, "r+") as f:  # no time axis at all
        del f["sol000/phase000"]
        g = f["sol000/amplitude000"]
        g.move("time", "tim")
        for d in ("val", "weight"):
            g[d].attrs["AXES"] = b"ant,pol,freq,tim"
    with pytest.raises(H5parmError) as e:
        solutions_from_file(h5)
    assert "amplitude000: no 'time' axis (AXES is 'ant,pol,freq,tim')" in _one_line(e)
    with pytest.raises(H5parmError) as e:
        load_solutions(tmp_path / "absent.h5")
    assert "absent.h5: no such h5parm file" in _one_line(e)


def _pipeline_flags(tmp: Path) -> list[str]:
    return ["--vis", str(tmp / "obs.store"), "--size", str(NPIX), str(NPIX), "--scale", "2amin",
            "--workers", "1", "--threads-per-worker", "1", "--no-dashboard", "--no-png", "--no-tls"]


@pytest.mark.slow
def test_pipeline_apply_solutions(obs, tmp_path, env_cli):
    """``--apply-solutions`` end to end: the dirty image has the source's true flux."""
    from astropy.io import fits

    tmp, _, _, _, h5 = obs
    r = run_pipeline(tmp_path, "good", [*_pipeline_flags(tmp), "--apply-solutions", str(h5)], env_cli)
    assert r.returncode == 0, r.stderr[-3000:]
    img = fits.getdata(tmp_path / "good-dirty.fits").squeeze()
    stokes_i = FLUX * (POL_FRAC[0] + POL_FRAC[3]).real / 2
    assert abs(img[SRC_PIX[1], SRC_PIX[0]] - stokes_i) < 5e-3 * stokes_i


def test_pipeline_missing_antenna_is_one_line(obs, tmp_path, env_cli):
    """A data antenna missing from the h5parm: the workers' error reaches the user as one line,
    exit status 2 (the flag's path through settings, driver and load tasks)."""
    tmp, _, _, meta, _ = obs
    bad = tmp_path / "noant.h5"
    write_independent_h5parm(bad, list(meta.configuration.names), drop_antenna="A2")
    r = run_pipeline(tmp_path, "bad", [*_pipeline_flags(tmp), "--apply-solutions", str(bad)], env_cli)
    assert r.returncode == 2, r.stderr[-3000:]
    last = [ln for ln in r.stderr.strip().splitlines() if ln.strip()][-1]
    assert "no solutions for antenna 'A2'" in last and "Traceback" not in r.stderr, r.stderr[-3000:]


# ---- DP3's ApplyCal on our h5parm ----------------------------------------------------------------


def _dp3() -> str | None:
    """DP3: ``$ARL_DP3``, the ``dp3`` wheel's ``DP3.py`` beside this Python, or ``DP3`` on PATH."""
    beside = Path(sys.executable).parent / "DP3.py"
    return os.environ.get("ARL_DP3") or (str(beside) if beside.is_file() else None) or shutil.which("DP3")


@pytest.mark.skipif(_dp3() is None, reason="DP3 not installed (pip install 'arl_mpi[dp3]')")
def test_dp3_applycal_reads_our_h5parm(obs, tmp_path):
    """Our writer's h5parm, applied by DP3 ApplyCal (phase000 then amplitude000) to an MS of the
    corrupted data, gives back the true visibilities; the result ingests and images at the
    source's flux."""
    pytest.importorskip("casacore.tables")
    from arl_mpi.io.ingest import ingest
    from arl_mpi.io.ms import write_ms

    tmp, vis, truth, meta, _ = obs
    # the true gains on the data's own time/frequency grid, as a GainTable -> our h5parm
    tau, nu = _tau(T0 + DT * np.arange(NTIME)), _nu(FREQ)
    a, t, f, r = np.meshgrid(np.arange(NANT), tau, nu, [0, 1], indexing="ij")
    g = np.transpose(true_amp(a, t, f, r) * np.exp(1j * true_phase(a, t, f, r)), (1, 0, 2, 3))
    gt = GainTable(time=T0 + DT * np.arange(NTIME), interval=np.full(NTIME, DT), freq=FREQ,
                   antennas=np.array(meta.configuration.names), gain=g, weight=np.ones(g.shape),
                   flags=np.zeros(g.shape, bool), receptors=["X", "Y"])
    h5 = write_gaintable_h5parm(tmp_path / "ours.h5parm", gt, antenna_positions=meta.configuration.xyz)
    ms_in = write_ms(open_store(tmp / "obs.store"), tmp_path / "in.ms")
    cmd = [_dp3(), f"msin={ms_in}", f"msout={tmp_path / 'out.ms'}", "msout.datacolumn=DATA",
           "steps=[ap,aa]", "ap.type=applycal", f"ap.parmdb={h5}", "ap.correction=phase000",
           "aa.type=applycal", f"aa.parmdb={h5}", "aa.correction=amplitude000"]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    back = ingest(tmp_path / "out.ms", tmp_path / "out.store", time_partitions=1)
    from arl_mpi.io.store import read_partition

    v = read_partition(back, 0)
    order = np.lexsort((vis.antenna2, vis.antenna1, vis.time))
    order_b = np.lexsort((v.antenna2, v.antenna1, v.time))
    np.testing.assert_allclose(v.vis[order_b], truth[order], rtol=0, atol=1e-5 * FLUX)
    grid = graphs.GridSpec(npix_x=NPIX, npix_y=NPIX, cell=CELL, epsilon=1e-6, double=True, nchan_total=NCHAN)
    img = graphs.normalise(tasks.invert_shard(tasks.load_shard(str(back.path), [[0]]), grid))[0]
    stokes_i = FLUX * (POL_FRAC[0] + POL_FRAC[3]).real / 2
    assert abs(img[SRC_PIX[1], SRC_PIX[0]] - stokes_i) < 1e-4 * stokes_i

