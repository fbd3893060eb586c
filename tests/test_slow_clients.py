"""Slow and half-open clients against the real server on loopback sockets: the request-head
deadline, the body deadline, the connection cap, and keep-alive connections.

The server is the reference app under uvicorn with ``uvicorn_options(settings)``, as
``ccrotate serve`` runs it, in front of the fake upstream. Deadlines are short (0.5-1 s);
the assertions allow several times as long, so a busy machine cannot fail them.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ccrotate import Account, AccountKind, AccountPool, ConfigError, ProxyConfig, Secret, Settings
from ccrotate._cli.serve import _raise_fd_limit, fd_budget, run_server, uvicorn_options
from ccrotate._server.app import create_app
from ccrotate._server.uvicorn_guard import MAX_LINGERING
from ccrotate.testing import FakeUpstream, ServerHandle, serve_app

pytestmark = pytest.mark.slow

CLIENT = "slow-clients-client-token"
BODY = json.dumps({"model": "claude-sonnet-4-6", "max_tokens": 16,
                   "messages": [{"role": "user", "content": "hi"}]}).encode()
PATIENCE = 5.0  # how long any assertion waits for a deadline of 0.5-1 s to act


@contextlib.contextmanager
def reference_server(fake: FakeUpstream, **settings: Any) -> Iterator[ServerHandle[Any]]:
    """The reference app served the way ``ccrotate serve`` serves it, on a free port."""
    with serve_app(fake) as upstream:
        options: dict[str, Any] = {"auth_tokens": (CLIENT,), "hot_reload": False,
                                   "upstream_url": upstream.url, **settings}
        keep_alive = options.pop("timeout_keep_alive", 5)
        config = Settings(**options)
        pool = AccountPool([Account(name="alpha", kind=AccountKind.API_KEY,
                                    api_key=Secret("sk-ant-api03-slow-clients-aaaa"))])
        app = create_app(config, pool=pool)
        with serve_app(app, timeout_keep_alive=keep_alive, **uvicorn_options(config)) as srv:
            yield srv


def connect(server: ServerHandle[Any]) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE)
    return sock


def head(length: int = len(BODY)) -> bytes:
    return (f"POST /api/v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\nx-api-key: {CLIENT}\r\n"
            f"anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n"
            f"content-length: {length}\r\n\r\n").encode()


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes; fails if it keeps the socket open."""
    sock.settimeout(PATIENCE)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass  # closed all the same
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for {PATIENCE} s; got {data!r}")
    return data


