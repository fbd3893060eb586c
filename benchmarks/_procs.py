"""The harness's child processes: servers that print ``PORT <n>`` and the load-generator worker."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _die_with_parent() -> None:
    # Children get SIGTERM if the harness dies, however it dies: nothing outlives a run.
    if sys.platform == "linux":
        import ctypes
        import signal

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Proc:
    """A child process that prints ``PORT <n>`` (or any first line) when ready."""

    def __init__(self, name: str, cmd: list[str], cpu: int | None, stdin: bool = False,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        if cpu is not None:
            cmd = ["taskset", "-c", str(cpu), *cmd]
        # stderr goes to a file: a proxy losing its upstream at teardown may log a lot.
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stderr=self.log, text=True, bufsize=1, cwd=HERE.parent,
            env={**os.environ, **(env or {})}, preexec_fn=_die_with_parent)
        self.port = 0

    def log_tail(self, lines: int = 20) -> str:
        """The end of what the process wrote to stderr."""
        self.log.seek(0)
        return "".join(self.log.readlines()[-lines:])

    def wait_port(self, timeout: float = 30.0) -> int:
        assert self.popen.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.popen.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.name} exited before listening:\n{self.log_tail()}")
            if line.startswith("PORT "):
                self.port = int(line.split()[1])
                return self.port
        raise RuntimeError(f"{self.name} did not start in {timeout} s")

    @property
    def pid(self) -> int:
        return self.popen.pid

    def rss_kb(self) -> int:
        """Resident set size from /proc (kB)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def cpu_seconds(self) -> float:
        """User + system CPU time so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.log.close()


class LoadGen:
    """The load-generator worker: one JSON spec per line in, one result per line out."""

    def __init__(self, cpu: int | None) -> None:
        self.proc = Proc("loadgen", [sys.executable, str(HERE / "loadgen.py")], cpu, stdin=True)

    def _send(self, spec: dict[str, Any]) -> None:
        stdin = self.proc.popen.stdin
        assert stdin is not None
        stdin.write(json.dumps(spec) + "\n")
        stdin.flush()

    def _line(self) -> str:
        stdout = self.proc.popen.stdout
        assert stdout is not None
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"load generator exited:\n{self.proc.log_tail()}")
        return line

    def run(self, spec: dict[str, Any]) -> dict[str, Any]:
        self._send(spec)
        line = self._line()
        if not line.startswith("RESULT "):
            raise RuntimeError(f"load generator: {line!r}")
        return json.loads(line[7:])  # type: ignore[no-any-return]

    @contextlib.contextmanager
    def hold(self, spec: dict[str, Any]) -> Iterator[int]:
        """Open the streams of a ``hold`` spec; yields how many opened, closes them after."""
        self._send(spec)
        line = self._line()
        if not line.startswith("OPEN "):
            raise RuntimeError(f"load generator: {line!r}")
        try:
            yield int(line.split()[1])
        finally:
            stdin = self.proc.popen.stdin
            assert stdin is not None
            stdin.write("close\n")
            stdin.flush()
            self._line()

    def stop(self) -> None:
        stdin = self.proc.popen.stdin
        if stdin is not None:
            with contextlib.suppress(OSError):
                stdin.close()
        self.proc.stop()
