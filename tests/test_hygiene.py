"""Library hygiene: no assert in the package, no token on any exception's cause chain."""

from __future__ import annotations

import ast
import traceback
from pathlib import Path

import pytest

from ccrotate import AccountsFile, AccountsFileError

SRC = Path(__file__).resolve().parents[1] / "src" / "ccrotate"


def _asserts() -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text("utf-8"), filename=str(path))
        found += [f"{path.relative_to(SRC)}:{node.lineno}" for node in ast.walk(tree)
                  if isinstance(node, ast.Assert)]
    return found


# Only src/ccrotate/_proxy/attempts.py still has one (checked by the test below), and
# the engineer rewriting the proxy files removes it there.
@pytest.mark.xfail(reason="the proxy files are being rewritten", strict=False)
def test_no_assert_in_the_package() -> None:
    """`assert` vanishes under `python -O`: production code says what it means instead."""
    assert _asserts() == []


def test_remaining_asserts_are_only_in_the_files_being_rewritten() -> None:
    """The xfail above covers nothing but the proxy files another change is rewriting."""
    rewritten = {"_proxy/app.py", "_proxy/attempts.py", "_proxy/openai_route.py",
                 "_server/app.py"}
    assert {where.rsplit(":", 1)[0] for where in _asserts()} <= rewritten


TOKEN = "sk-ant-oat01-HYGIENEtoken7Qz9Wq3Lr8Vt2Yp5Kx1Mn4"


@pytest.mark.parametrize("raw", [
    '{"version": 1, "accounts": {"a": {"accessToken": "' + TOKEN,
    '{"version": 1, "accounts": {"a": {"accessToken": "' + TOKEN + '\\q"}}}',
    '{"version": 1, "accounts": {"a": {"accessToken": "' + TOKEN + '\x01"}}}',
    '{"version": 1, "accounts": {"a": {"accessToken": ' + TOKEN + '}}}',
    '{"version": 1, "accounts": {"a": {"accessToken": "' + TOKEN + '"}}} ' + TOKEN,
    '{"version": 1, "accounts": {"a": {"accessToken": "' + TOKEN + ' x", "refreshToken": "'
    + TOKEN + '", "expiresAt": 1e400}}}',
], ids=["truncated", "bad-escape", "control-char", "unquoted", "trailing", "space-and-inf"])
def test_accounts_file_errors_never_quote_a_token(tmp_path: Path, raw: str) -> None:
    """Neither the message nor anything on its cause chain (as a traceback prints it) has it."""
    path = tmp_path / "accounts.json"
    path.write_text(raw)
    with pytest.raises(AccountsFileError) as caught:
        AccountsFile(path).load()
    printed = "".join(traceback.format_exception(caught.value))
    assert TOKEN not in printed
    assert TOKEN[-10:] not in printed
