"""Several hosts, for real: the MPI pipeline across virtual hosts (network namespaces).

:class:`netns.VirtualCluster` makes three hosts ``h0 h1 h2`` on a private bridge (own
addresses, host names, /etc/hosts and scratch disks; see ``tests/cluster/netns.py``). MPICH's hydra
``mpiexec`` runs on ``h0`` and starts its proxies on the other hosts through the cluster's
ssh-like launcher, exactly as it would over ssh on a real cluster:

* ranks 0 (Dask scheduler) and 1 (driver) on ``h0``, rank 2 on ``h1``, rank 3 on ``h2``;
* ``--interface arl0`` (the namespace's veth), TLS on (the default), ``--scratch`` one path
  that is a different directory on each host.

The same pipeline command is also run single-host (``mpiexec -n 4``, ``--interface lo``); the
FITS images of both runs must agree to 1e-6 of the peak. A worker preload (a script in the
test's directory, named by ``DASK_DISTRIBUTED__WORKER__PRELOAD``) records each worker's host
name, listening address, scheduler address and local directory: the workers must be on
``h1``/``h2`` with addresses on the bridge's subnet, talking to the scheduler at ``h0``'s
address, with their scratch on their own host. The hosts' interface counters show that the
data crossed the bridge. ``test_sbatch_two_nodes`` runs a SLURM on the virtual hosts
(slurmctld on ``h0``, a slurmd on ``h1`` and on ``h2``) and submits the batch template with
``--nodes=2``. Namespaces can only be made as root: elsewhere the tests skip,
saying why (CI runs as root, so there they run).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from helpers import MPIEXEC, PYTHON, REPO, cli_env, pipeline_command, run_or_dump, simulate_store
from netns import NetnsUnavailable, VirtualCluster, unavailable_reason
from slurm_cluster import BINARIES, SlurmCluster, SlurmUnavailable, slurm_conf
from test_launchers import CYCLES, assert_images_match_local_run, assert_ranks_gone
from test_reliability import _rank_pids, kill_and_collect, start_until_checkpoint

pytestmark = [pytest.mark.multihost, pytest.mark.mpi]

RANKS = {"h0": 2, "h1": 1, "h2": 1}  # scheduler + driver on h0, one worker on each other host
ARGS = ["--size", "128", "128", "--scale", "60asec", "--niter", "20", "--time-partitions", "4",
        "--no-png", "--no-dashboard"]  # fmt: skip
KINDS = ("dirty", "psf", "model", "residual", "image")
RTOL = 1e-6  # of the single-host image's peak

PROBE = '''"""Worker preload: record where this worker runs (one JSON file per worker)."""
import json, os, socket, sys
from pathlib import Path


def dask_setup(worker):
    out = Path(os.environ["ARL_TEST_PROBE_DIR"]) / f"worker-{os.getpid()}-{socket.gethostname()}.json"
    out.write_text(json.dumps({"hostname": socket.gethostname(), "address": worker.address,
                               "scheduler": worker.scheduler.address,
                               "local_directory": worker.local_directory}))
'''


def _root_links() -> list[str]:
    r = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
    return sorted(ln.split(":")[1].strip() for ln in r.stdout.splitlines())


@pytest.fixture(scope="module")
def vcluster(tmp_path_factory):
    """Three virtual hosts; the root namespace's interfaces are the same before and after."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"no virtual hosts: {reason}")
    before = _root_links()
    vc = VirtualCluster(tmp_path_factory.mktemp("vhosts"), n=3)
    try:
        vc.__enter__()  # removes what it made before raising
    except NetnsUnavailable as e:  # e.g. a kernel without veth or bridge support
        pytest.skip(f"no virtual hosts: {e}")
    try:
        assert _root_links() == before, "the virtual hosts must not add interfaces to the root namespace"
        yield vc
    finally:
        vc.close()
    assert vc.exists() == [], "namespaces left behind"
    assert _root_links() == before


def _env(tmp: Path, probe_dir: Path) -> dict:
    probe_dir.mkdir()
    script = tmp / "arl_test_probe.py"
    script.write_text(PROBE)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    for k in ("ARL_DASK_SCHEDULER", "ARL_DASK_SCHEDULER_FILE", "ARL_SCRATCH"):
        env.pop(k, None)
    env["DASK_DISTRIBUTED__WORKER__PRELOAD"] = json.dumps([str(script)])
    env["ARL_TEST_PROBE_DIR"] = str(probe_dir)
    return env


