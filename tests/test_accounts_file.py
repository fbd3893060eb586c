"""The accounts file: parsing, validation, atomic locked write-back, the Claude CLI fallback."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from ccrotate import (
    Account,
    AccountKind,
    AccountsFile,
    AccountsFileError,
    ConfigError,
    FileFormat,
    Secret,
    discover_accounts_file,
)

# Distinctive fake secrets: an error message or repr that contains any of them has leaked.
ACCESS = "sk-ant-oat01-ACCESSfake7Qz9Wq3Lr8Vt2Yp5Kx1Mn4Bc6Hd0Gf"
REFRESH = "sk-ant-ort01-REFRESHfake8Jk2Pl5Zx9Cv3Bn7Mq1Wr4Ty6Ui0"
API_KEY = "sk-ant-api03-APIKEYfake3Hs6Dk9Fl2Gj5Qw8Er1Ty4Ui7Op0"
SECRETS = (ACCESS, REFRESH, API_KEY)
EXPIRES_MS = 1747909518727


def seed_doc() -> dict[str, Any]:
    return {
        "version": 1,
        "accounts": {
            "primary": {"accessToken": ACCESS, "refreshToken": REFRESH,
                        "expiresAt": EXPIRES_MS},
            "ci": {"apiKey": API_KEY, "weight": 3, "priority": 2, "disabled": True},
        },
    }


def write(path: Path, doc: Any, mode: int = 0o600) -> Path:
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    path.chmod(mode)
    return path


@pytest.fixture
def accounts_path(tmp_path: Path) -> Path:
    return write(tmp_path / "accounts.json", seed_doc())


def assert_no_secret(exc: BaseException) -> None:
    for text in (str(exc), repr(exc), str(exc.args)):
        for secret in SECRETS:
            assert secret not in text
            assert secret[13:30] not in text  # no recognisable piece either


# -- reading ---------------------------------------------------------------------------------

def test_reads_seed_oauth_account(accounts_path: Path) -> None:
    """The seed format's OAuth entry becomes an OAuth Account with expiry in seconds."""
    primary = {a.name: a for a in AccountsFile(accounts_path).load()}["primary"]
    assert primary.kind is AccountKind.OAUTH
    assert primary.access_token == Secret(ACCESS)
    assert primary.refresh_token == Secret(REFRESH)
    assert primary.expires_at == pytest.approx(EXPIRES_MS / 1000)
    assert primary.credential.reveal() == ACCESS
    assert (primary.weight, primary.priority, primary.disabled) == (1, 0, False)


def test_reads_api_key_account_with_options(accounts_path: Path) -> None:
    """An apiKey entry is an API-key account carrying weight, priority and disabled."""
    ci = {a.name: a for a in AccountsFile(accounts_path).load()}["ci"]
    assert ci.kind is AccountKind.API_KEY
    assert ci.credential.reveal() == API_KEY
    assert ci.access_token is None
    assert ci.expires_in() is None
    assert (ci.weight, ci.priority, ci.disabled) == (3, 2, True)


def test_load_keeps_file_order(tmp_path: Path) -> None:
    """Accounts come back in the order the file lists them (the preference order)."""
    names = ["zeta", "alpha", "mid"]
    doc = {"version": 1, "accounts": {n: {"apiKey": f"{API_KEY}{n}"} for n in names}}
    assert [a.name for a in AccountsFile(write(tmp_path / "a.json", doc)).load()] == names


def test_version_may_be_omitted(tmp_path: Path) -> None:
    """A file without "version" is read as version 1."""
    doc = seed_doc()
    del doc["version"]
    assert len(AccountsFile(write(tmp_path / "a.json", doc)).load()) == 2


def test_repr_of_loaded_accounts_hides_tokens(accounts_path: Path) -> None:
    """Neither the file object nor its accounts show a token in their repr."""
    f = AccountsFile(accounts_path)
    text = repr(f) + repr(f.load()) + str(f.load())
    for secret in SECRETS:
        assert secret not in text