def read_response(sock: socket.socket) -> http.client.HTTPResponse:
    """One whole response from a keep-alive socket."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    response.read()
    return response


def served(server: ServerHandle[Any]) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=PATIENCE) as client:
        return client.post("/api/v1/messages", content=BODY,
                           headers={"x-api-key": CLIENT, "content-type": "application/json"})


def status_and_json(raw: bytes) -> tuple[int, dict[str, Any]]:
    status_line, _, rest = raw.partition(b"\r\n")
    body = rest.partition(b"\r\n\r\n")[2]
    return int(status_line.split()[1]), json.loads(body)


# -- the request-head deadline -------------------------------------------------------------

def test_half_a_head_is_closed_with_408_while_others_are_served(
        fake_upstream: FakeUpstream) -> None:
    """A connection stuck in its request head gets a 408 and is closed by the deadline;
    a normal client is served meanwhile."""
    with reference_server(fake_upstream, header_timeout=0.5) as server:
        stuck = connect(server)
        stuck.sendall(head()[:40])
        silent = connect(server)  # not a byte: closed without an answer
        assert served(server).status_code == 200
        t0 = time.monotonic()
        status, body = status_and_json(read_until_closed(stuck))
        assert status == 408
        assert body["type"] == "error"
        assert body["error"]["type"] == "timeout_error"
        assert read_until_closed(silent) == b""
        assert time.monotonic() - t0 < PATIENCE
        assert served(server).status_code == 200


def test_a_head_completed_in_time_is_served(fake_upstream: FakeUpstream) -> None:
    """A head sent in pieces, but complete within the deadline, is served normally."""
    with reference_server(fake_upstream, header_timeout=1.0) as server, connect(server) as sock:
        raw = head()
        sock.sendall(raw[:30])
        time.sleep(0.2)
        sock.sendall(raw[30:] + BODY)
        assert read_response(sock).status == 200


# -- the body deadline ----------------------------------------------------------------------

def test_a_trickled_body_gets_408_and_nothing_goes_upstream(
        fake_upstream: FakeUpstream) -> None:
    """A client that sends its head and then the body a byte at a time gets an Anthropic
    408 after body_timeout, the connection is closed, and the upstream saw nothing."""
    with reference_server(fake_upstream, body_timeout=0.5) as server, connect(server) as sock:
        sock.sendall(head(length=len(BODY)))
        deadline = time.monotonic() + PATIENCE
        sent = 0
        # One byte every 0.1 s: the whole body would take longer than the deadline allows.
        while sent < len(BODY) - 1 and time.monotonic() < deadline:
            if select.select([sock], [], [], 0.1)[0]:
                break  # the answer is here
            sock.sendall(BODY[sent:sent + 1])
            sent += 1
        status, body = status_and_json(read_until_closed(sock))
        assert status == 408
        assert body == {"type": "error", "error": {
            "type": "timeout_error", "message": "ccrotate: request body not received within "
                                                "0.5 s"}}
        assert sent < len(BODY) - 1
        assert fake_upstream.requests == []
        assert served(server).status_code == 200
        assert len(fake_upstream.requests) == 1


@pytest.mark.parametrize("bad", [0, -1.5, float("nan"), float("inf")])
def test_proxy_config_refuses_a_bad_body_timeout(bad: float) -> None:
    """body_timeout is a positive, finite number of seconds, or None for no deadline."""
    with pytest.raises(ConfigError, match="body_timeout"):
        ProxyConfig(body_timeout=bad)
    assert ProxyConfig(body_timeout=None).body_timeout is None


# -- the connection cap ---------------------------------------------------------------------

def test_over_max_connections_new_clients_get_a_quick_answer(
        fake_upstream: FakeUpstream) -> None:
    """With 40 idle half-open connections and max_connections=20, a new client is answered
    at once (503 with retry-after, or served), and once the idle ones time out it is served:
    the server never stops accepting."""
    with reference_server(fake_upstream, max_connections=20, header_timeout=1.0) as server:
        idle = [connect(server) for _ in range(40)]
        try:
            for sock in idle:
                sock.sendall(b"GET /health HTTP/1.1\r\n")
            t0 = time.monotonic()
            first = served(server)
            assert time.monotonic() - t0 < PATIENCE
            assert first.status_code in (200, 503)
            if first.status_code == 503:
                assert first.headers["retry-after"] == "1"
                assert first.json()["error"]["type"] == "overloaded_error"
            # The last 20 were over the cap: each got the 503 straight away.
            status, _ = status_and_json(read_until_closed(idle[-1]))
            assert status == 503
            # The first 20 run into the head deadline; then there is room again.
            status, _ = status_and_json(read_until_closed(idle[0]))
            assert status == 408
            deadline = time.monotonic() + PATIENCE
            while (answer := served(server)).status_code == 503:
                assert time.monotonic() < deadline, "still refusing after the deadline"
                time.sleep(0.1)
            assert answer.status_code == 200
        finally:
            for sock in idle:
                sock.close()


def test_fd_budget_covers_connections_lingering_refusals_and_the_upstream_pool() -> None:
    """The file-descriptor figure ccrotate serve checks at start-up."""
    settings = Settings(max_connections=100)
    assert fd_budget(settings, upstream_pool=512) == 100 + MAX_LINGERING + 100 + 64
    assert fd_budget(settings, upstream_pool=10) == 100 + MAX_LINGERING + 10 + 64


# -- keep-alive ----------------------------------------------------------------------------

def test_idle_keep_alive_connection_is_closed(fake_upstream: FakeUpstream) -> None:
    """After a response, an idle keep-alive connection is closed by the keep-alive
    timeout, not held for ever."""
    with reference_server(fake_upstream, header_timeout=0.5,
                          timeout_keep_alive=0.5) as server, connect(server) as sock:
        sock.sendall(head() + BODY)
        assert read_response(sock).status == 200
        assert read_until_closed(sock) == b""


def test_head_deadline_rearms_for_the_next_request(fake_upstream: FakeUpstream) -> None:
    """A keep-alive connection that starts its next request and stalls gets the 408 too."""
    with reference_server(fake_upstream, header_timeout=0.5,
                          timeout_keep_alive=30) as server, connect(server) as sock:
        sock.sendall(head() + BODY)
        assert read_response(sock).status == 200
        sock.sendall(head()[:25])
        status, _ = status_and_json(read_until_closed(sock))
        assert status == 408


def test_blank_lines_do_not_hold_a_keep_alive_connection(fake_upstream: FakeUpstream) -> None:
    """Bytes that begin no request (blank lines) reset uvicorn's keep-alive timer; the head
    deadline still closes the connection."""
    with reference_server(fake_upstream, header_timeout=0.5,
                          timeout_keep_alive=30) as server, connect(server) as sock:
        sock.sendall(head() + BODY)
        assert read_response(sock).status == 200
        deadline = time.monotonic() + PATIENCE
        closed = False
        while not closed and time.monotonic() < deadline:
            try:
                sock.sendall(b"\r\n")
            except OSError:
                closed = True
                break
            if select.select([sock], [], [], 0.2)[0]:
                closed = sock.recv(65536) == b""
        assert closed, "blank lines kept the connection open"


# -- ccrotate serve's wiring ---------------------------------------------------------------

def test_serve_runs_uvicorn_with_the_guard_from_settings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """run_server hands uvicorn the guarded protocol built from the settings."""
    import uvicorn

    accounts = tmp_path / "accounts.json"
    accounts.write_text(json.dumps({"version": 1, "accounts": {
        "alpha": {"apiKey": "sk-ant-api03-slow-clients-aaaa"}}}))
    ran: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn.Server, "run",
                        lambda self, sockets: ran.update(vars(self.config), sockets=sockets))
    run_server(Settings(accounts_path=accounts, credentials_path=tmp_path / "none.json",
                        header_timeout=3, max_connections=7, hot_reload=False, port=0))
    assert ran["http"].header_timeout == 3.0
    assert ran["http"].max_connections == 7


def test_fd_limit_is_raised_to_the_budget_or_a_warning_says_what_to_do(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The soft RLIMIT_NOFILE goes up to what max_connections needs when the hard limit
    allows; when it does not, the warning names LimitNOFILE and the setting."""
    import resource

    set_to: list[tuple[int, int]] = []
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 1500))
    monkeypatch.setattr(resource, "setrlimit", lambda _, limits: set_to.append(limits))
    assert _raise_fd_limit(1200, max_connections=900) is None
    assert set_to == [(1200, 1500)]
    warning = _raise_fd_limit(2000, max_connections=1500)
    assert warning is not None
    assert "LimitNOFILE" in warning
    assert "CCROTATE_MAX_CONNECTIONS" in warning
    assert set_to == [(1200, 1500)]
    assert _raise_fd_limit(1000, max_connections=800) is None  # the soft limit suffices