def _workers(probe_dir: Path) -> list[dict]:
    return sorted((json.loads(p.read_text()) for p in probe_dir.glob("worker-*.json")),
                  key=lambda w: w["hostname"])  # fmt: skip


def _scheduler_address(stderr: str) -> str:
    m = re.search(r"MPI cluster up: scheduler on rank 0 \((\S+)\)", stderr)
    assert m, f"no 'MPI cluster up' line in the driver's log:\n{stderr[-3000:]}"
    return m.group(1)


def _host_of(address: str) -> str:
    """``tls://10.231.7.2:4567`` -> ``10.231.7.2``."""
    return address.split("://", 1)[-1].rsplit(":", 1)[0]


def test_virtual_hosts_are_separate_hosts(vcluster):
    """Own host name, one interface with its own address, no route beyond the bridge, and
    TCP between two hosts over the bridge."""
    net = ipaddress.ip_network(f"{vcluster.hosts[0].address}/24", strict=False)
    for h in vcluster.hosts:
        out = {}
        for key, cmd in (("name", ["hostname"]), ("addr", ["ip", "-o", "-4", "addr", "show"]),
                         ("route", ["ip", "-4", "route", "show"])):  # fmt: skip
            r = vcluster.run_in(h.name, cmd)
            assert r.returncode == 0, r.stderr
            out[key] = r.stdout
        assert out["name"].strip() == h.name
        assert sorted(re.findall(r"inet (\S+)/\d+", out["addr"])) == sorted(["127.0.0.1", h.address])
        # one route, the bridge's subnet: no default route, nothing beyond the virtual hosts
        assert out["route"].split() == [str(net), "dev", vcluster.iface, "proto", "kernel",
                                        "scope", "link", "src", h.address], out["route"]  # fmt: skip
    server = ("import socket; s = socket.socket(); s.bind(('0.0.0.0', 0)); s.listen();"
              "print(s.getsockname()[1], flush=True); c, a = s.accept(); print(a[0], socket.gethostname(),"
              " c.recv(10).decode(), flush=True)")  # fmt: skip
    p = subprocess.Popen(vcluster.command("h1", [PYTHON, "-c", server]), stdout=subprocess.PIPE, text=True)
    try:
        port = int(p.stdout.readline())
        client = f"import socket; socket.create_connection(('h1', {port}), timeout=10).sendall(b'hello')"
        r = vcluster.run_in("h2", [PYTHON, "-c", client])
        assert r.returncode == 0, r.stderr
        peer, name, msg = p.stdout.readline().split()
    finally:
        p.kill()
        p.wait(timeout=10)
    assert (peer, name, msg) == (vcluster.host("h2").address, "h1", "hello")


