"""Virtual hosts for the test suite: Linux network namespaces on a private bridge.

:class:`VirtualCluster` makes ``n`` hosts ``h0 … h{n-1}`` on this machine, each one a network
namespace ``arl-h{i}-<suffix>`` with a single interface (``arl0`` by default, the same name on
every host, as on a real cluster where ``--interface ib0`` names the same device on each
node) that has the address ``10.231.X.(i+1)/24``, with ``X`` and ``<suffix>`` random so that
parallel runs do not collide. The hosts' interfaces are veth pairs whose other ends sit on a
bridge inside a dedicated *switch* namespace ``arl-sw-<suffix>``: the root namespace of the
machine gets no interface, address or route, and no host has a route beyond its own /24, so
nothing the hosts do can reach any other address.

Commands run on a host through :meth:`VirtualCluster.command` (or :meth:`run_in`): the
generated launcher script ``vhost-ssh`` enters the host's network namespace
(``ip netns exec``) and fresh UTS and mount namespaces (``unshare --uts --mount``) where it

* sets the host name (``h1`` …; ``socket.gethostname()`` differs per host),
* bind-mounts a generated ``hosts`` file on ``/etc/hosts`` (the host names resolve to the
  namespace addresses without DNS),
* bind-mounts the host's own scratch directory ``<root>/hosts/h{i}/scratch`` on the one path
  :attr:`VirtualCluster.scratch` (node-local disk under the same path on every node).

The script is called like ``ssh`` (``vhost-ssh [-x] HOST COMMAND...``, the command joined into
one shell line), so MPICH's hydra can start its proxies with it:
``mpiexec -launcher ssh -launcher-exec <root>/vhost-ssh -hosts h0:2,h1:1 -iface arl0``.

Everything is removed on exit (also after a failure): the processes still running in the
namespaces (by PID, from ``ip netns pids``), then the namespaces, which takes their veths and
the bridge with them.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

IFACE = "arl0"
TOOLS = ("ip", "nsenter", "unshare", "mount", "mountpoint", "hostname")


class NetnsUnavailable(RuntimeError):
    """Network namespaces cannot be made here (the reason is the message)."""


@dataclass(frozen=True)
class VirtualHost:
    """One virtual host: its name, network namespace, address and real scratch directory."""

    name: str
    netns: str
    address: str
    scratch: Path


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise NetnsUnavailable(f"ip {' '.join(args)}: {r.stderr.strip() or r.returncode}")
    return r


def unavailable_reason() -> str | None:
    """Why virtual hosts cannot be made here, or None when they can (probes one namespace)."""
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_SYS_ADMIN and CAP_NET_ADMIN)"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"missing tools {missing} (Debian packages iproute2, util-linux, mount, hostname)"
    probe = f"arl-probe-{secrets.token_hex(3)}"
    r = _ip("netns", "add", probe, check=False)
    if r.returncode != 0:
        return f"'ip netns add' failed: {r.stderr.strip()}"
    try:
        r = subprocess.run(["ip", "netns", "exec", probe, "unshare", "--uts", "--mount", "true"],
                           capture_output=True, text=True, timeout=30)  # fmt: skip
        if r.returncode != 0:
            return f"'unshare --uts --mount' inside a network namespace failed: {r.stderr.strip()}"
    finally:
        _ip("netns", "del", probe, check=False)
    return None


_SHIM = """#!/bin/sh
# Called like ssh by MPICH's hydra (and by the tests): vhost-ssh [-opts] HOST COMMAND...
# Runs COMMAND (one shell line, as ssh would) on virtual host HOST.
while [ $# -gt 0 ]; do case "$1" in -*) shift ;; *) break ;; esac; done
host=$1; shift
case "$host" in
{cases}
  *) echo "vhost-ssh: unknown host $host" >&2; exit 255 ;;
esac
exec nsenter --net=/run/netns/"$ns" unshare --uts --mount --propagation private sh -c '
  hostname "$1" && mount --bind {hosts} /etc/hosts && mount --bind "$2" {scratch} || exit 255
  # a sysfs of this network namespace (as ip netns exec makes), keeping the cgroup tree
  if mountpoint -q /sys/fs/cgroup; then
    mount --rbind /sys/fs/cgroup {cg} && mount -t sysfs sysfs /sys &&
      mount --move {cg} /sys/fs/cgroup || exit 255
  else
    mount -t sysfs sysfs /sys || exit 255
  fi
  shift 2; exec sh -c "$*"' vhost "$host" "$scratch" "$@"
