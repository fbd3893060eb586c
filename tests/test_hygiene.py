"""Library hygiene: no assert in the package, a light pytest plugin, no token in any cause."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
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


def test_no_assert_in_the_package() -> None:
    """`assert` vanishes under `python -O`: production code says what it means instead."""
    assert _asserts() == []


# Importable without a ccrotate import cost, so a test run (and `--cov`) starts clean.
HEAVY = ("ccrotate._proxy", "ccrotate._server", "ccrotate._observe", "ccrotate._pool",
         "ccrotate._tokens", "ccrotate._upstream", "ccrotate.testing._fake", "starlette",
         "httpx", "anthropic", "uvicorn", "aiohttp", "anyio", "msgspec")


def test_pytest_plugin_imports_nothing_heavy() -> None:
    """Loading the pytest11 entry point pulls in neither the proxy nor its dependencies."""
    code = ("import json, sys\n"
            "import ccrotate.testing._plugin\n"
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert json.loads(out.stdout) == []


def test_lazy_public_names_still_resolve() -> None:
    """The lazy top-level package and ccrotate.testing give the same objects as the modules."""
    code = ("import ccrotate, ccrotate.testing\n"
            "from ccrotate._pool.pool import AccountPool\n"
            "from ccrotate.testing._fake import FakeUpstream\n"
            "assert ccrotate.AccountPool is AccountPool\n"
            "assert ccrotate.testing.FakeUpstream is FakeUpstream\n"
            "from ccrotate import RotatingProxy, __version__\n"
            "print(__version__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()


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