def test_load_with_stamp_matches_stamp(accounts_path: Path) -> None:
    """The stamp returned with the accounts is the file's current stamp, and a write moves it."""
    f = AccountsFile(accounts_path)
    _, stamp = f.load_with_stamp()
    assert stamp == f.stamp()
    f.update(lambda accs: {**accs, "new": Account(name="new", kind=AccountKind.API_KEY,
                                                  api_key=Secret(API_KEY + "2"))})
    assert f.stamp() != stamp
    assert AccountsFile(accounts_path.with_name("missing.json")).stamp() is None


# -- rejection -------------------------------------------------------------------------------

BAD_FILES: list[tuple[str, Any, str | None, str | None]] = [
    ("not json", '{"version": 1, "accounts": {"primary": {"accessToken": "' + ACCESS, None, None),
    ("a list", [ACCESS], None, None),
    ("version 2", {"version": 2, "accounts": {}}, None, "version"),
    ("version true", {"version": True, "accounts": {}}, None, "version"),
    ("no accounts", {"version": 1}, None, "accounts"),
    ("accounts list", {"version": 1, "accounts": [{"apiKey": API_KEY}]}, None, "accounts"),
    ("entry not object", {"version": 1, "accounts": {"p": ACCESS}}, "p", None),
    ("no credentials", {"version": 1, "accounts": {"p": {"weight": 2}}}, "p", "accessToken"),
    ("no refresh token", {"version": 1, "accounts": {"p": {
        "accessToken": ACCESS, "expiresAt": EXPIRES_MS}}}, "p", "refreshToken"),
    ("no expiry", {"version": 1, "accounts": {"p": {
        "accessToken": ACCESS, "refreshToken": REFRESH}}}, "p", "expiresAt"),
    ("expiry string", {"version": 1, "accounts": {"p": {
        "accessToken": ACCESS, "refreshToken": REFRESH, "expiresAt": "soon"}}}, "p", "expiresAt"),
    ("token not string", {"version": 1, "accounts": {"p": {
        "accessToken": 12345, "refreshToken": REFRESH, "expiresAt": EXPIRES_MS}}},
     "p", "accessToken"),
    ("empty api key", {"version": 1, "accounts": {"p": {"apiKey": "  "}}}, "p", "apiKey"),
    ("both kinds", {"version": 1, "accounts": {"p": {
        "apiKey": API_KEY, "accessToken": ACCESS, "refreshToken": REFRESH,
        "expiresAt": EXPIRES_MS}}}, "p", "apiKey"),
    ("weight string", {"version": 1, "accounts": {"p": {"apiKey": API_KEY, "weight": "2"}}},
     "p", "weight"),
    ("weight negative", {"version": 1, "accounts": {"p": {"apiKey": API_KEY, "weight": -1}}},
     "p", "weight"),
    ("weight bool", {"version": 1, "accounts": {"p": {"apiKey": API_KEY, "weight": True}}},
     "p", "weight"),
    ("priority float", {"version": 1, "accounts": {"p": {"apiKey": API_KEY, "priority": 1.5}}},
     "p", "priority"),
    ("disabled string", {"version": 1, "accounts": {"p": {"apiKey": API_KEY,
                                                          "disabled": "yes"}}},
     "p", "disabled"),
    ("bad name", {"version": 1, "accounts": {"my account": {"apiKey": API_KEY}}},
     "my account", None),
]


@pytest.mark.parametrize(("doc", "account", "field"), [b[1:] for b in BAD_FILES],
                         ids=[b[0] for b in BAD_FILES])
def test_malformed_file_is_rejected_naming_file_account_field(
        tmp_path: Path, doc: Any, account: str | None, field: str | None) -> None:
    """Each kind of malformed file raises AccountsFileError naming where, and no secret."""
    path = write(tmp_path / "accounts.json", doc)
    with pytest.raises(AccountsFileError) as info:
        AccountsFile(path).load()
    exc = info.value
    assert str(path) in str(exc)
    assert exc.path == str(path)
    assert exc.account == account
    assert exc.field == field
    if account is not None:
        assert repr(account) in str(exc)
    if field is not None:
        assert repr(field) in str(exc)
    assert_no_secret(exc)