"""


class VirtualCluster:
    """``n`` virtual hosts on a bridge; a context manager (see the module docstring).

    Parameters
    ----------
    root
        A fresh directory for the launcher script, the hosts file and the per-host scratch.
    n
        Number of hosts (>= 1).
    iface
        Interface name inside every host namespace.
    """

    def __init__(self, root: Path, n: int, iface: str = IFACE) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, not {n}")
        self.root, self.n, self.iface = Path(root), n, iface
        self.suffix = secrets.token_hex(3)
        self.subnet = random.randint(1, 254)  # 10.231.X.0/24
        self.switch = f"arl-sw-{self.suffix}"
        self.scratch = self.root / "scratch"  # the one path every host sees its own disk under
        self.launcher = self.root / "vhost-ssh"
        self.hosts: list[VirtualHost] = [
            VirtualHost(f"h{i}", f"arl-h{i}-{self.suffix}", f"10.231.{self.subnet}.{i + 1}",
                        self.root / "hosts" / f"h{i}" / "scratch")  # fmt: skip
            for i in range(n)
        ]
        self._made: list[str] = []

    # ---- set-up and teardown ---------------------------------------------------------------
    def __enter__(self) -> VirtualCluster:
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _create(self) -> None:
        sw = self.switch
        _ip("netns", "add", sw)
        self._made.append(sw)
        _ip("-n", sw, "link", "add", "br0", "type", "bridge")
        _ip("-n", sw, "link", "set", "br0", "up")
        for i, h in enumerate(self.hosts):
            _ip("netns", "add", h.netns)
            self._made.append(h.netns)
            # both ends are created inside namespaces: the root namespace never sees them
            _ip("-n", sw, "link", "add", f"p{i}", "type", "veth",
                "peer", "name", self.iface, "netns", h.netns)  # fmt: skip
            _ip("-n", sw, "link", "set", f"p{i}", "master", "br0", "up")
            _ip("-n", h.netns, "addr", "add", f"{h.address}/24", "dev", self.iface)
            _ip("-n", h.netns, "link", "set", self.iface, "up")
            _ip("-n", h.netns, "link", "set", "lo", "up")
            h.scratch.mkdir(parents=True, exist_ok=True)
        self.scratch.mkdir(parents=True, exist_ok=True)
        hosts = self.root / "hosts.txt"
        hosts.write_text("127.0.0.1 localhost\n::1 localhost\n"
                         + "".join(f"{h.address} {h.name}\n" for h in self.hosts))  # fmt: skip
        cases = "\n".join(f"  {h.name}) ns={h.netns}; scratch={shlex.quote(str(h.scratch))} ;;"
                          for h in self.hosts)  # fmt: skip
        cg = self.root / "cgroup-mnt"  # a mount point used (privately) while /sys is replaced
        cg.mkdir(exist_ok=True)
        self.launcher.write_text(_SHIM.format(cases=cases, hosts=shlex.quote(str(hosts)),
                                              scratch=shlex.quote(str(self.scratch)),
                                              cg=shlex.quote(str(cg))))  # fmt: skip
        self.launcher.chmod(0o755)

    def pids(self) -> list[int]:
        """PIDs of the processes running in this cluster's namespaces."""
        out: list[int] = []
        for ns in self._made:
            r = _ip("netns", "pids", ns, check=False)
            out += [int(p) for p in r.stdout.split() if p.isdigit()]
        return out

    def close(self) -> None:
        """Stop what still runs on the hosts (by PID), then delete the namespaces."""
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            pids = self.pids()
            for p in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, sig)
            t_end = time.monotonic() + wait
            while pids and time.monotonic() < t_end and self.pids():
                time.sleep(0.1)
        errors = []
        for ns in reversed(self._made):
            r = _ip("netns", "del", ns, check=False)
            if r.returncode != 0:
                errors.append(f"{ns}: {r.stderr.strip()}")
        self._made.clear()
        if errors:
            raise RuntimeError(f"could not delete network namespaces: {errors}")

    def exists(self) -> list[str]:
        """Names of this cluster's namespaces that the kernel still lists."""
        listed = _ip("netns", "list", check=False).stdout.split()
        return [ns for ns in [self.switch, *(h.netns for h in self.hosts)] if ns in listed]

    # ---- running things --------------------------------------------------------------------
    def host(self, name: str) -> VirtualHost:
        """The host called ``name`` (``h0`` …)."""
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def command(self, host: str, cmd: list[str]) -> list[str]:
        """The argv that runs ``cmd`` on ``host`` (for ``subprocess``)."""
        self.host(host)
        return [str(self.launcher), host, shlex.join(cmd)]

    def run_in(self, host: str, cmd: list[str], timeout: float = 60,
               **kw) -> subprocess.CompletedProcess:  # fmt: skip
        """``subprocess.run`` of ``cmd`` on ``host``, output captured as text."""
        return subprocess.run(self.command(host, cmd), capture_output=True, text=True,
                              timeout=timeout, **kw)  # fmt: skip

    def iface_bytes(self, host: str) -> tuple[int, int]:
        """(received, sent) bytes of ``host``'s interface so far."""
        ns = self.host(host).netns
        r = _ip("-n", ns, "-s", "-j", "link", "show", self.iface)
        stats = json.loads(r.stdout)[0]["stats64"]
        return int(stats["rx"]["bytes"]), int(stats["tx"]["bytes"])

    def hydra_args(self, ranks: dict[str, int]) -> list[str]:
        """``mpiexec`` options that place ``ranks[host]`` ranks on each host, in order, with
        hydra's proxies started through the launcher and its traffic on the cluster's
        interface."""
        hosts = ",".join(f"{h}:{k}" for h, k in ranks.items())
        return ["-launcher", "ssh", "-launcher-exec", str(self.launcher), "-iface", self.iface,
                "-hosts", hosts, "-n", str(sum(ranks.values()))]  # fmt: skip