def test_two_hosts_images_identical_to_single_host(vcluster, tmp_path):
    # ---- single host: plain mpiexec -n 4 on loopback ---------------------------------------
    single = tmp_path / "single"
    single.mkdir()
    env1 = _env(single, single / "probe")
    cmd1 = pipeline_command(single, "run", [*ARGS, "--interface", "lo", "--scratch", str(single / "scratch")],
                            mpi_ranks=4)  # fmt: skip
    r1 = run_or_dump(cmd1, timeout=300, env=env1, cwd=single)
    assert r1.returncode == 0, r1.stderr[-6000:]
    assert _host_of(_scheduler_address(r1.stderr)) == "127.0.0.1"

    # ---- three hosts: mpiexec on h0, proxies on h1/h2 through the launcher ------------------
    multi = tmp_path / "multi"
    multi.mkdir()
    env = _env(multi, multi / "probe")
    env["UCX_NET_DEVICES"] = vcluster.iface  # MPICH's own rank-to-rank traffic: the veth too
    env["FI_TCP_IFACE"] = vcluster.iface
    before = {h.name: vcluster.iface_bytes(h.name) for h in vcluster.hosts}
    mpi = [MPIEXEC, *vcluster.hydra_args(RANKS), PYTHON, "-m", "arl_mpi.pipeline",
           "--name", str(multi / "run"), *ARGS, "--interface", vcluster.iface,
           "--scratch", str(vcluster.scratch)]  # fmt: skip
    r = run_or_dump(vcluster.command("h0", mpi), timeout=300, env=env, cwd=multi)
    assert r.returncode == 0, r.stderr[-6000:]

    h0, h1, h2 = vcluster.hosts
    summary = json.loads((multi / "run-summary.json").read_text())
    assert summary["workers"] == 2, summary["workers"]
    sched = _scheduler_address(r.stderr)
    assert sched.startswith("tls://") and _host_of(sched) == h0.address, sched

    workers = _workers(multi / "probe")
    assert [w["hostname"] for w in workers] == ["h1", "h2"], workers
    for w, h in zip(workers, (h1, h2), strict=True):
        assert w["address"].startswith("tls://") and _host_of(w["address"]) == h.address, w
        assert w["scheduler"] == sched, w
        assert Path(w["local_directory"]).is_relative_to(vcluster.scratch), w
    # each host's scratch is its own directory: h0 (scheduler, driver), h1 and h2 (workers)
    # each made their Dask scratch there; the shared path itself was never written
    for h in vcluster.hosts:
        assert (h.scratch / "dask-scratch-space").is_dir(), (h.name, list(h.scratch.iterdir()))
    assert list(vcluster.scratch.iterdir()) == []
    # the workers' traffic crossed the bridge (nothing else runs on h1/h2): both ways, and
    # more than one 128x128 float64 image in all (the volume depends on how the pipeline
    # shards its work: 0.4-15 MB per worker host seen)
    for h in (h1, h2):
        rx, tx = (a - b for a, b in zip(vcluster.iface_bytes(h.name), before[h.name], strict=True))
        assert rx > 10_000 and tx > 10_000 and rx + tx > 128 * 128 * 8, (h.name, rx, tx)

    # ---- same images --------------------------------------------------------------------
    for kind in KINDS:
        a = fits.getdata(single / f"run-{kind}.fits").astype(np.float64)
        b = fits.getdata(multi / f"run-{kind}.fits").astype(np.float64)
        assert a.shape == b.shape, kind
        peak = float(np.max(np.abs(a)))
        assert peak > 0, kind
        assert float(np.max(np.abs(a - b))) <= RTOL * peak, kind
    s1 = json.loads((single / "run-summary.json").read_text())
    assert s1["workers"] == 2 and s1["total_iterations"] == summary["total_iterations"]


# ---- SLURM across the virtual hosts -------------------------------------------------------
#: Debian SLURM 22.05's pmi2 plugin, garbling MPICH's PMI requests across nodes (docs/cluster.md).
PMI2_GARBLED = "mpi/pmi2: value not properly terminated"