@pytest.mark.parametrize("name", [ACCESS, "sk-ant-api03-" + "Zq7" * 32])
def test_token_pasted_as_account_name_is_not_echoed(tmp_path: Path, name: str) -> None:
    """A token used as an account name is rejected without repeating it."""
    path = write(tmp_path / "accounts.json", {"version": 1, "accounts": {name: {}}})
    with pytest.raises(AccountsFileError) as info:
        AccountsFile(path).load()
    assert str(path) in str(info.value)
    assert_no_secret(info.value)
    assert name not in str(info.value)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    """Loading a file that is not there says which file."""
    path = tmp_path / "nope.json"
    with pytest.raises(AccountsFileError, match="does not exist") as info:
        AccountsFile(path).load()
    assert str(path) in str(info.value)


def test_update_on_malformed_file_raises_and_leaves_it_untouched(tmp_path: Path) -> None:
    """update() never overwrites a file it could not parse, and never calls the change."""
    raw = json.dumps({"version": 1, "accounts": {"p": {"apiKey": API_KEY, "weight": "x"}},
                      "note": "keep me"})
    path = write(tmp_path / "accounts.json", raw)
    called: list[dict[str, Account]] = []

    def change(accs: dict[str, Account]) -> dict[str, Account]:
        called.append(accs)
        return accs

    with pytest.raises(AccountsFileError):
        AccountsFile(path).update(change)
    assert called == []
    assert path.read_text() == raw


def test_update_rejects_bad_new_name_without_writing(accounts_path: Path) -> None:
    """An invalid account name fails when the Account is built, before any update can run."""
    before = accounts_path.read_bytes()

    def change(accs: dict[str, Account]) -> dict[str, Account]:
        bad = Account(name="bad name", kind=AccountKind.API_KEY, api_key=Secret(API_KEY))
        return {**accs, bad.name: bad}

    with pytest.raises(ConfigError, match="bad name"):
        AccountsFile(accounts_path).update(change)
    assert accounts_path.read_bytes() == before


# -- writing ---------------------------------------------------------------------------------

def test_unknown_keys_survive_write_back(tmp_path: Path) -> None:
    """Top-level and per-account keys ccrotate does not know are written back unchanged."""
    doc = seed_doc()
    doc["comment"] = {"team": "infra", "n": [1, 2]}
    doc["accounts"]["primary"]["email"] = "ops@example.com"
    doc["accounts"]["primary"]["rateLimitTier"] = "max_20x"
    doc["accounts"]["ci"]["note"] = None
    path = write(tmp_path / "accounts.json", doc)
    f = AccountsFile(path)

    def renew(accs: dict[str, Account]) -> dict[str, Account]:
        accs["primary"] = accs["primary"].with_tokens(
            access_token=ACCESS + "new", refresh_token=REFRESH + "new", expires_at=2e9)
        return accs

    f.update(renew)
    out = json.loads(path.read_text())
    assert out["comment"] == {"team": "infra", "n": [1, 2]}
    primary = out["accounts"]["primary"]
    assert primary["email"] == "ops@example.com"
    assert primary["rateLimitTier"] == "max_20x"
    assert primary["accessToken"] == ACCESS + "new"
    assert primary["refreshToken"] == REFRESH + "new"
    assert primary["expiresAt"] == 2_000_000_000_000
    assert out["accounts"]["ci"] == {"apiKey": API_KEY, "weight": 3, "priority": 2,
                                     "disabled": True, "note": None}


def test_update_round_trip_is_lossless(accounts_path: Path) -> None:
    """Writing back what was read reproduces the same document (ms expiry exact)."""
    f = AccountsFile(accounts_path)
    f.update(lambda accs: accs)
    assert json.loads(accounts_path.read_text()) == seed_doc()
    assert f.load() == AccountsFile(accounts_path).load()


def test_update_returning_none_writes_nothing(accounts_path: Path) -> None:
    """A change that returns None leaves the file's bytes and stamp alone."""
    f = AccountsFile(accounts_path)
    before, stamp = accounts_path.read_bytes(), f.stamp()
    result = f.update(lambda accs: None)
    assert [a.name for a in result] == ["primary", "ci"]
    assert accounts_path.read_bytes() == before
    assert f.stamp() == stamp


