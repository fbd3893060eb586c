"""OAuth PKCE login: the URL, the pasted code, and the flow end to end against the fake."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from ccrotate import AccountKind, AccountsFile, CCRotateError, InvalidGrant, Secret, Settings
from ccrotate._accounts.login import (
    REDIRECT_URI,
    exchange_code,
    login,
    parse_pasted_code,
    start_login,
)
from ccrotate.testing import FakeUpstream, ServerHandle

CLIENT_ID = Settings().oauth_client_id


class Approver(io.StringIO):
    """Standard input that plays the user: approve the printed URL at the fake, paste back."""

    def __init__(self, fake: FakeUpstream, out: io.StringIO, *, tamper: bool = False) -> None:
        super().__init__()
        self.fake, self.out, self.tamper = fake, out, tamper

    def readline(self, size: int | None = -1) -> str:  # type: ignore[override]
        url = next(line for line in self.out.getvalue().splitlines() if "/authorize?" in line)
        pasted = self.fake.oauth.approve(url)
        if self.tamper:
            pasted = pasted.split("#")[0] + "#someone-elses-state"
        return pasted + "\n"


def test_authorize_url_carries_the_challenge_never_the_verifier() -> None:
    """S256 challenge of a 32-byte verifier, separate state, and every required parameter."""
    request = start_login("https://claude.ai/oauth/authorize", client_id=CLIENT_ID)
    parts = urlsplit(request.url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "claude.ai", "/oauth/authorize")
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    verifier = request.verifier.reveal()
    assert len(base64.urlsafe_b64decode(verifier + "=")) == 32
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    assert query == {
        "code": "true", "client_id": CLIENT_ID, "response_type": "code",
        "redirect_uri": REDIRECT_URI, "scope": "user:profile user:inference",
        "code_challenge": challenge.rstrip(b"=").decode(), "code_challenge_method": "S256",
        "state": request.state}
    assert verifier not in request.url
    assert request.state != verifier
    assert verifier not in repr(request)
    assert start_login("https://x.test/a", client_id="c").state != request.state


@pytest.mark.parametrize(("pasted", "expected"), [
    ("abc123#st-9\n", ("abc123", "st-9")),
    ("  abc123  ", ("abc123", None)),
    ("https://platform.claude.com/oauth/code/callback?code=abc123&state=st-9",
     ("abc123", "st-9")),
])
def test_pasted_code_forms(pasted: str, expected: tuple[str, str | None]) -> None:
    """``code#state``, a bare code, or the whole callback URL are understood."""
    assert parse_pasted_code(pasted) == expected


def test_pasted_nonsense_is_refused() -> None:
    """Something that cannot be a code is refused with a hint about the expected shape."""
    with pytest.raises(CCRotateError, match="code#state"):
        parse_pasted_code("not a code at all")


def test_login_end_to_end_against_the_fake(
        tmp_path: Path, fake_upstream_server: ServerHandle[FakeUpstream]) -> None:
    """URL → approve → paste → exchange → saved; the tokens work and were never printed."""
    fake = fake_upstream_server.app
    path = tmp_path / "accounts.json"
    path.write_text(json.dumps({"accounts": {"old": {"apiKey": "sk-ant-api03-keep-0001"}},
                                "team": "kept"}))
    out = io.StringIO()
    account = login("me", accounts_file=AccountsFile(path),
                    authorize_url=fake_upstream_server.url + "/oauth/authorize",
                    token_url=fake_upstream_server.url + "/v1/oauth/token",
                    client_id=CLIENT_ID, stdin=Approver(fake, out), stdout=out)
    issued = fake.oauth.issued[-1]
    assert account.kind is AccountKind.OAUTH
    assert account.access_token == Secret(issued.access_token)
    assert account.refresh_token == Secret(issued.refresh_token or "")
    assert account.expires_at is not None
    assert abs(account.expires_at - issued.expires_at) < 5
    saved = {a.name: a for a in AccountsFile(path).load()}
    assert saved["me"] == account
    assert "old" in saved
    assert json.loads(path.read_text())["team"] == "kept"
    exchange = fake.requests_for(path="/v1/oauth/token")[-1].json
    assert exchange["grant_type"] == "authorization_code"
    assert exchange["redirect_uri"] == REDIRECT_URI
    assert exchange["state"]
    printed = out.getvalue()
    for secret in (issued.access_token, issued.refresh_token or "?", exchange["code_verifier"]):
        assert secret not in printed


def test_a_foreign_state_is_refused_before_any_exchange(
        tmp_path: Path, fake_upstream_server: ServerHandle[FakeUpstream]) -> None:
    """A code pasted from another login attempt is refused; nothing is sent or saved."""
    fake = fake_upstream_server.app
    out = io.StringIO()
    path = tmp_path / "accounts.json"
    with pytest.raises(CCRotateError, match="state"):
        login("me", accounts_file=AccountsFile(path),
              authorize_url=fake_upstream_server.url + "/oauth/authorize",
              token_url=fake_upstream_server.url + "/v1/oauth/token", client_id=CLIENT_ID,
              stdin=Approver(fake, out, tamper=True), stdout=out)
    assert fake.requests_for(path="/v1/oauth/token") == []
    assert not path.exists()


def test_a_wrong_verifier_is_rejected_by_the_token_endpoint(
        fake_upstream_server: ServerHandle[FakeUpstream]) -> None:
    """The exchange proves possession of the verifier: another one gets invalid_grant."""
    fake = fake_upstream_server.app
    request = start_login(fake_upstream_server.url + "/oauth/authorize", client_id=CLIENT_ID)
    pasted = fake.oauth.approve(request.url)
    other = start_login("https://x.test/a", client_id=CLIENT_ID)
    forged = type(request)(request.url, request.state, other.verifier)
    with pytest.raises(InvalidGrant, match="authorization code rejected"):
        exchange_code(forged, pasted, token_url=fake_upstream_server.url + "/v1/oauth/token",
                      client_id=CLIENT_ID, account="me")
