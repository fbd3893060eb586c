"""The command line: serve's bind rule and error reporting, and the demo end to end."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ccrotate import ConfigError, Settings
from ccrotate._cli.common import client_urls
from ccrotate._cli.demo import _try_it, run_demo
from ccrotate._cli.main import main
from ccrotate._cli.serve import check_bind


def test_loopback_without_token_is_allowed_and_said() -> None:
    """No client token on loopback: allowed, with a notice saying so."""
    notice = check_bind(Settings(host="127.0.0.1"))
    assert notice is not None
    assert "loopback" in notice


def test_public_bind_without_token_is_refused() -> None:
    """No client token on a public address: refused unless --allow-remote."""
    with pytest.raises(ConfigError, match="CCROTATE_AUTH_TOKEN"):
        check_bind(Settings(host="0.0.0.0"))
    warning = check_bind(Settings(host="0.0.0.0", allow_remote=True))
    assert warning is not None
    assert "NO client authentication" in warning


def test_public_bind_with_token_is_quiet() -> None:
    """With a client token configured, any bind is fine and nothing needs saying."""
    assert check_bind(Settings(host="0.0.0.0", auth_tokens=("x" * 24,))) is None


def test_serve_names_a_malformed_accounts_file_and_never_prints_tokens(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`ccrotate serve` with a broken accounts file stops with one line naming file and field."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    secret = "sk-ant-oat01-SECRET-should-never-print-1234"
    path = tmp_path / "accounts.json"
    path.write_text(json.dumps({"version": 1, "accounts": {
        "broken": {"accessToken": secret, "expiresAt": 1}}}))
    code = main(["serve", "--accounts", str(path), "--port", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert str(path) in err
    assert "'broken'" in err
    assert "refreshToken" in err
    assert secret not in err


def test_serve_reports_a_bad_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad environment value stops `serve` with a message naming the setting."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CCROTATE_MAX_ATTEMPTS", "zero")
    assert main(["serve"]) == 2
    assert "CCROTATE_MAX_ATTEMPTS" in capsys.readouterr().err


def test_demo_shows_rotation_failover_and_pinning() -> None:
    """`ccrotate demo --exit` runs the tour against the fake upstream and says what happened."""
    out = io.StringIO()
    assert run_demo(exit_after=True, out=out) == 0
    text = out.getvalue()
    served = [line.rsplit(" ", 1)[-1] for line in text.splitlines()
              if line.strip().startswith("request ")]
    assert sorted(served) == ["alice", "bob", "team-key"]
    assert "got a 429" in text
    assert "never knew" in text
    assert "X-Account-Name: team-key -> served by team-key" in text
    assert "message_stop" in text
    assert "sk-ant-" not in text


# --- rough edges a new user meets first ---------------------------------------------


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty home and working directory, so no real config, login or .env is read."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("CCROTATE_ENV_FILE", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def api_key_accounts(path: Path) -> Path:
    path.write_text(json.dumps({"version": 1, "accounts": {
        "ci": {"apiKey": "sk-ant-api03-cli-test-key-0000"}}}))
    path.chmod(0o600)
    return path


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def one_error_line(err: str, port: int) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ccrotate: error: ")
    assert f":{port}" in lines[0]
    assert "in use" in lines[0]
    assert "Traceback" not in err


def test_demo_on_a_busy_port_says_so_in_one_line(
        home: Path, busy_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--port", str(busy_port), "--exit"]) == 1
    captured = capsys.readouterr()
    one_error_line(captured.err, busy_port)
    assert captured.out == ""  # refused before the tour starts


def test_serve_on_a_busy_port_says_so_in_one_line(
        home: Path, busy_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    accounts = api_key_accounts(home / "accounts.json")
    assert main(["serve", "--accounts", str(accounts), "--port", str(busy_port)]) == 1
    one_error_line(capsys.readouterr().err, busy_port)


def test_serve_without_accounts_says_what_to_do(
        home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert str(home / ".claude/accounts.json") in err
    for step in ("ccrotate accounts login NAME", "ccrotate accounts add NAME --api-key-stdin",
                 "ccrotate accounts import-cli NAME", "ccrotate demo"):
        assert step in err


def test_demo_exit_prints_no_try_it_lines() -> None:
    out = io.StringIO()
    assert run_demo(exit_after=True, out=out) == 0
    assert "Try it yourself" not in out.getvalue()
    assert "curl" not in out.getvalue()


def test_try_it_lines_need_only_curl(monkeypatch: pytest.MonkeyPatch) -> None:
    """The try-it lines start with curl; the SDK line only when the SDK is installed."""
    out = io.StringIO()
    _try_it("http://127.0.0.1:8080", out)
    text = out.getvalue()
    assert "curl -s http://127.0.0.1:8080/api/v1/messages" in text
    assert "import anthropic" in text  # installed in the test environment
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "anthropic" else real(name, *a))
    out = io.StringIO()
    _try_it("http://127.0.0.1:8080", out)
    assert "curl" in out.getvalue()
    assert "anthropic" not in out.getvalue()


def test_dotenv_in_cwd_is_read_only_when_named(
        home: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A project's ./.env (garbage to ccrotate) does not break the CLI; a named one is read."""
    accounts = api_key_accounts(home / "mine.json")
    (home / ".env").write_text("this is not KEY=VALUE at all\nDATABASE_URL=x\n")
    assert main(["accounts", "list", "--accounts", str(accounts)]) == 0
    assert "ci" in capsys.readouterr().out
    # Named, the garbage is reported, with file and line.
    assert main(["accounts", "list", "--env-file", ".env"]) == 2
    assert capsys.readouterr().err.strip() == "ccrotate: error: .env line 1: expected KEY=VALUE"
    # A real one, by option or by environment variable, is a settings layer.
    (home / "ccrotate.env").write_text(f"CCROTATE_ACCOUNTS_PATH={accounts}\n")
    assert main(["accounts", "list", "--env-file", "ccrotate.env"]) == 0
    assert f"from {accounts}" in capsys.readouterr().out
    monkeypatch.setenv("CCROTATE_ENV_FILE", str(home / "ccrotate.env"))
    assert main(["accounts", "list"]) == 0
    assert f"from {accounts}" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "usage"), [
    (["serve", "--bogus"], "usage: ccrotate serve "),
    (["demo", "--bogus"], "usage: ccrotate demo "),
    (["accounts", "list", "--bogus"], "usage: ccrotate accounts list "),
    (["auth", "status", "--bogus"], "usage: ccrotate auth status "),
])
def test_unknown_option_prints_the_subcommands_usage(
        argv: list[str], usage: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(usage)
    assert "unrecognized arguments: --bogus" in err


def test_all_interfaces_bind_names_usable_urls() -> None:
    where, urls = client_urls(Settings(host="0.0.0.0", allow_remote=True), 9000)
    assert where == "listening on all interfaces (0.0.0.0:9000)"
    assert urls[0] == "http://127.0.0.1:9000"
    assert all("0.0.0.0" not in url for url in urls)
    _, urls = client_urls(Settings(host="0.0.0.0", allowed_hosts="pool.example"), 9000)
    assert urls == ["http://127.0.0.1:9000", "http://pool.example:9000"]
    assert client_urls(Settings(host="::1"), 1) == ("listening on [::1]:1", ["http://[::1]:1"])


def test_warning_is_said_once() -> None:
    notice = check_bind(Settings(host="0.0.0.0", allow_remote=True))
    assert notice is not None
    assert "WARNING" not in notice  # the log line's level says it


@pytest.mark.slow
def test_serve_on_port_zero_prints_the_port_it_got(home: Path) -> None:
    """`serve --port 0 --host 0.0.0.0`: a free port, printed as a URL that works."""
    accounts = api_key_accounts(home / "accounts.json")
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ccrotate._cli.main", "serve", "--port", "0", "--host",
         "0.0.0.0", "--allow-remote", "--accounts", str(accounts)],
        stderr=subprocess.PIPE, text=True, env=env, cwd=home)
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        for line in proc.stderr:
            lines.append(line)
            if "clients use ANTHROPIC_BASE_URL=" in line:
                break
        text = "".join(lines)
        url = re.search(r"ANTHROPIC_BASE_URL=(http://127\.0\.0\.1:(\d+))/api", text)
        assert url is not None, text
        assert int(url[2]) != 0
        assert "listening on all interfaces" in text
        assert text.count("WARNING") == 1
        deadline = time.monotonic() + 10
        while True:
            try:
                assert httpx.get(url[1] + "/health", timeout=5).status_code == 200
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        # Its access lines: "INFO {json}" on stderr, as logging's format would have them.
        bad = httpx.post(url[1] + "/api/v1/messages", content=b"{",
                         headers={"content-type": "application/json"}, timeout=5)
        assert bad.status_code == 400
        stop = threading.Timer(10, proc.terminate)  # no line at all ends the loop below
        stop.start()
        entry = None
        for line in proc.stderr:
            if line.startswith("INFO {"):
                entry = json.loads(line.removeprefix("INFO "))
                break
        stop.cancel()
        assert entry is not None, "no access line on stderr"
        assert (entry["route"], entry["status"]) == ("messages", 400)
        assert entry["error_type"] == "invalid_request_error"
    finally:
        proc.terminate()
        proc.wait(10)
