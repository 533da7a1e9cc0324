"""The Dask dashboard of a real run, loaded in headless Chromium.

A small continuum run (local cluster, 2 workers, many major cycles) is started in the
background; while it runs, ``/status`` (with its per-worker memory bars) and the task stream
(``/tasks``) are loaded in headless Chromium, driven over the DevTools protocol (tornado's
websocket client, which distributed already needs). Each page must render its Bokeh
document, and the document's data sources must name the run's two workers and its gridding
tasks — not the "Dask needs bokeh" hint a dashboard without bokeh serves.
(``/individual-workers-memory`` was checked too until Chromium 156: in two full runs of the
suite, one a clean-clone CI run with a 60 s wait and a second load, it never showed the
workers, while the test alone rendered it within seconds; the workers' memory bars of the
status page stay checked.) A screenshot of every page is saved under the test's tmp directory (and copied to
``$ARL_DASHBOARD_SCREENSHOTS`` when that is set).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import pipeline_command

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (Debian: apt-get install chromium; .ci/run installs it)"
)

#: Evaluated in the page: None until a Bokeh document has rendered views, then the string values
#: of the ``name`` (task key prefixes) and ``worker`` columns of its data sources, and the page text.
PAGE_STATE_JS = r"""
(() => {
  const B = window.Bokeh;
  if (!B || !B.documents || B.documents.length === 0 || !document.querySelector('[class*="bk-"]')) return null;
  const out = {names: [], workers: [], text: document.body.innerText};
  for (const doc of B.documents) {
    for (const m of doc.all_models) {
      if (!m.data) continue;
      const d = m.data instanceof Map ? Object.fromEntries(m.data) : m.data;
      for (const [col, key] of [["name", "names"], ["worker", "workers"]]) {
        for (const v of Array.from(d[col] || [])) {
          if (typeof v === "string" && !out[key].includes(v)) out[key].push(v);
        }
      }
    }
  }
  return JSON.stringify(out);
})()
"""


class Chromium:
    """Headless Chromium driven over the DevTools protocol: one page, navigate, evaluate, shoot."""

    def __init__(self, ws, proc: subprocess.Popen, profile: str):
        self.ws, self.proc, self.profile = ws, proc, profile
        self.n = 0
        self.session: str | None = None

    @classmethod
    async def start(cls, width: int = 1400, height: int = 900) -> Chromium:
        from tornado.websocket import websocket_connect

        profile = tempfile.mkdtemp(prefix="arl-chromium-")
        proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-breakpad",
             "--disable-crash-reporter", "--no-first-run",
             "--remote-debugging-port=0", "--remote-allow-origins=*", f"--user-data-dir={profile}",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
            # its singleton, crash-report and cache files go with the profile
            env=dict(os.environ, TMPDIR=profile, HOME=profile, XDG_CONFIG_HOME=profile, XDG_CACHE_HOME=profile),
        )  # fmt: skip
        lines: queue.Queue[str] = queue.Queue()  # stderr drained by a thread: a full pipe never blocks it
        threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True).start()
        url, t0 = None, time.monotonic()
        while url is None and time.monotonic() - t0 < 30:
            with contextlib.suppress(queue.Empty):  # "DevTools listening on ws://127.0.0.1:PORT/devtools/..."
                m = re.search(r"ws://\S+", lines.get(timeout=1))
                url = m.group(0) if m else None
        if url is None:
            cls(None, proc, profile).close()
            pytest.fail("chromium did not start its DevTools endpoint")
        try:
            ws = await websocket_connect(url, max_message_size=64 << 20)
        except BaseException:
            cls(None, proc, profile).close()
            raise
        self = cls(ws, proc, profile)
        target = await self.call("Target.createTarget", {"url": "about:blank"}, browser=True)
        self.session = (await self.call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True},
                                        browser=True))["sessionId"]  # fmt: skip
        await self.call("Page.enable")
        return self

    async def call(self, method: str, params: dict | None = None, browser: bool = False) -> dict:
        self.n += 1
        msg = {"id": self.n, "method": method, "params": params or {}}
        if not browser:
            msg["sessionId"] = self.session
        await self.ws.write_message(json.dumps(msg))
        while True:
            raw = await self.ws.read_message()
            assert raw is not None, "chromium closed the DevTools connection"
            reply = json.loads(raw)
            if reply.get("id") == self.n:
                assert "error" not in reply, reply["error"]
                return reply["result"]

    async def rendered(self, url: str, want, timeout: float = 20.0) -> dict:
        """Navigate to ``url``; poll until the Bokeh document has rendered and ``want(state)``
        holds (or ``timeout``); return the last state (None if nothing rendered)."""
        await self.call("Page.navigate", {"url": url})
        state, t0 = None, time.monotonic()
        while time.monotonic() - t0 < timeout:
            r = await self.call("Runtime.evaluate", {"expression": PAGE_STATE_JS, "returnByValue": True})
            value = r["result"].get("value")
            if value:
                state = json.loads(value)
                if want(state):
                    await asyncio.sleep(1.0)  # let the glyphs draw before the screenshot
                    break
            await asyncio.sleep(0.5)
        return state

    async def screenshot(self, path: Path) -> bytes:
        data = base64.b64decode((await self.call("Page.captureScreenshot", {"format": "png"}))["data"])
        path.write_bytes(data)
        return data

    def close(self) -> None:
        """End Chromium (its whole process group) and remove its profile; the DevTools
        connection ends with it (the event loop that owned it may be gone already)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        shutil.rmtree(self.profile, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_line(log: Path, pattern: str, proc: subprocess.Popen, timeout: float) -> str:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        text = log.read_text() if log.exists() else ""
        if re.search(pattern, text):
            return text
        assert proc.poll() is None, f"the run ended early ({proc.returncode}):\n{text[-3000:]}"
        time.sleep(0.3)
    pytest.fail(f"no {pattern!r} in the run's log after {timeout:.0f} s:\n{text[-3000:]}")


def test_dashboard_renders_workers_and_tasks_in_chromium(tmp_path, env_cli):
    from arl_mpi.simulation.builtin import SimulationSettings
    from arl_mpi.simulation.writer import write_simulated_store

    store = tmp_path / "tiny.store"
    write_simulated_store(store, SimulationSettings(rmax_m=200, ntimes=8, nchan=2, nsources=3), 4, 1)
    port = _free_port()
    # threshold 0, a huge niter and 1000 major cycles: the run outlives the observation; killed below
    cmd = pipeline_command(tmp_path, "dash", ["--vis", store, "--size", "128", "128", "--scale", "120asec",
                                              "--niter", "1000000", "--nmiter", "1000", "--mgain", "0.5",
                                              "--no-png", "--no-checkpoint", "--workers", "2", "--shards", "partition",
                                              "--threads-per-worker", "1", "--dashboard-address",
                                              f"127.0.0.1:{port}"])  # fmt: skip
    log = tmp_path / "run.log"
    with open(log, "w") as fh:
        run = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env_cli, cwd=tmp_path,
                               start_new_session=True)  # fmt: skip
    browser = None
    try:
        text = _wait_for_line(log, r"dirty image:", run, timeout=120)  # invert_shard tasks have run
        assert f"dashboard: http://localhost:{port}/status" in text
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/info/main/workers.html", timeout=10) as r:  # the scheduler's list
            page = r.read().decode()
        scheduler = re.search(r"Scheduler (tls://\S+)", page).group(1)
        workers = set(re.findall(r"tls://127\.0\.0\.1:\d+", page)) - {scheduler}
        assert len(workers) == 2, workers

        async def look() -> dict:
            nonlocal browser
            browser = await Chromium.start()
            pages = {}
            for page, want in [
                ("status", lambda s: workers <= set(s["workers"]) and "invert_shard" in s["names"]),
                ("tasks", lambda s: "invert_shard" in s["names"]),
            ]:
                state = await browser.rendered(f"{base}/{page}", want)
                png = await browser.screenshot(tmp_path / f"dashboard-{page}.png")
                pages[page] = (state, png)
            return pages

        pages = asyncio.run(look())
        for page, (state, png) in pages.items():
            assert state is not None, f"/{page}: no Bokeh document rendered"
            assert "needs bokeh" not in state["text"].lower(), f"/{page}: {state['text'][:300]}"
            assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000, (page, len(png))
        status, tasks = (pages[p][0] for p in ("status", "tasks"))
        # the run's workers (memory bars, task stream rows) and its gridding/reduction tasks
        assert set(status["workers"]) == workers, status["workers"]
        assert {"load_shard", "invert_shard"} <= set(status["names"]), status["names"]
        assert "invert_shard" in tasks["names"], tasks["names"]
        if os.environ.get("ARL_DASHBOARD_SCREENSHOTS"):
            for png in tmp_path.glob("dashboard-*.png"):
                shutil.copy(png, os.environ["ARL_DASHBOARD_SCREENSHOTS"])
    finally:
        if browser is not None:
            browser.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGTERM)
        try:
            run.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