class VirtualSlurm(SlurmCluster):
    """slurmctld on ``h0``, one ``slurmd -N h<i>`` on each other host (``NodeAddr`` = the
    host's address); munged runs on the machine (its socket is a file every host can open).
    Client commands (sbatch, scontrol) run on ``h0``: nothing else can reach the controller."""

    def __init__(self, root: Path, vc: VirtualCluster, cpus: int = 4) -> None:
        super().__init__(root, cpus=cpus)
        self.vc = vc
        self.nodes = [h for h in vc.hosts if h.name != "h0"]

    def start(self, timeout: float = 60.0) -> VirtualSlurm:
        missing = [b for b in BINARIES if not shutil.which(b) and not Path("/usr/sbin", b).exists()]
        if missing:
            raise SlurmUnavailable(f"SLURM/munge binaries not installed: {', '.join(missing)}")
        r = self.root
        r.mkdir(parents=True, exist_ok=True)
        os.chmod(r, 0o755)
        for d in ("munge", "state", "spool", "log", "run"):
            (r / d).mkdir(parents=True, exist_ok=True)
        self._start_munge()
        mem_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.8)
        mem_mb //= len(self.nodes)
        h0 = self.vc.host("h0")
        nodes = "".join(f"NodeName={h.name} NodeAddr={h.address} CPUs={self.cpus} "
                        f"RealMemory={mem_mb} State=UNKNOWN\n" for h in self.nodes)  # fmt: skip
        conf = r / "slurm.conf"
        conf.write_text(slurm_conf(r, "arlvirt", f"h0({h0.address})", 6817, 6818, self.first_job_id, nodes,
                                   ",".join(h.name for h in self.nodes), per_node=True))
        self.env["SLURM_CONF"] = str(conf)
        daemons = [("h0", "slurmctld", [])] + [(h.name, "slurmd", ["-N", h.name]) for h in self.nodes]
        for host, daemon, extra in daemons:
            exe = shutil.which(daemon) or f"/usr/sbin/{daemon}"
            self.procs.append(subprocess.Popen(
                self.vc.command(host, [exe, "-D", "-f", str(conf), *extra]), env=self.env,
                stdout=open(r / "log" / f"{daemon}-{host}.out", "w"), stderr=subprocess.STDOUT,
                start_new_session=True))  # fmt: skip
            time.sleep(0.3)
        t_end = time.monotonic() + timeout
        states: list[str] = []
        while time.monotonic() < t_end:
            for p in self.procs:
                if p.poll() is not None:
                    self.stop()
                    raise SlurmUnavailable(f"a SLURM daemon exited ({p.args}): {self._tail()}")
            q = self.run(["sinfo", "-h", "-N", "-o", "%T"], timeout=30)
            states = q.stdout.split()
            if len(states) == len(self.nodes) and all(s.startswith("idle") for s in states):
                return self
            time.sleep(0.5)
        self.stop()
        raise SlurmUnavailable(f"SLURM nodes not idle after {timeout:.0f} s ({states}): {self._tail()}")

    def run(self, args: list[str], timeout: float = 300, **kw) -> subprocess.CompletedProcess:
        """A SLURM client command, run on ``h0``."""
        env = dict(self.env, **kw.pop("env", {}))
        return subprocess.run(self.vc.command("h0", args), env=env, capture_output=True, text=True,
                              timeout=timeout, **kw)  # fmt: skip


@pytest.mark.slurm
@contextlib.contextmanager
def two_node_slurm(vcluster):
    """A started :class:`VirtualSlurm` on ``vcluster`` (the test is skipped, saying why, where it
    cannot start), stopped and removed afterwards."""
    # munged runs as user munge: its directory must not be under pytest's 0700 tmp tree
    sroot = Path(tempfile.mkdtemp(prefix="arl-vslurm-"))
    slurm = VirtualSlurm(sroot, vcluster)
    try:
        slurm.start()
    except (SlurmUnavailable, OSError) as e:
        shutil.rmtree(sroot, ignore_errors=True)
        pytest.skip(f"cannot start a two-node SLURM cluster here: {e}")
    try:
        yield slurm
    finally:
        slurm.stop()
        shutil.rmtree(sroot, ignore_errors=True)


