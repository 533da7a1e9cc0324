"""A throw-away single-node SLURM cluster (Debian's slurm-wlm + munge) for the test suite.

Everything lives under one temporary directory: the munge key, socket and logs, the
slurm.conf, state, spool and pid files. No systemd, no cgroups
(``ProctrackType=proctrack/linuxproc``, ``TaskPlugin=task/none``); the node advertises more
CPUs than the machine has (``SlurmdParameters=config_overrides``) so that a 4-rank job fits
on 2 cores. Job ids start at a random number (see ``first_job_id``). Daemons are stopped by PID.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
            "BOOT_FAIL", "DEADLINE", "PREEMPTED"}
BINARIES = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "sinfo")


class SlurmUnavailable(RuntimeError):
    """SLURM cannot be started here (the reason is the message)."""


def slurm_conf(r: Path, cluster: str, ctl_host: str, ctl_port: int, d_port: int, first_job_id: int, nodes: str,
               partition_nodes: str, per_node: bool = False) -> str:
    """A slurm.conf for a throw-away test cluster under ``r`` (munge socket, state, logs there).

    ``nodes`` are the NodeName lines; ``per_node`` keeps one spool, PID and log file per slurmd
    (several slurmd on one machine, as the virtual hosts of the multi-host tests)."""
    n = "-%n" if per_node else ""
    return f"""ClusterName={cluster}
