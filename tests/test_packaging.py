"""The package as users get it: a wheel built from this tree, installed (not editable)
with ``[server]`` into a fresh venv, runs ``ccrotate demo --exit`` and carries its data.

Slow (a wheel build and a pip install, ~30 s with a warm pip cache); `.ci/run` runs it
with the rest of the suite. pip reads the machine's own index configuration.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def run(*argv: str | Path, cwd: Path, timeout: float = 300) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["HOME"] = str(cwd)  # no real accounts, config or login
    done = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{argv}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The venv's bin directory, with ccrotate[server] installed from a fresh wheel."""
    tmp = tmp_path_factory.mktemp("packaging")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp / "dist", ROOT,
        cwd=tmp)
    (wheel,) = (tmp / "dist").glob("ccrotate-*.whl")
    venv.create(tmp / "venv", with_pip=True)
    bin_dir = tmp / "venv" / ("Scripts" if os.name == "nt" else "bin")
    run(bin_dir / "python", "-m", "pip", "install", "-q", f"{wheel}[server]", cwd=tmp)
    return bin_dir


def test_installed_wheel_carries_its_data_files(installed: Path) -> None:
    out = run(installed / "python", "-c", (
        "import ccrotate, pathlib; p = pathlib.Path(ccrotate.__file__).parent; "
        "print(p); print(*sorted(f.name for f in p.iterdir()))"), cwd=installed)
    where, names = out.splitlines()
    assert "site-packages" in where  # the wheel's copy, not this source tree
    assert {"dashboard.html", "pricing.json", "py.typed"} <= set(names.split())


def test_installed_demo_runs_with_only_the_server_extra(installed: Path) -> None:
    out = run(installed / "ccrotate", "demo", "--exit", cwd=installed.parent, timeout=120)
    assert "served by team-key" in out
    assert "never knew" in out
    missing = run(installed / "python", "-c", (
        "import importlib.util as u; print([m for m in ('anthropic', 'duckdb', 'pytest') "
        "if u.find_spec(m)])"), cwd=installed)
    assert missing.strip() == "[]"  # nothing beyond [server] was needed
