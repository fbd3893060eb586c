"""The benchmark harness runs end to end on tiny counts; no timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("direct", "minimal", "ccrotate")

pytestmark = pytest.mark.slow

for _module in ("uvicorn", "httptools", "uvloop", "aiohttp"):
    pytest.importorskip(_module)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke", "--out", str(out)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def test_smoke_run_writes_every_figure(smoke: tuple[dict[str, Any], str]) -> None:
    """A smoke run produces all six figures, the goal verdicts and the meta block."""
    result, _ = smoke
    assert set(result) == {"meta", "figures", "goals"}
    assert result["meta"]["smoke"] is True
    # shared_state is there when a redis-server is (it is optional: see benchmarks/run.py).
    assert set(result["figures"]) - {"shared_state"} == {
        "latency", "throughput", "streams", "failover", "memory", "translator"}
    names = " ".join(g["goal"] for g in result["goals"])
    for word in ("throughput", "added p50", "added p99", "TTFB", "event-gap", "failover",
                 "idle RSS", "per open stream"):
        assert word in names


def test_every_latency_scenario_measured_all_three_targets(
        smoke: tuple[dict[str, Any], str]) -> None:
    """Each upstream delay and concurrency has successful samples for every target."""
    latency = smoke[0]["figures"]["latency"]
    assert set(latency) == {f"delay{d}_c{c}" for d in (0, 20) for c in (1, 16, 64)}
    for scenario in latency.values():
        for target in TARGETS:
            fig = scenario[target]
            assert fig["requests"] > 0
            assert set(fig["statuses"]) == {"200"}
            assert fig["latency"]["p50"] > 0
    assert "proxy_cpu_us" in latency["delay0_c1"]["ccrotate"]


def test_streams_carry_every_event_through_both_proxies(
        smoke: tuple[dict[str, Any], str]) -> None:
    """Streamed answers arrive whole (same event count) through each proxy and directly."""
    for scenario in smoke[0]["figures"]["streams"].values():
        counts = {t: scenario[t]["events_per_request"] for t in TARGETS}
        assert counts["direct"] > 0
        assert counts["minimal"] == counts["direct"] == counts["ccrotate"]
        assert scenario["ccrotate"]["gap_error"]["n"] > 0


def test_failover_scenario_really_fails_over(smoke: tuple[dict[str, Any], str]) -> None:
    """Injected 429s reach the client directly but are hidden by ccrotate's failover."""
    failover = smoke[0]["figures"]["failover"]
    assert set(failover["direct"]["rate_limited"]["statuses"]) == {"429"}
    for variant in ("k0", "k1", "k2"):
        assert set(failover["ccrotate"][variant]["statuses"]) == {"200"}


def test_memory_figure_opens_every_stream(smoke: tuple[dict[str, Any], str]) -> None:
    """The held streams all open, and RSS is read for both proxies."""
    memory = smoke[0]["figures"]["memory"]
    for target in ("minimal", "ccrotate"):
        assert memory[target]["idle_kb"] > 0
        held = [v for k, v in memory[target].items() if k.startswith("streams")]
        assert held
        assert all(v["opened"] == int(k[7:]) for k, v in memory[target].items()
                   if k.startswith("streams"))


def test_table_is_printed(smoke: tuple[dict[str, Any], str]) -> None:
    """The human-readable table names each figure and the goals."""
    table = smoke[1]
    for heading in ("1. Added latency", "2. Throughput", "3. Streams", "4. Failover",
                    "5. Memory", "6. OpenAI translator", "Goals"):
        assert heading in table


@pytest.mark.parametrize("server", ["guarded", "granian"])
def test_ccrotate_runs_under_each_server(server: str, tmp_path: Path) -> None:
    """``--server`` serves ccrotate with uvicorn plus ``ccrotate serve``'s guard, or with
    granian, and every request and stream still gets through."""
    if server == "granian":
        pytest.importorskip("granian")
    out = tmp_path / "smoke.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke", "--only",
         "latency,streams", "--server", server, "--out", str(out)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["meta"]["server"] == server
    # Smoke durations are tiny: on a busy machine a scenario may finish no request at all.
    latency = [s["ccrotate"] for s in result["figures"]["latency"].values()]
    assert sum(fig["requests"] for fig in latency) > 0
    assert all(set(fig["statuses"]) <= {"200"} for fig in latency)
    streams = [s for s in result["figures"]["streams"].values() if s["ccrotate"]["requests"]]
    assert streams
    for scenario in streams:
        assert scenario["ccrotate"]["events_per_request"] == scenario["direct"][
            "events_per_request"] > 0


def test_shared_state_figures_when_redis_is_there(smoke: tuple[dict[str, Any], str]) -> None:
    """With a redis-server, ccrotate on Redis is measured beside the memory backend."""
    import shutil
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed: the shared-state figures are skipped")
    shared = smoke[0]["figures"]["shared_state"]
    assert set(shared) == {"c1", "c64"}
    for fig in shared.values():
        assert set(fig) == {"ccrotate", "ccrotate_redis"}
        redis = fig["ccrotate_redis"]
        assert redis["requests"] > 0
        assert redis["statuses"] == {"200": redis["requests"]}
        assert redis["redis_round_trips_per_request"] > 0
    assert "7. Shared state" in smoke[1]


@pytest.mark.parametrize("args", [[], ["--stream"],
                                  ["--lines", "logging", "--off", "access_log,metrics,auth"]])
def test_the_instruction_count_harness_drives_the_app(args: list[str]) -> None:
    """``benchmarks/instructions.py``'s in-process run (what valgrind counts) serves every
    request with a 200 through the Rotator's app; it exits non-zero on any other status."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "instructions.py"), "--child", "30", *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize("transport", ["httptools", "aiohttp"])
def test_the_instruction_count_harness_drives_a_real_transport(transport: str) -> None:
    """With ``--transport``, the counted run talks to the bench's fake upstream over a
    socket through that transport, and every request still gets its 200."""
    upstream = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "upstream.py")],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert upstream.stdout is not None
        port = int(upstream.stdout.readline().split()[1])
        proc = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "instructions.py"), "--child", "30",
             "--transport", transport, "--upstream-url", f"http://127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    finally:
        upstream.terminate()
        upstream.wait()
    assert proc.returncode == 0, proc.stderr[-3000:]
