"""WorkerWatchdog against a fake client: when it ends a job, and when it must not."""

from __future__ import annotations

import threading

import pytest

from arl_mpi.cluster.settings import ClusterSettings
from arl_mpi.cluster.watchdog import WorkerWatchdog, run_job
from arl_mpi.errors import ClusterError


class FakeFuture:
    status = "pending"


class FakeClient:
    """Answers ``scheduler_info`` from a list of states (the last one repeats)."""

    def __init__(self, states: list) -> None:
        self.states, self.asked = states, 0
        self.closed = threading.Event()
        self.futures = {"k": FakeFuture()}

    def scheduler_info(self) -> dict:
        s = self.states[min(self.asked, len(self.states) - 1)]
        self.asked += 1
        if isinstance(s, Exception):
            raise s
        return {"workers": s}

    def close(self, timeout: float = 0) -> None:
        self.closed.set()


OK = {"w1": {"status": "running", "memory_limit": 2**30}}
PAUSED = {"w1": {"status": "paused", "memory_limit": 2**30}}


def watch(client: FakeClient, polls: int) -> WorkerWatchdog:
    """A watchdog polling every 1 ms with a zero grace, stopped after ``polls`` polls or
    once it closed the client (hang guard: 60 s)."""
    with WorkerWatchdog(client, grace=0, poll=0.001) as dog:
        for _ in range(60_000):
            if client.closed.wait(0.001) or dog.polls >= polls:
                break
    return dog


def test_no_worker_ends_the_job():
    c = FakeClient([OK, OK, {}])
    dog = watch(c, polls=1000)
    assert c.closed.is_set() and dog.polls == 3
    assert dog.reason.startswith("the Dask cluster has had no worker for 0 s")
    assert "1024 MiB" in dog.reason


def test_paused_with_work_waiting_ends_the_job():
    c = FakeClient([PAUSED])
    dog = watch(c, polls=1000)
    assert c.closed.is_set() and dog.polls == 1
    assert "paused at 80% of its memory limit (1024 MiB)" in dog.reason


def test_healthy_or_unreachable_scheduler_is_left_alone():
    c = FakeClient([OK, RuntimeError("busy"), OK, OSError("closing"), OK])
    dog = watch(c, polls=50)
    assert dog.polls >= 50 and not c.closed.is_set() and dog.reason is None


def test_paused_without_work_waiting_is_left_alone():
    c = FakeClient([PAUSED])
    c.futures = {}
    dog = watch(c, polls=50)
    assert not c.closed.is_set() and dog.reason is None


def test_run_job_turns_a_cancelled_wait_into_the_watchdog_reason(monkeypatch):
    """The closed client cancels the driver's wait; run_job raises the reason instead."""

    class Dog(WorkerWatchdog):
        def __init__(self, client, grace, poll=2.0):
            super().__init__(client, grace, poll=0.001)

    c = FakeClient([{}])

    def job(client) -> int:
        if not client.closed.wait(60):
            return 0
        raise RuntimeError("CancelledError")

    import arl_mpi.cluster.watchdog as wd

    monkeypatch.setattr(wd, "WorkerWatchdog", Dog)
    with pytest.raises(ClusterError, match="no worker for 0 s"):
        run_job(job, c, ClusterSettings(cluster_timeout=0))