SlurmctldHost={ctl_host}
SlurmctldPort={ctl_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={r}/munge/munge.socket.2
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool{"/%n" if per_node else ""}
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd{n}.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd{n}.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmi2
ReturnToService=2
SlurmdParameters=config_overrides
MinJobAge=3600
FirstJobId={first_job_id}
KillWait=5
InactiveLimit=0
SlurmdTimeout=30
{nodes}PartitionName=test Nodes={partition_nodes} Default=YES MaxTime=30 State=UP
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmCluster:
    """Start with :meth:`start`, stop with :meth:`stop`; :attr:`env` for the client commands."""

    def __init__(self, root: Path, cpus: int = 8) -> None:
        self.root = Path(root)
        self.cpus = cpus
        # Job ids start at a random number, not 1: MPICH names its shared-memory segment after
        # the PMI job name, which srun makes "JOBID.STEPID", and opens an existing one. A
        # segment left in /dev/shm by a killed job "1.0" of an earlier throw-away cluster made
        # the next cluster's job 1 hang in MPI_Init (seen in CI).
        self.first_job_id = random.randint(10_000, 60_000_000)
        self.pids: list[int] = []
        self.procs: list[subprocess.Popen] = []
        self.env = dict(os.environ)

    # -- set-up ----------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> SlurmCluster:
        missing = [b for b in BINARIES if not shutil.which(b) and not Path("/usr/sbin", b).exists()]
        if missing:
            raise SlurmUnavailable(
                f"SLURM/munge binaries not installed: {', '.join(missing)} "
                "(apt-get install slurm-wlm munge)"
            )
        if os.geteuid() != 0:
            raise SlurmUnavailable("starting slurmd needs root")
        r = self.root
        r.mkdir(parents=True, exist_ok=True)
        os.chmod(r, 0o755)  # munged (as user munge) must be able to reach its socket directory
        for d in ("munge", "state", "spool", "log", "run", "jobs"):
            (r / d).mkdir(parents=True, exist_ok=True)
        self._start_munge()
        host = socket.gethostname().split(".")[0]
        mem_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.8)
        conf = r / "slurm.conf"
        conf.write_text(slurm_conf(r, "arltest", host, _free_port(), _free_port(), self.first_job_id,
                                   f"NodeName={host} CPUs={self.cpus} RealMemory={mem_mb} State=UNKNOWN\n", host))
        self.env["SLURM_CONF"] = str(conf)
        for daemon in ("slurmctld", "slurmd"):
            p = subprocess.Popen(
                [shutil.which(daemon) or f"/usr/sbin/{daemon}", "-D", "-f", str(conf)],
                env=self.env,
                stdout=open(r / "log" / f"{daemon}.out", "w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.procs.append(p)
            time.sleep(0.5)
        t_end = time.monotonic() + timeout
        state = ""
        while time.monotonic() < t_end:
            for p in self.procs:
                if p.poll() is not None:
                    self.stop()
                    raise SlurmUnavailable(f"a SLURM daemon exited ({p.args[0]}): {self._tail()}")
            q = subprocess.run(
                ["sinfo", "-h", "-o", "%T"], env=self.env, capture_output=True, text=True
            )
            state = q.stdout.strip()
            if state.startswith("idle"):
                return self
            time.sleep(0.5)
        self.stop()
        raise SlurmUnavailable(
            f"SLURM node not idle after {timeout:.0f} s (state '{state}'): {self._tail()}"
        )

    def _start_munge(self) -> None:
        d = self.root / "munge"
        key = d / "munge.key"
        subprocess.run(
            ["mungekey", "--create", "--keyfile", str(key), "--force"],
            check=True,
            capture_output=True,
        )
        munge = pwd.getpwnam("munge") if _has_user("munge") else None
        if munge:
            os.chown(d, munge.pw_uid, munge.pw_gid)
            os.chown(key, munge.pw_uid, munge.pw_gid)
        os.chmod(d, 0o755)
        os.chmod(key, 0o600)
        args = [
            shutil.which("munged") or "/usr/sbin/munged",
            "--foreground",
            f"--socket={d}/munge.socket.2",
            f"--key-file={key}",
            f"--pid-file={d}/munged.pid",
            f"--log-file={d}/munged.log",
            f"--seed-file={d}/munged.seed",
            "--force",
        ]
        preexec = None
        if munge:

            def preexec():  # run as the munge user, as munged expects
                os.setsid()
                os.setgid(munge.pw_gid)
                os.setuid(munge.pw_uid)

        p = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=open(d / "munged.err", "w"),
            preexec_fn=preexec,
            start_new_session=preexec is None,
        )
        self.procs.append(p)
        t_end = time.monotonic() + 10
        while not (d / "munge.socket.2").exists() and time.monotonic() < t_end:
            if p.poll() is not None:
                raise SlurmUnavailable(f"munged exited: {(d / 'munged.err').read_text()[-500:]}")
            time.sleep(0.1)

    def _tail(self) -> str:
        out = []
        for f in sorted((self.root / "log").glob("*")):
            out.append(f"{f.name}: " + " | ".join(f.read_text(errors="replace").splitlines()[-3:]))
        return "; ".join(out)[-1500:]

    # -- use ---------------------------------------------------------------------------------
    def run(self, args: list[str], timeout: float = 300, **kw) -> subprocess.CompletedProcess:
        """Run a SLURM client command with this cluster's SLURM_CONF."""
        env = dict(self.env, **kw.pop("env", {}))
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, **kw)

    def sbatch_wait(self, args: list[str], cwd: Path, env: dict, timeout: float) -> subprocess.CompletedProcess:
        """``sbatch --parsable ARGS`` from ``cwd``, then wait for the job to end.

        Returns a CompletedProcess whose stdout is the job id and whose returncode is 0 when
        the job COMPLETED. A job still running after ``timeout`` s is sent SIGUSR1 (every
        arl_mpi rank prints its Python stacks to the job's .err), cancelled, and the test
        fails with the job's state and the end of its logs.
        """
        r = self.run(["sbatch", "--parsable", *args], cwd=cwd, env=env, timeout=60)
        if r.returncode != 0:
            return r
        job = r.stdout.strip().split(";")[0]
        t_end = time.monotonic() + timeout
        state: dict[str, str] = {}
        while time.monotonic() < t_end:
            state = self.job_state(job)
            if state.get("JobState") in TERMINAL:
                ok = state["JobState"] == "COMPLETED"
                return subprocess.CompletedProcess(args, 0 if ok else 1, job, r.stderr)
            time.sleep(1)
        self.run(["scancel", "--signal=USR1", job])
        time.sleep(5)
        self.run(["scancel", job])
        time.sleep(2)
        files = sorted(Path(cwd).glob("*.out")) + sorted(Path(cwd).glob("*.err"))
        logs = "".join(f"--- {p.name} ---\n{p.read_text()[-8000:]}\n" for p in files)
        raise AssertionError(f"SLURM job {job} still {state.get('JobState')} after {timeout:.0f} s "
                             f"(state: {state})\n{logs}\n--- slurmd ---\n{self._tail()}")

    def job_state(self, job_id: str) -> dict[str, str]:
        """``JobState`` and ``ExitCode`` (and the rest) from ``scontrol show job``."""
        r = self.run(["scontrol", "show", "job", "-o", job_id])
        fields = {}
        for tok in r.stdout.split():
            k, _, v = tok.partition("=")
            fields[k] = v
        return fields

    def step_daemons(self) -> list:
        """The ``slurmstepd`` processes (psutil) of this cluster's running job steps (``slurmstepd:
        [JOB.STEP]`` with a numeric STEP, for the jobs ``squeue`` lists): the parents of the
        steps' tasks, which are not descendants of ``srun``."""
        import psutil

        jobs = self.run(["squeue", "-h", "-o", "%A"], timeout=30).stdout.split()
        found = []
        for proc in psutil.process_iter(["name", "cmdline"]):
            line = " ".join(proc.info["cmdline"] or [])
            if proc.info["name"] == "slurmstepd" and any(f"[{j}." in line for j in jobs):
                step = line.split("[", 1)[1].split(".", 1)[1].rstrip("]")
                if step.isdigit():
                    found.append(proc)
        return found

    def stop(self) -> None:
        """Stop the daemons by PID (newest first)."""
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs.clear()
        # the daemons themselves (a launcher such as the virtual hosts' shim may end before them):
        # wait until they have written their state and exited, so the root can be removed
        import psutil

        conf = str(self.root / "slurm.conf")
        t_end = time.monotonic() + 15
        while left := [q for q in psutil.process_iter(["cmdline", "status"])
                       if conf in (q.info["cmdline"] or []) and q.info["status"] != psutil.STATUS_ZOMBIE]:  # fmt: skip
            if time.monotonic() > t_end:
                for q in left:
                    with contextlib.suppress(psutil.Error):
                        q.kill()
                break
            time.sleep(0.2)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False
