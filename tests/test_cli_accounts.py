"""``ccrotate accounts …`` and ``auth status``: what they write, what they print, no tokens."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from ccrotate import AccountKind, AccountsFile, Secret
from ccrotate._cli.main import main
from ccrotate.testing import FakeUpstream, ServerHandle

ACCESS = "sk-ant-oat01-cli-test-access-AAAA1111"
REFRESH = "sk-ant-ort01-cli-test-refresh-BBBB2222"
KEY = "sk-ant-api03-cli-test-key-CCCC3333"
SECRETS = (ACCESS, REFRESH, KEY)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty home and working directory, so no real config or login is read."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(args: list[str], capsys: pytest.CaptureFixture[str], *,
        stdin: str | io.StringIO | None = None,
        monkeypatch: pytest.MonkeyPatch | None = None) -> tuple[int, str]:
    """Run the CLI; returns the exit code and stdout+stderr, checked to hold no secret."""
    if stdin is not None:
        assert monkeypatch is not None
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin) if isinstance(stdin, str) else stdin)
    code = main(args)
    captured = capsys.readouterr()
    output = captured.out + captured.err
    for secret in SECRETS:
        assert secret not in output
    return code, output


def seed(path: Path) -> None:
    path.write_text(json.dumps({"version": 1, "accounts": {
        "sub": {"accessToken": ACCESS, "refreshToken": REFRESH,
                "expiresAt": round((time.time() + 3 * 3600 + 90) * 1000)},
        "old": {"accessToken": ACCESS + "x", "refreshToken": REFRESH + "x",
                "expiresAt": round((time.time() - 600) * 1000), "disabled": True},
        "ci": {"apiKey": KEY, "weight": 2}}}))


def test_add_reads_the_key_from_stdin_and_saves_it(
        home: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`accounts add NAME --api-key-stdin` creates the file (0600) and never echoes the key."""
    path = home / "accounts.json"
    code, out = run(["accounts", "add", "ci", "--api-key-stdin", "--accounts", str(path)],
                    capsys, stdin=KEY + "\n", monkeypatch=monkeypatch)
    assert code == 0
    assert "'ci'" in out
    assert "…3333" in out
    (account,) = AccountsFile(path).load()
    assert (account.kind, account.api_key) == (AccountKind.API_KEY, Secret(KEY))
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(("stdin", "message"), [
    ("", "expected one API key"),
    (ACCESS, "OAuth token"),
    ("two keys", "expected one API key"),
])
def test_add_refuses_what_is_not_one_api_key(
        home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        stdin: str, message: str) -> None:
    """Empty input, an OAuth token or several words: refused, nothing written."""
    path = home / "accounts.json"
    code, out = run(["accounts", "add", "ci", "--api-key-stdin", "--accounts", str(path)],
                    capsys, stdin=stdin, monkeypatch=monkeypatch)
    assert code == 2
    assert message in out
    assert not path.exists()


