"""A throwaway PostgreSQL server for the tests: initdb into a temp dir, postgres on a free port.

The PostgreSQL access-log tests need a real server (the SQL dialect, reconnects after the
server goes away). :func:`find_bin_dir` locates the Debian/Ubuntu packaged binaries
(``apt-get install postgresql``) or any on ``PATH``; tests skip when there are none.
Postgres refuses to run as root, so as root the server runs as the ``postgres`` user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def find_bin_dir() -> Path | None:
    """The directory holding ``initdb`` and ``postgres``, newest version first."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                            key=lambda p: int(Path(p).parent.name), reverse=True):
        if (Path(candidate) / "postgres").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found and shutil.which("postgres") else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PostgresServer:
    """One PostgreSQL cluster in a temp dir; :meth:`start` and :meth:`stop` as often as needed.

    The data dir and port survive a stop, so a restart is the same database coming back.
    """

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="ccrotate-pg-"))
        self.data = self.root / "data"
        self.user: str | None = None
        if os.geteuid() == 0:
            # Postgres will not run as root; the package creates this user.
            self.user = "postgres"
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.process: subprocess.Popen[bytes] | None = None
        self._run([str(bin_dir / "initdb"), "-D", str(self.data), "-U", "ccrotate",
                   "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])

    @property
    def url(self) -> str:
        """A connection URL; the password is ignored (trust auth) but shows masking works."""
        return f"postgresql://ccrotate:s3cret-pw@127.0.0.1:{self.port}/postgres"

    def _run(self, argv: list[str]) -> None:
        subprocess.run(argv, check=True, capture_output=True, user=self.user, timeout=120)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        argv = [str(self.bin_dir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-k", str(self.root), "-h", "127.0.0.1", "-c", "fsync=off",
                "-c", "log_min_messages=fatal"]
        self.process = subprocess.Popen(argv, user=self.user, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        ready = [str(self.bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port),
                 "-d", "postgres", "-U", "ccrotate"]
        while subprocess.run(ready, capture_output=True, check=False).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the test PostgreSQL server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        """Fast shutdown (clients are disconnected), waiting until the server is gone."""
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def close(self) -> None:
        """Stop the server and delete its files."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running_server() -> Iterator[PostgresServer]:
    """A started server, closed afterwards; skips the test when PostgreSQL is not installed."""
    import pytest

    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    server = PostgresServer(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.close()
