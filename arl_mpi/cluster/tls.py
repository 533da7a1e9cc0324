"""Per-job TLS credentials for the Dask cluster, created in memory and never written to disk.

Under MPI rank 0 creates them and sends them to the other ranks over MPI
(:mod:`arl_mpi.cluster.runtime`); a local cluster creates its own.
"""

from __future__ import annotations

import dask

from arl_mpi.errors import ClusterError


def make_tls_config() -> dict[str, str]:
    """Fresh per-job credentials (a self-signed CA that is also the certificate, in memory).

    Returns
    -------
    dict
        Dask config values below ``distributed.comm.tls`` (``ca-file``, ``scheduler.cert``,
        ...), each the PEM text itself.

    Raises
    ------
    ClusterError
        When the ``cryptography`` package is missing.
    """
    from distributed.security import Security

    try:
        sec = Security.temporary()
    except ImportError as e:  # pragma: no cover - cryptography is a dependency
        raise ClusterError(
            f"TLS needs the 'cryptography' package ({e}); or pass --no-tls"
        ) from None
    return {
        "ca-file": sec.tls_ca_file,
        "scheduler.cert": sec.tls_scheduler_cert,
        "scheduler.key": sec.tls_scheduler_key,
        "worker.cert": sec.tls_worker_cert,
        "worker.key": sec.tls_worker_key,
        "client.cert": sec.tls_client_cert,
        "client.key": sec.tls_client_key,
    }


def apply_tls_config(tls: dict[str, str]) -> None:
    """Make ``tls`` (from :func:`make_tls_config`) this process's Dask TLS configuration,
    with encryption required and ``tls://`` the default scheme."""
    cfg = {f"distributed.comm.tls.{k}": v for k, v in tls.items()}
    cfg["distributed.comm.require-encryption"] = True
    cfg["distributed.comm.default-scheme"] = "tls"
    dask.config.set(cfg)


def current_security():
    """A ``distributed.security.Security`` from this process's Dask config (TLS when
    :func:`apply_tls_config` ran, plain TCP otherwise)."""
    from distributed.security import Security

    return Security()