def test_sbatch_two_nodes(vcluster, tmp_path):
    """``sbatch --nodes=2 launch/slurm/arl_mpi.sbatch``: scheduler and driver on the first
    node, the workers on the second, over the virtual network with TLS."""
    with two_node_slurm(vcluster) as slurm:
        jobdir = tmp_path / "job"
        jobdir.mkdir()
        os.chmod(tmp_path, 0o755)
        env = _env(jobdir, jobdir / "probe")
        env.update({"ARL_VENV": str(Path(PYTHON).parent.parent), "ARL_OUTPUT": str(jobdir / "out"),
                    "ARL_HOME": str(REPO), "ARL_SCRATCH": str(vcluster.scratch / "job"),
                    "UCX_NET_DEVICES": vcluster.iface, "FI_TCP_IFACE": vcluster.iface,
                    "PATH": f"{Path(PYTHON).parent}{os.pathsep}{env['PATH']}"})  # fmt: skip
        # One retry, only when the job step failed to launch (a slurmstepd error, no summary):
        # seen once in CI on this virtual two-node cluster and never locally; a failure of the
        # pipeline itself fails both tries. The first try's job log is kept beside the test.
        for attempt in (1, 2):
            try:
                r = slurm.sbatch_wait(
                    ["--nodes=2", "--ntasks=4", "--ntasks-per-node=2", "--mem-per-cpu=1G",
                     str(REPO / "launch/slurm/arl_mpi.sbatch"), *ARGS, "--interface", vcluster.iface],
                    cwd=jobdir, env=env, timeout=300)  # fmt: skip
            except AssertionError as e:  # the job hung: ranks stuck in MPI_Init after garbled PMI requests
                if PMI2_GARBLED in str(e):
                    pytest.skip(f"SLURM's pmi2 plugin garbled MPICH's PMI requests ({PMI2_GARBLED}); the job "
                                "step hung in MPI_Init: not an arl_mpi failure")
                raise
            job = r.stdout.strip().split(";")[0]
            state = slurm.job_state(job)
            log = "".join(p.read_text() for p in jobdir.glob("arl_mpi-*.err"))
            launch_failed = r.returncode != 0 and "slurmstepd" in log and "Traceback" not in log \
                and not (jobdir / "out" / "image-summary.json").exists()
            if attempt == 2 or not launch_failed:
                break
            (tmp_path / "first-try.log").write_text(log + "\n--- daemons ---\n" + slurm._tail())
            warnings.warn(f"two-node sbatch: job step failed to launch, retrying once: "
                          f"{[ln for ln in log.splitlines() if 'slurmstepd' in ln][:5]}", stacklevel=1)
            for f in [*jobdir.glob("arl_mpi-*"), *(jobdir / "probe").glob("*"), *(jobdir / "out").glob("*")]:
                if f.is_file():
                    f.unlink()
        if r.returncode != 0 and launch_failed and PMI2_GARBLED in log:
            # Debian SLURM 22.05's pmi2 plugin garbling MPICH's PMI requests across nodes (docs/cluster.md):
            # a bug outside arl_mpi, seen in 2 of 3 CI runs despite MPIR_CVAR_PMI_VERSION=1, never locally.
            pytest.skip("SLURM's pmi2 plugin garbled MPICH's PMI requests on both tries (mpi/pmi2: value not "
                        "properly terminated): the job step never started; not an arl_mpi failure")
        assert r.returncode == 0, (r.stderr, state, log[-4000:], slurm._tail())
        assert state["JobState"] == "COMPLETED" and state["NodeList"] == "h[1-2]", state
        summary = json.loads((jobdir / "out" / "image-summary.json").read_text())
        assert summary["workers"] == 2
        h1, h2 = slurm.nodes
        sched = _scheduler_address(log)
        assert sched.startswith("tls://") and _host_of(sched) == h1.address, sched
        workers = _workers(jobdir / "probe")
        assert [w["hostname"] for w in workers] == ["h2", "h2"], workers
        for w in workers:
            assert _host_of(w["address"]) == h2.address and w["scheduler"] == sched, w
            assert Path(w["local_directory"]).is_relative_to(vcluster.scratch / "job"), w
        assert (h2.scratch / "job" / "dask-scratch-space").is_dir()
        for kind in KINDS:
            assert (jobdir / "out" / f"image-{kind}.fits").is_file(), kind


