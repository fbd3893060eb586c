"""ccrotate's server as ``ccrotate serve --workers N``, for run.py's ``--workers``.

The in-process bench server (``server.py``) is one process. Scaling out on one host is
``ccrotate serve``'s own option, so with ``--workers N`` the harness runs the real command
against the bench upstream instead: the same three API-key accounts (a temporary accounts
file), client auth on, the access log and metrics at their defaults. When the installed
``ccrotate serve`` has no ``--workers`` option, :func:`supported` says so and the harness
measures the one-process server as usual.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _procs import Proc
from server import CLIENT_KEY, KEYS

_CLI = "import sys; from ccrotate._cli.main import main; sys.exit(main())"


def supported(env: dict[str, str] | None = None) -> bool:
    """Whether ``ccrotate serve`` takes ``--workers``."""
    out = subprocess.run([sys.executable, "-c", _CLI, "serve", "--help"], capture_output=True,
                         text=True, env={**os.environ, **(env or {})}, check=False)
    return "--workers" in out.stdout


class ServeProc(Proc):
    """``ccrotate serve --workers N`` on a free port; CPU and RSS summed over its workers."""

    def __init__(self, workers: int, upstream: str, env: dict[str, str] | None = None) -> None:
        self.dir = tempfile.TemporaryDirectory()  # removed in stop()
        accounts = Path(self.dir.name) / "accounts.json"
        accounts.write_text(json.dumps({"accounts": {
            f"acct{i}": {"type": "api_key", "apiKey": key} for i, key in enumerate(KEYS)}}))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        env = {**(env or {}), "CCROTATE_ACCOUNTS_PATH": str(accounts),
               "CCROTATE_UPSTREAM_URL": upstream, "CCROTATE_AUTH_TOKEN": CLIENT_KEY,
               "CCROTATE_HOT_RELOAD": "0", "HOME": self.dir.name}
        # Not pinned: N workers on one core would measure nothing but that core.
        super().__init__("ccrotate", [sys.executable, "-c", _CLI, "serve", "--port", str(port),
                                      "--workers", str(workers)], None, env=env)
        self.port = port

    def wait_port(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"ccrotate serve exited:\n{self.log_tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    return self.port
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"ccrotate serve did not answer /health in {timeout} s")

    def _tree(self) -> list[int]:
        pids, at = [self.pid], 0
        while at < len(pids):
            try:
                children = Path(f"/proc/{pids[at]}/task/{pids[at]}/children").read_text()
            except OSError:
                children = ""
            pids += [int(c) for c in children.split()]
            at += 1
        return pids

    def cpu_seconds(self) -> float:
        total = 0.0
        for pid in self._tree():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def rss_kb(self) -> int:
        total = 0
        for pid in self._tree():
            try:
                lines = Path(f"/proc/{pid}/status").read_text().splitlines()
            except OSError:
                continue
            total += sum(int(line.split()[1]) for line in lines if line.startswith("VmRSS:"))
        return total

    def stop(self) -> None:
        super().stop()
        self.dir.cleanup()
