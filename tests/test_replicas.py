"""examples/replicas: two ccrotate replicas behind nginx, with Redis and PostgreSQL.

No Docker engine runs here, so the compose file is checked as data: its services, what
the replicas depend on, and that every variable it sets is a real ccrotate setting. The
nginx config is checked for what streaming needs and, when nginx is installed, run for
real (ports rewritten) in front of two in-process reference servers: a streamed answer
arrives through it while the upstream still holds the rest, and both replicas serve.
(Running it found ``client_header_timeout`` misplaced in ``location``, where nginx refuses
it. nginx 1.22 relayed this stream promptly even with ``proxy_buffering on``, so the
directives themselves are checked as text too.)
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from ccrotate import Settings
from ccrotate._server.config import FIELDS
from ccrotate.testing import FakeUpstream, Gate, Reply, ServerHandle
from conftest import HELLO, MODEL, serve_replicas

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "replicas"
REPLICAS = ("ccrotate-1", "ccrotate-2")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((EXAMPLE / "compose.yaml").read_text())
    return loaded


def test_two_replicas_with_shared_state_and_one_access_log(compose: dict[str, Any]) -> None:
    """Both replicas point at Redis and PostgreSQL, wait for them, and publish no port."""
    services = compose["services"]
    assert set(services) == {*REPLICAS, "nginx", "redis", "postgres"}
    for name in REPLICAS:
        replica = services[name]
        env = replica["environment"]
        assert env["CCROTATE_STATE_URL"] == "redis://redis:6379/0"
        assert re.fullmatch(r"postgresql://ccrotate:\$\{POSTGRES_PASSWORD:\?[^}]*\}"
                            r"@postgres:5432/ccrotate", env["CCROTATE_ACCESS_LOG_URL"])
        assert "${CCROTATE_AUTH_TOKEN:?" in env["CCROTATE_AUTH_TOKEN"]
        assert replica["depends_on"] == {"redis": {"condition": "service_healthy"},
                                         "postgres": {"condition": "service_healthy"}}
        assert "ports" not in replica  # only nginx is reachable from the host
        assert replica["build"]["context"] == "../.."
        assert (EXAMPLE / replica["build"]["context"] / "Dockerfile").is_file()
        extras = replica["build"]["args"]["CCROTATE_EXTRAS"].split(",")
        assert {"server", "postgres"} <= set(extras)
        assert replica["volumes"] == ["ccrotate-data:/data"]  # one accounts file
        assert replica["healthcheck"]["test"] == ["CMD", "python",
                                                  "/opt/ccrotate/healthcheck.py"]
    postgres = services["postgres"]["environment"]
    assert (postgres["POSTGRES_USER"], postgres["POSTGRES_DB"]) == ("ccrotate", "ccrotate")
    nginx = services["nginx"]
    assert nginx["ports"] == ["127.0.0.1:8080:8080"]
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    assert set(nginx["depends_on"]) == set(REPLICAS)
    assert set(compose["volumes"]) == {"ccrotate-data", "postgres-data"}


def test_every_variable_the_replicas_set_is_a_setting(compose: dict[str, Any]) -> None:
    """A misspelt CCROTATE_ name would be silently ignored by the container."""
    known = {var for spec in FIELDS for var in spec.env}
    # The shared-state setting comes with the Redis backend's branch; strict once merged.
    pending = {"CCROTATE_STATE_URL"} - known
    for name in REPLICAS:
        assert set(compose["services"][name]["environment"]) - known <= pending


def nginx_directives(text: str) -> list[str]:
    """The config's directives, comments stripped and whitespace squeezed."""
    lines = (re.sub(r"#.*", "", line).strip() for line in text.splitlines())
    return [re.sub(r"\s+", " ", line) for line in lines if line]


def test_nginx_balances_both_replicas_without_buffering() -> None:
    """The upstream lists both replicas; responses (SSE) are neither buffered nor cached."""
    directives = nginx_directives((EXAMPLE / "nginx.conf").read_text())
    servers = [d.split()[1] for d in directives if d.startswith("server ") and d != "server {"]
    assert servers == [f"{name}:8080" for name in REPLICAS]
    for wanted in ("proxy_buffering off;", "proxy_cache off;", "proxy_http_version 1.1;",
                   "proxy_request_buffering off;", "gzip off;", 'proxy_set_header Connection "";',
                   "proxy_set_header Host $host;", "proxy_pass http://ccrotate;"):
        assert wanted in directives, wanted
    (read,) = [d for d in directives if d.startswith("proxy_read_timeout ")]
    assert int(read.split()[1].rstrip("s;")) > Settings().read_timeout


# -- nginx for real ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def running_nginx(replica_urls: list[str]) -> Iterator[str]:
    """The example's nginx.conf with its upstreams and listen port rewritten to loopback."""
    nginx = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
    if nginx is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    port = _free_port()
    text = (EXAMPLE / "nginx.conf").read_text()
    for name, url in zip(REPLICAS, replica_urls, strict=True):
        text = text.replace(f"server {name}:8080", f"server {url.removeprefix('http://')}")
    text = text.replace("listen 8080;", f"listen 127.0.0.1:{port};")
    prefix = Path(tempfile.mkdtemp(prefix="ccrotate-nginx-"))
    prefix.chmod(0o755)
    text = text.replace("http {", f"http {{\n    access_log off;\n"
                        f"    client_body_temp_path {prefix}/body;\n"
                        f"    proxy_temp_path {prefix}/proxy;", 1)
    (prefix / "nginx.conf").write_text(text)
    process = subprocess.Popen(
        [nginx, "-e", str(prefix / "error.log"), "-p", str(prefix),
         "-c", str(prefix / "nginx.conf"), "-g", f"daemon off; pid {prefix}/nginx.pid;"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                log = (prefix / "error.log").read_text() if (prefix / "error.log").exists() else ""
                pytest.fail(f"nginx did not start: {log[-2000:]}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(prefix, ignore_errors=True)


@pytest.fixture
def two_replicas(upstream_server: ServerHandle[FakeUpstream]) -> Iterator[list[str]]:
    """Two reference servers, each with one account of its own, named after the replica."""
    with serve_replicas(upstream_server) as served:
        yield [url for _, url in served]


@pytest.mark.slow
def test_nginx_relays_streams_unbuffered_from_both_replicas(
        two_replicas: list[str], upstream_server: ServerHandle[FakeUpstream]) -> None:
    """Through the example's nginx, the first text delta arrives while the upstream still
    holds the rest of the stream, and requests reach both replicas."""
    body = {"model": MODEL, "max_tokens": 32, "messages": HELLO}
    with running_nginx(two_replicas) as url, httpx.Client(base_url=url, timeout=20) as client:
        served = {client.post("/api/v1/messages", json=body).headers["x-ccrotate-account"]
                  for _ in range(4)}
        assert served == {"one", "two"}
        gate = Gate()
        # message_start, ping, content_block_start, the first delta: then the upstream waits.
        upstream_server.app.script_any(Reply(text="one two three", hold=gate, hold_after=4))
        safety = threading.Timer(10, gate.release)  # a buffering proxy fails, not hangs
        safety.start()
        try:
            with client.stream("POST", "/api/v1/messages", json={**body, "stream": True}) as r:
                assert r.status_code == 200
                lines = r.iter_lines()
                for line in lines:
                    if line.startswith("data:") and "text_delta" in line:
                        break
                assert safety.is_alive()  # it came before the gate opened
                gate.release()
                rest = list(lines)
        finally:
            safety.cancel()
            gate.release()
        assert any("message_stop" in line for line in rest)