@pytest.mark.slurm
def test_srun_no_kill_worker_rank_lost_completes_on_the_rest(vcluster, tmp_path):
    """``srun --no-kill --kill-on-bad-exit=0`` over two nodes: ranks 0-2 (scheduler, driver, a
    worker) on ``h1``, worker rank 3 on ``h2``, which is ``SIGKILL``ed once the first checkpoint
    exists. SLURM keeps the other tasks; the run completes on the remaining worker (the lost
    partitions re-read from the store there) with the images of an undisturbed local run (1e-6
    of the peak); the surviving ranks exit 0 without a traceback, and every rank is gone (a
    step still running 120 s after the kill fails the test as a hang)."""
    with two_node_slurm(vcluster) as slurm:
        os.chmod(tmp_path, 0o755)
        env = cli_env(tmp_path)
        env.pop("ARL_SCRATCH")
        (tmp_path / "hosts").write_text("h1\nh1\nh1\nh2\n")  # srun -m arbitrary: rank i on line i
        # MPICH's PMI-1 wire protocol across nodes (as the batch template); its ofi netmod, whose
        # addresses are short: with the default (UCX) netmod the step hung in MPI_Init in 2 of 3
        # runs here, SLURM's pmi2 plugin garbling the long address values (PMI2_GARBLED)
        env.update({"SLURM_CONF": slurm.env["SLURM_CONF"], "SLURM_HOSTFILE": str(tmp_path / "hosts"),
                    "MPIR_CVAR_PMI_VERSION": "1", "MPIR_CVAR_CH4_NETMOD": "ofi", "FI_PROVIDER": "tcp",
                    "FI_TCP_IFACE": vcluster.iface, "PATH": f"{Path(PYTHON).parent}{os.pathsep}{env['PATH']}"})
        store = simulate_store(tmp_path / "obs.store", ["--time-partitions", "2"])
        args = ["--vis", str(store), *CYCLES]
        srun = ["srun", "-n", "4", "-m", "arbitrary", "--mpi=pmi2", "--no-kill", "--kill-on-bad-exit=0",
                PYTHON, "-m", "arl_mpi.pipeline", "--name", str(tmp_path / "run"), *args,
                "--interface", vcluster.iface, "--scratch", str(vcluster.scratch / "job")]  # fmt: skip
        p, ck = start_until_checkpoint(vcluster.command("h0", srun), tmp_path, env)
        if not ck.exists() and PMI2_GARBLED in slurm._tail():
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            pytest.skip(f"SLURM's pmi2 plugin garbled MPICH's PMI requests ({PMI2_GARBLED}): not an arl_mpi failure")
        assert p.poll() is None and ck.exists(), "the run ended before its first checkpoint"
        steps = slurm.step_daemons()  # one slurmstepd per node, the tasks' parents
        launched = [q for s in steps for q in s.children(recursive=True) if "python" in q.name()]
        assert len(launched) == 4, (steps, launched)
        victims = [v for s in steps for v in _rank_pids(3, s.pid, "SLURM_PROCID")]
        assert len(victims) == 1, victims
        t_kill = time.monotonic()
        out, err = kill_and_collect(p, victims[0], timeout=120)
        ended_after = time.monotonic() - t_kill
        text = out + err
        print(f"srun exit {p.returncode}, {ended_after:.1f} s after the kill")  # shown with pytest -s
        assert "task 3: Killed" in text, text[-4000:]  # srun: "error: h2: task 3: Killed"
        assert "Exited with exit code" not in text, text[-4000:]  # the other tasks exited 0
        assert "Traceback" not in text, text[-4000:]
        assert "worker rank(s) 3 left the job during the run" in text, text[-4000:]
        assert_ranks_gone(launched, ended_after)
        assert json.loads((tmp_path / "run-summary.json").read_text())["workers"] == 1  # finished on one
        assert_images_match_local_run(tmp_path, "run", args, env)


# ---- workers that cannot reach the scheduler ------------------------------------------------
#: Flags of the unreachable-scheduler runs: a small job, a short --cluster-timeout.
CUT_TIMEOUT = 8


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two virtual hosts: ``h0`` for scheduler and driver, ``h1`` for the workers."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"no virtual hosts: {reason}")
    vc = VirtualCluster(tmp_path_factory.mktemp("pair"), n=2)
    try:
        vc.__enter__()
    except NetnsUnavailable as e:
        pytest.skip(f"no virtual hosts: {e}")
    try:
        yield vc
    finally:
        vc.close()
    assert vc.exists() == [], "namespaces left behind"


def _link(vc: VirtualCluster, host: str, state: str) -> None:
    subprocess.run(["ip", "-n", vc.host(host).netns, "link", "set", vc.iface, state], check=True, timeout=30)


def _split_job(vc: VirtualCluster, tmp: Path, timeout: float, log_level: str) -> list[str]:
    """``mpiexec -n 2 <on h0> : -n 2 <on h1>``: ranks 0 (scheduler) and 1 (driver) in ``h0``'s
    network namespace, ranks 2-3 (workers) in ``h1``'s. Only the network is split: the ranks
    share this machine, so MPI itself (shared memory, hydra's local proxy) still works while the
    Dask traffic must cross the hosts' link."""
    args = [PYTHON, "-m", "arl_mpi.pipeline", "--name", str(tmp / "run"), "--size", "64", "64", "--scale",
            "120asec", "--niter", "10", "--time-partitions", "2", "--no-png", "--no-dashboard", "--interface",
            vc.iface, "--cluster-timeout", str(timeout), "--log-level", log_level, "--scratch", str(tmp / "scr")]
    part = [["-n", "2", "nsenter", f"--net=/run/netns/{vc.host(h).netns}", *args] for h in ("h0", "h1")]
    return [MPIEXEC, *part[0], ":", *part[1]]


