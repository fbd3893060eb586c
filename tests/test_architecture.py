"""The layers are checked, not hoped for: import-linter's contracts (pyproject.toml) hold."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "ccrotate"


def test_import_contracts_hold() -> None:
    """Layers flow one way (cli > server > observe|client|sdk > proxy > upstream|tokens >
    state > pool > accounts > base), ccrotate.testing stands alone, and no package has an
    import cycle."""
    pytest.importorskip("importlinter")
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "3 kept, 0 broken" in proc.stdout


def test_modules_are_small_enough_to_read_in_one_sitting() -> None:
    """No function of the package runs past 60 lines (they were split where they did)."""
    long = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > 60:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({lines})")
    assert long == []


def test_every_private_package_says_what_it_owns() -> None:
    """Each layer's __init__ has a docstring naming what it owns and may import."""
    for init in SRC.glob("_*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc, init


def test_sdk_mode_imports_the_agent_sdk_lazily() -> None:
    """``import ccrotate``, the Rotator and the SDK app itself never import
    ``claude_agent_sdk`` (a second of imports, and an optional extra): only
    ``ccrotate._sdk.agent`` does, when SDK mode serves its first call."""
    code = ("import sys, ccrotate; from ccrotate import Rotator, SDKApp, SDKConfig; "
            "import ccrotate._server.rotator, ccrotate._sdk.app; "
            "print('claude_agent_sdk' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True, env={"PYTHONPATH": str(ROOT / "src")})
    assert done.stdout.strip() == "False"
    users = [p.relative_to(SRC) for p in SRC.rglob("*.py")
             if "claude_agent_sdk" in p.read_text(encoding="utf-8")
             and p.name != "agent.py"]
    assert all("import claude_agent_sdk" not in (SRC / p).read_text(encoding="utf-8")
               for p in users), users