def test_list_shows_names_kinds_states_and_expiry(
        home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`accounts list`: one row per account with kind, state, expiry and a masked hint."""
    path = home / "accounts.json"
    seed(path)
    code, out = run(["accounts", "list", "--accounts", str(path)], capsys)
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[1:4]}
    assert "oauth" in rows["sub"]
    assert "enabled" in rows["sub"]
    assert "in 3h 01m" in rows["sub"]
    assert "disabled" in rows["old"]
    assert "expired 10m ago" in rows["old"]
    assert "api_key" in rows["ci"]
    assert "never" in rows["ci"]
    assert "…3333" in rows["ci"]
    assert "3 account(s)" in out


def test_auth_status_says_which_tokens_are_valid(
        home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`auth status`: valid or expired per account, with what to do about an expired one."""
    path = home / "accounts.json"
    seed(path)
    code, out = run(["auth", "status", "--accounts", str(path)], capsys)
    assert code == 0
    rows = {line.split()[0]: line.split()[2] for line in out.splitlines()[1:4]}
    assert rows == {"sub": "valid", "old": "expired", "ci": "valid"}
    assert "ccrotate accounts login old" in out


def test_list_without_any_file_explains_how_to_add_one(
        home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No accounts file and no CLI login: exit 1 and the three ways to add an account."""
    code, out = run(["accounts", "list"], capsys)
    assert code == 1
    assert "accounts login" in out
    assert "import-cli" in out


def test_import_cli_copies_the_cli_login_and_warns(
        home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`accounts import-cli NAME` saves the CLI's tokens under NAME, the CLI file untouched."""
    creds = home / ".claude" / ".credentials.json"
    creds.parent.mkdir()
    original = json.dumps({"claudeAiOauth": {
        "accessToken": ACCESS, "refreshToken": REFRESH,
        "expiresAt": round((time.time() + 3600) * 1000), "subscriptionType": "max"},
        "mcpOAuth": {"x": 1}})
    creds.write_text(original)
    code, out = run(["accounts", "import-cli", "laptop"], capsys)
    assert code == 0
    assert "single-use" in out
    (account,) = AccountsFile(home / ".claude" / "accounts.json").load()
    assert account.name == "laptop"
    assert (account.access_token, account.refresh_token) == (Secret(ACCESS), Secret(REFRESH))
    assert creds.read_text() == original


def test_remove_deletes_one_account_and_names_an_unknown_one(
        home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`accounts remove NAME` keeps the others; an unknown name exits 2 naming it."""
    path = home / "accounts.json"
    seed(path)
    code, _ = run(["accounts", "remove", "old", "--accounts", str(path)], capsys)
    assert code == 0
    assert [a.name for a in AccountsFile(path).load()] == ["sub", "ci"]
    code, out = run(["accounts", "remove", "nope", "--accounts", str(path)], capsys)
    assert code == 2
    assert "'nope'" in out


class _Approve(io.StringIO):
    """Stdin that approves the URL the CLI printed (read from the captured stdout)."""

    def __init__(self, fake: FakeUpstream, capsys: pytest.CaptureFixture[str]) -> None:
        super().__init__()
        self.fake, self.capsys, self.seen = fake, capsys, ""

    def readline(self, size: int | None = -1) -> str:  # type: ignore[override]
        captured = self.capsys.readouterr()
        self.seen = captured.out + captured.err
        url = next(w for w in self.seen.split() if "/oauth/authorize?" in w)
        return self.fake.oauth.approve(url) + "\n"


def test_login_command_end_to_end(home: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch,
                                  fake_upstream_server: ServerHandle[FakeUpstream]) -> None:
    """`accounts login NAME` with the endpoints set by environment: saved, nothing secret shown."""
    fake = fake_upstream_server.app
    monkeypatch.setenv("CCROTATE_OAUTH_AUTHORIZE_URL", fake_upstream_server.url
                       + "/oauth/authorize")
    monkeypatch.setenv("CCROTATE_OAUTH_TOKEN_URL", fake_upstream_server.url + "/v1/oauth/token")
    stdin = _Approve(fake, capsys)
    path = home / "accounts.json"
    code, out = run(["accounts", "login", "team-1", "--accounts", str(path)], capsys,
                    stdin=stdin, monkeypatch=monkeypatch)
    assert code == 0
    assert "logged in" in out
    issued = fake.oauth.issued[-1]
    (account,) = AccountsFile(path).load()
    assert account.access_token == Secret(issued.access_token)
    verifier = fake.requests_for(path="/v1/oauth/token")[-1].json["code_verifier"]
    for secret in (issued.access_token, issued.refresh_token or "?", verifier):
        assert secret not in out + stdin.seen


def test_login_refuses_a_bad_name_before_the_browser_step(
        home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An invalid account name fails at once, before any URL is shown."""
    code, out = run(["accounts", "login", "bad name!"], capsys)
    assert code == 2
    assert "account names" in out
    assert "authorize" not in out


def test_add_refuses_to_replace_an_account_without_force(
        home: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An existing name is not silently overwritten: --force says the user means it."""
    path = home / "accounts.json"
    seed(path)
    new_key = "sk-ant-api03-cli-test-newkey-DDDD4444"
    argv = ["accounts", "add", "ci", "--api-key-stdin", "--accounts", str(path)]
    code, out = run(argv, capsys, stdin=new_key, monkeypatch=monkeypatch)
    assert code == 2
    assert "'ci'" in out
    assert "already exists; pass --force" in out
    assert new_key not in out
    ci = {a.name: a for a in AccountsFile(path).load()}["ci"]
    assert ci.api_key == Secret(KEY)
    code, out = run([*argv, "--force"], capsys, stdin=new_key, monkeypatch=monkeypatch)
    assert code == 0
    assert new_key not in out
    ci = {a.name: a for a in AccountsFile(path).load()}["ci"]
    assert (ci.api_key, ci.weight) == (Secret(new_key), 2)  # the rest of the entry is kept