def _check_one_line_ending(out: str, rc: int, expected: str, limit: int) -> list[str]:
    """No traceback anywhere, exit 2, at most ``limit`` lines, the last one matching ``expected``
    and saying what to check."""
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert "Traceback" not in out, out[-6000:]
    assert rc == 2, out[-6000:]
    assert len(lines) <= limit, "\n".join(lines)
    last = lines[-1]
    assert re.fullmatch(expected, last.split(" check that ")[0]), last
    for needed in ("--interface", "firewall", "the workers' own log lines"):
        assert needed in last, (needed, last)
    return lines


def test_workers_cannot_reach_scheduler_one_line(pair, tmp_path):
    """The workers' host has lost its link: after --cluster-timeout the job ends with one line
    naming the scheduler's address, 0 of 2 workers and what to check; exit 2 on every rank,
    no traceback; each worker rank says once why it could not join."""
    h0 = pair.host("h0")
    _link(pair, "h1", "down")
    try:
        env = cli_env(tmp_path)
        p = subprocess.run(_split_job(pair, tmp_path, 5, "WARNING"), capture_output=True, text=True,
                           env=env, cwd=tmp_path, timeout=180)  # fmt: skip
    finally:
        _link(pair, "h1", "up")
    out = p.stdout + p.stderr
    addr = re.escape(f"tls://{h0.address}:")
    lines = _check_one_line_ending(
        out, p.returncode,
        rf"arl_mpi\.pipeline: error: only 0 of 2 Dask workers reached the scheduler at {addr}\d+ within 5 s "
        r"\(--cluster-timeout; --interface arl0\):", limit=3)  # fmt: skip
    workers = [ln for ln in lines if "worker] ERROR" in ln]
    assert sorted(ln.split("[rank ")[1][:1] for ln in workers) == ["2", "3"], lines
    for ln in workers:
        assert re.search(rf"could not join the Dask scheduler at {addr}\d+ within 5 s \(--interface arl0\): "
                         r"OSError: \[Errno 101\] Network is unreachable$", ln), ln  # fmt: skip
    assert pair.pids() == [] and not (tmp_path / "run-image.fits").exists()


def test_workers_cut_off_later_one_line(pair, tmp_path):
    """The workers arrive, then their host loses its link: the scheduler drops them (no
    heartbeat, a dead connection), and after --cluster-timeout without a worker the job ends
    with one line naming the scheduler and what to check; exit 2, no traceback on any rank."""
    h0 = pair.host("h0")
    env = cli_env(tmp_path)
    p = subprocess.Popen(_split_job(pair, tmp_path, CUT_TIMEOUT, "INFO"), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)  # fmt: skip
    lines, cut = [], False
    try:
        t_end = time.monotonic() + 180
        for ln in p.stdout:
            lines.append(ln)
            if not cut and "MPI cluster up" in ln:
                _link(pair, "h1", "down")
                cut = True
            assert time.monotonic() < t_end, "".join(lines)[-6000:]
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        _link(pair, "h1", "up")
    out = "".join(lines)
    assert cut, out[-6000:]
    # lines beside the one-line error: the INFO lines of the start (cluster up, simulation) and
    # the scheduler's notes that it removed the silent workers (at most three)
    noisy = [ln for ln in lines if ln.strip() and " INFO " not in ln]
    _check_one_line_ending(
        out, p.returncode,
        rf"arl_mpi\.pipeline: error: the Dask cluster has had no worker for {CUT_TIMEOUT} s: all 2 workers left the "
        rf"scheduler at {re.escape(f'tls://{h0.address}:')}\d+ and none came back \(.*",
        limit=12)  # fmt: skip
    assert len(noisy) <= 4, "".join(noisy)
    assert pair.pids() == [] and not (tmp_path / "run-image.fits").exists()
