"""The command line: serve's bind rule and error reporting, and the demo end to end."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from ccrotate import ConfigError, Settings
from ccrotate._cli.demo import run_demo
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
