"""The package as users get it: a wheel built from this tree, installed (not editable)
with ``[server]`` into a fresh venv, runs ``ccrotate demo --exit`` and carries its data.

Slow (a wheel build and a pip install, ~30 s with a warm pip cache); `.ci/run` runs it
with the rest of the suite. pip reads the machine's own index configuration.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
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


def test_the_images_command_serves_and_passes_its_healthcheck(
        installed: Path, tmp_path: Path) -> None:
    """The Dockerfile's ENTRYPOINT + CMD with its ENV, run from the venv: it listens on
    0.0.0.0 with a client token, and the HEALTHCHECK script says healthy."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M)[1])  # type: ignore[index]
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M)[1])  # type: ignore[index]
    image_env = dict(re.findall(r"(CCROTATE_\w+)=(\S+)", text))
    data = tmp_path / "data"  # the /data volume
    data.mkdir(mode=0o700)
    (data / "accounts.json").write_text(json.dumps({"version": 1, "accounts": {
        "ci": {"apiKey": "sk-ant-api03-container-test-0000"}}}))
    (data / "accounts.json").chmod(0o600)
    env = {"PATH": f"{installed}{os.pathsep}{os.environ['PATH']}", "HOME": str(data),
           **{k: v.replace("/data", str(data)) for k, v in image_env.items()},
           "CCROTATE_PORT": str(free_port()), "CCROTATE_AUTH_TOKEN": "c" * 32}
    assert env["CCROTATE_HOST"] == "0.0.0.0"
    proc = subprocess.Popen([*entrypoint, *cmd], cwd=data, env=env, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "clients use ANTHROPIC_BASE_URL=" in line:
                break
        else:
            pytest.fail("the server stopped before it was ready")
        check = [installed / "python", ROOT / "docker/healthcheck.py"]
        deadline = time.monotonic() + 15
        while subprocess.run(check, env=env, capture_output=True, check=False).returncode:
            assert time.monotonic() < deadline, "never healthy"
            time.sleep(0.2)
        assert (data / "accounts.json").stat().st_mode & 0o777 == 0o600
    finally:
        proc.terminate()
        proc.wait(10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