def test_update_creates_a_missing_file(tmp_path: Path) -> None:
    """update() on a missing file starts empty and creates it (with its folder) at 0600."""
    path = tmp_path / "sub" / "accounts.json"
    acc = Account(name="ci", kind=AccountKind.API_KEY, api_key=Secret(API_KEY))
    AccountsFile(path).update(lambda accs: {**accs, "ci": acc})
    assert json.loads(path.read_text()) == {"version": 1, "accounts": {"ci": {"apiKey": API_KEY}}}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_write_is_atomic_leaves_no_temp_and_keeps_0600(accounts_path: Path) -> None:
    """After updates the folder holds only the file and its lock, still mode 0600."""
    f = AccountsFile(accounts_path)
    for i in range(3):
        def bump(accs: dict[str, Account], i: int = i) -> dict[str, Account]:
            return {**accs, "primary": dataclasses.replace(accs["primary"], priority=i)}

        f.update(bump)
    assert sorted(p.name for p in accounts_path.parent.iterdir()) == [
        "accounts.json", "accounts.json.lock"]
    assert stat.S_IMODE(accounts_path.stat().st_mode) == 0o600


def test_write_tightens_a_world_readable_file(tmp_path: Path) -> None:
    """A 0644 file comes back 0600 after a write: tokens are not left readable by others."""
    path = write(tmp_path / "accounts.json", seed_doc(), mode=0o644)
    AccountsFile(path).update(lambda accs: accs)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_failed_write_leaves_original_byte_identical(
        accounts_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str) -> None:
    """If fsync or rename fails, the old file is intact and no temp file is left behind."""
    before = accounts_path.read_bytes()

    def boom(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, boom)
    with pytest.raises(OSError, match="No space"):
        AccountsFile(accounts_path).update(
            lambda accs: {"primary": accs["primary"].with_tokens(
                access_token="x" * 40, refresh_token=None, expires_at=1.0)})
    monkeypatch.undo()
    assert accounts_path.read_bytes() == before
    assert sorted(p.name for p in accounts_path.parent.iterdir()) == [
        "accounts.json", "accounts.json.lock"]


def test_update_sees_changes_made_by_others(accounts_path: Path) -> None:
    """update() re-reads under the lock, so another writer's change is not lost."""
    mine, theirs = AccountsFile(accounts_path), AccountsFile(accounts_path)
    mine.load()  # a stale in-memory view, deliberately unused
    extra = Account(name="extra", kind=AccountKind.API_KEY, api_key=Secret(API_KEY + "x"))
    theirs.update(lambda accs: {**accs, "extra": extra})
    seen: list[str] = []

    def look(accs: dict[str, Account]) -> None:
        seen.extend(accs)

    mine.update(look)
    assert seen == ["primary", "ci", "extra"]


LOCK_SCRIPT = textwrap.dedent("""
    import dataclasses, os, sys, time
    from ccrotate._accounts.file import AccountsFile

    path, go, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    f = AccountsFile(path)
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.001)

    def bump(accs):
        acc = accs["primary"]
        count = acc.extra.get("counter", 0)
        time.sleep(0.0005)  # widen the read-modify-write window
        accs["primary"] = dataclasses.replace(acc, extra={**acc.extra, "counter": count + 1})
        return accs

    for _ in range(n):
        f.update(bump)
""")


def test_cross_process_updates_lose_nothing(accounts_path: Path) -> None:
    """Two processes doing read-modify-write through update() N times each lose no increment."""
    n, go = 40, accounts_path.with_name("go")
    procs = [subprocess.Popen([sys.executable, "-c", LOCK_SCRIPT, str(accounts_path), str(go),
                               str(n)], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:  # both are past their imports: start them together
        assert p.stdout is not None
        assert p.stdout.readline() == "ready\n"
    go.touch()
    for p in procs:
        assert p.wait(timeout=60) == 0
        assert p.stdout is not None
        p.stdout.close()
    doc = json.loads(accounts_path.read_text())
    assert doc["accounts"]["primary"]["counter"] == 2 * n
    assert doc["accounts"]["ci"]["apiKey"] == API_KEY


# -- the Claude CLI's own login --------------------------------------------------------------

def cli_doc() -> dict[str, Any]:
    return {
        "claudeAiOauth": {"accessToken": ACCESS, "refreshToken": REFRESH,
                          "expiresAt": EXPIRES_MS, "scopes": ["user:inference", "user:profile"],
                          "subscriptionType": "max"},
        "mcpOAuth": {"server": {"token": "keep-me"}},
    }


def test_cli_credentials_used_when_no_accounts_file(tmp_path: Path) -> None:
    """Without an accounts file, ~/.claude/.credentials.json is one account named default."""
    creds = write(tmp_path / ".credentials.json", cli_doc())
    f = discover_accounts_file(tmp_path / "accounts.json", creds)
    assert f.format is FileFormat.CLAUDE_CLI
    (acc,) = f.load()
    assert acc.name == "default"
    assert acc.kind is AccountKind.OAUTH
    assert acc.credential == Secret(ACCESS)
    assert acc.refresh_token == Secret(REFRESH)
    assert acc.expires_at == pytest.approx(EXPIRES_MS / 1000)


def test_cli_write_back_keeps_other_keys(tmp_path: Path) -> None:
    """A token refresh written to the CLI file keeps scopes, subscriptionType and other keys."""
    creds = write(tmp_path / ".credentials.json", cli_doc())
    f = AccountsFile(creds, format=FileFormat.CLAUDE_CLI)
    f.update(lambda accs: {"default": accs["default"].with_tokens(
        access_token=ACCESS + "2", refresh_token=REFRESH + "2", expires_at=1.8e9)})
    out = json.loads(creds.read_text())
    want = cli_doc()
    want["claudeAiOauth"].update(accessToken=ACCESS + "2", refreshToken=REFRESH + "2",
                                 expiresAt=1_800_000_000_000)
    assert out == want
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600


def test_accounts_file_preferred_over_cli(accounts_path: Path) -> None:
    """When both exist, the accounts file wins."""
    creds = write(accounts_path.with_name(".credentials.json"), cli_doc())
    f = discover_accounts_file(accounts_path, creds)
    assert f.format is FileFormat.ACCOUNTS
    assert f.path == accounts_path


def test_neither_file_points_at_the_accounts_path(tmp_path: Path) -> None:
    """With no file at all, loading names the accounts file the user should create."""
    f = discover_accounts_file(tmp_path / "accounts.json", tmp_path / ".credentials.json")
    with pytest.raises(AccountsFileError) as info:
        f.load()
    assert str(tmp_path / "accounts.json") in str(info.value)


def test_malformed_cli_file_is_rejected_without_secrets(tmp_path: Path) -> None:
    """A CLI file with a broken claudeAiOauth entry names the file and field, not the tokens."""
    doc = cli_doc()
    del doc["claudeAiOauth"]["refreshToken"]
    creds = write(tmp_path / ".credentials.json", doc)
    with pytest.raises(AccountsFileError) as info:
        AccountsFile(creds, format=FileFormat.CLAUDE_CLI).load()
    assert str(creds) in str(info.value)
    assert info.value.field == "refreshToken"
    assert_no_secret(info.value)
    creds2 = write(tmp_path / "c2.json", {"other": 1})
    with pytest.raises(AccountsFileError, match="claudeAiOauth"):
        AccountsFile(creds2, format=FileFormat.CLAUDE_CLI).load()


def test_write_back_through_a_symlink_keeps_the_link(tmp_path: Path) -> None:
    """A symlinked accounts file (dotfile managers) is updated in place, the link kept."""
    real = tmp_path / "store" / "accounts.json"
    real.parent.mkdir()
    real.write_text(json.dumps({"version": 1, "accounts": {"k": {"apiKey": "sk-ant-api03-k"}}}))
    link = tmp_path / "accounts.json"
    link.symlink_to(real)
    AccountsFile(link).update(lambda accounts: accounts)
    assert link.is_symlink()
    assert json.loads(real.read_text())["accounts"]["k"]["apiKey"] == "sk-ant-api03-k"
    assert not [p for p in real.parent.iterdir() if p.name.endswith(".tmp")]
