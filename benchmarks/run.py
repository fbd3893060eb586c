"""Run the benchmark suite: ccrotate against a direct connection and a minimal proxy.

Starts, each in its own process on loopback: the fake upstream (``upstream.py``), the
minimal pass-through proxy (``minimal_proxy.py``), ccrotate's reference server
(``server.py``) and one load-generator worker (``loadgen.py``). Every scenario runs
against the three targets back to back, so each figure compares like with like at the
same moment. Prints a table and writes ``bench-results/<time>.json``.

With ``--pin`` (the default when the machine has 2+ CPUs) the proxies run on CPU 1 and
the upstream and load generator on CPU 0: the proxy under test has a core to itself and
the figures move less from run to run.

Usage: ``python benchmarks/run.py [--smoke] [--out FILE] [--no-pin]``. ``--smoke`` runs
tiny counts in a few seconds (for CI); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from report import evaluate, render  # noqa: E402
from server import KEYS  # noqa: E402

TARGETS = ("direct", "minimal", "ccrotate")
PATHS = {"direct": "/v1/messages", "minimal": "/v1/messages", "ccrotate": "/api/v1/messages"}


class Proc:
    """A child process that prints ``PORT <n>`` (or any first line) when ready."""

    def __init__(self, name: str, cmd: list[str], cpu: int | None,
                 stdin: bool = False) -> None:
        self.name = name
        if cpu is not None:
            cmd = ["taskset", "-c", str(cpu), *cmd]
        self.popen = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            text=True, bufsize=1, cwd=HERE.parent)
        self.port = 0

    def wait_port(self, timeout: float = 30.0) -> int:
        assert self.popen.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.popen.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.name} exited before listening")
            if line.startswith("PORT "):
                self.port = int(line.split()[1])
                return self.port
        raise RuntimeError(f"{self.name} did not start in {timeout} s")

    @property
    def pid(self) -> int:
        return self.popen.pid

    def rss_kb(self) -> int:
        """Resident set size from /proc (kB)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def cpu_seconds(self) -> float:
        """User + system CPU time so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


class LoadGen:
    """The load-generator worker: one JSON spec per line in, one result per line out."""

    def __init__(self, cpu: int | None) -> None:
        self.proc = Proc("loadgen", [sys.executable, str(HERE / "loadgen.py")], cpu, stdin=True)

    def _send(self, spec: dict[str, Any]) -> None:
        stdin = self.proc.popen.stdin
        assert stdin is not None
        stdin.write(json.dumps(spec) + "\n")
        stdin.flush()

    def _line(self) -> str:
        stdout = self.proc.popen.stdout
        assert stdout is not None
        line = stdout.readline()
        if not line:
            raise RuntimeError("load generator exited")
        return line

    def run(self, spec: dict[str, Any]) -> dict[str, Any]:
        self._send(spec)
        line = self._line()
        if not line.startswith("RESULT "):
            raise RuntimeError(f"load generator: {line!r}")
        return json.loads(line[7:])  # type: ignore[no-any-return]

    @contextlib.contextmanager
    def hold(self, spec: dict[str, Any]) -> Iterator[int]:
        """Open the streams of a ``hold`` spec; yields how many opened, closes them after."""
        self._send(spec)
        line = self._line()
        if not line.startswith("OPEN "):
            raise RuntimeError(f"load generator: {line!r}")
        try:
            yield int(line.split()[1])
        finally:
            stdin = self.proc.popen.stdin
            assert stdin is not None
            stdin.write("close\n")
            stdin.flush()
            self._line()

    def stop(self) -> None:
        stdin = self.proc.popen.stdin
        if stdin is not None:
            with contextlib.suppress(OSError):
                stdin.close()
        self.proc.stop()


# -- scenarios ---------------------------------------------------------------------------------

def plan(smoke: bool) -> dict[str, Any]:
    """Durations and counts: the real run stays under ~5 minutes, the smoke run seconds."""
    if smoke:
        return {"warmup": 0.05, "duration": 0.15, "slow_duration": 0.2, "tput": 0.3,
                "stream_duration": 0.3, "failover_samples": 5, "hold": (10, 20),
                "translator_n": 200, "concurrency": (1, 16, 64), "stream_c": 4}
    return {"warmup": 0.5, "duration": 3.0, "slow_duration": 4.0, "tput": 5.0,
            "stream_duration": 4.0, "failover_samples": 300, "hold": (100, 1000),
            "translator_n": 20_000, "concurrency": (1, 16, 64), "stream_c": 16}


def base(port: int, target: str) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": port, "path": PATHS[target]}


def measure(lg: LoadGen, procs: dict[str, Proc], target: str,
            spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``spec`` against ``target``, adding the proxy's CPU time per request."""
    proc = procs.get(target)
    cpu0 = proc.cpu_seconds() if proc is not None else 0.0
    result = lg.run({**base(procs_port(procs, target), target), **spec})
    if proc is not None and result.get("sent"):
        result["proxy_cpu_us"] = (proc.cpu_seconds() - cpu0) / result["sent"] * 1e6
    return result


def procs_port(procs: dict[str, Proc], target: str) -> int:
    return procs["upstream" if target == "direct" else target].port


def latency(lg: LoadGen, procs: dict[str, Proc], p: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for delay in (0, 20):
        for c in p["concurrency"]:
            key = f"delay{delay}_c{c}"
            out[key] = {}
            for target in TARGETS:
                spec = {"kind": "closed", "concurrency": c, "warmup": p["warmup"],
                        "duration": p["slow_duration"] if delay else p["duration"],
                        "headers": {"x-bench-delay-ms": str(delay)}}
                out[key][target] = measure(lg, procs, target, spec)
            log(f"latency {key}: " + "  ".join(
                f"{t} p50 {out[key][t]['latency']['p50']:.3f} p99 "
                f"{out[key][t]['latency']['p99']:.3f} ms" for t in TARGETS))
    return out


def throughput(lg: LoadGen, procs: dict[str, Proc], p: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for target in TARGETS:
        spec = {"kind": "closed", "concurrency": 64, "warmup": p["warmup"],
                "duration": p["tput"]}
        out[target] = measure(lg, procs, target, spec)
        # Large (Claude-Code-sized) bodies: the cost of peeking a 115 KB request.
        spec = {"kind": "closed", "concurrency": 1, "warmup": p["warmup"],
                "duration": p["duration"], "body": "large"}
        out[target]["large_c1"] = measure(lg, procs, target, spec)
    log("throughput: " + "  ".join(f"{t} {out[t]['rps']:.0f}/s" for t in TARGETS))
    return out


def streams(lg: LoadGen, procs: dict[str, Proc], p: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    headers = {"x-bench-delay-ms": "0", "x-bench-gap-ms": "10", "x-bench-events": "20"}
    for c in (1, p["stream_c"]):
        out[f"c{c}"] = {}
        for target in TARGETS:
            spec = {"kind": "closed", "concurrency": c, "warmup": p["warmup"],
                    "duration": p["stream_duration"], "stream": True, "headers": headers}
            out[f"c{c}"][target] = measure(lg, procs, target, spec)
        log(f"streams c{c}: " + "  ".join(
            f"{t} ttfb p50 {out[f'c{c}'][t]['ttfb']['p50']:.3f} gap-err p99 "
            f"{out[f'c{c}'][t]['gap_error']['p99']:.3f} ms" for t in TARGETS))
    return out


def failover(lg: LoadGen, procs: dict[str, Proc], p: dict[str, Any]) -> dict[str, Any]:
    n = p["failover_samples"]
    direct = lg.run({**base(procs["upstream"].port, "direct"), "kind": "sequence",
                     "samples": n, "variants": [
                         {"name": "ok"},
                         {"name": "rate_limited", "headers": {"x-bench-429": "bench-client-key"}},
                     ]})
    proxied = lg.run({**base(procs["ccrotate"].port, "ccrotate"), "kind": "sequence",
                      "samples": n, "reset": "/bench/reset", "variants": [
                          {"name": "k0"},
                          {"name": "k1", "headers": {"x-bench-429": KEYS[0]}},
                          {"name": "k2", "headers": {"x-bench-429": ",".join(KEYS[:2])}},
                      ]})
    log(f"failover: direct 429 p50 {direct['rate_limited']['p50']:.3f} ms; ccrotate "
        + "  ".join(f"{k} p50 {proxied[k]['p50']:.3f}" for k in ("k0", "k1", "k2")))
    return {"direct": direct, "ccrotate": proxied}


def memory(lg: LoadGen, procs: dict[str, Proc], p: dict[str, Any],
           idle: dict[str, int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # Long enough to measure, short enough that the minimal proxy (which does not watch
    # for disconnects) stops relaying abandoned streams soon after: 9 events, 2 s apart.
    headers = {"x-bench-delay-ms": "0", "x-bench-gap-ms": "2000", "x-bench-events": "3"}
    for target in ("minimal", "ccrotate"):
        proc = procs[target]
        out[target] = {"idle_kb": idle[target]}
        for n in p["hold"]:
            before = proc.rss_kb()
            spec = {**base(proc.port, target), "kind": "hold", "streams": n,
                    "headers": headers, "timeout": 60}
            with lg.hold(spec) as opened:
                time.sleep(0.3)  # let the last sends settle
                during = proc.rss_kb()
            out[target][f"streams{n}"] = {
                "opened": opened, "before_kb": before, "during_kb": during,
                "per_stream_kb": (during - before) / opened if opened else None}
            time.sleep(0.3)
        out[target]["after_kb"] = proc.rss_kb()
    log("memory: " + "  ".join(
        f"{t} idle {out[t]['idle_kb'] / 1024:.1f} MB, per stream "
        + ", ".join(f"{out[t][f'streams{n}']['per_stream_kb'] or 0:.1f} KB"
                    for n in p["hold"]) for t in out))
    return out


def translator(p: dict[str, Any]) -> dict[str, Any]:
    try:
        from ccrotate._openai._bench import bench_translator
    except ImportError as exc:
        return {"available": False, "reason": str(exc)}
    return {"available": True, **bench_translator(p["translator_n"])}


# -- orchestration -----------------------------------------------------------------------------

def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def meta(pin: bool) -> dict[str, Any]:
    import aiohttp
    import starlette
    import uvicorn

    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpus": os.cpu_count(),
            "cpu_model": model, "python": platform.python_version(),
            "platform": platform.platform(), "pinned": pin,
            "versions": {"aiohttp": aiohttp.__version__, "uvicorn": uvicorn.__version__,
                         "starlette": starlette.__version__}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="ccrotate benchmarks")
    parser.add_argument("--smoke", action="store_true", help="tiny counts, for CI")
    parser.add_argument("--out", type=Path, help="JSON path (default bench-results/<time>.json)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--only", help="comma list of: latency,throughput,streams,failover,"
                                       "memory,translator")
    args = parser.parse_args(argv)
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and _has_taskset()
    proxy_cpu, side_cpu = (1, 0) if pin else (None, None)
    p = plan(args.smoke)
    only = set(args.only.split(",")) if args.only else None
    started = time.monotonic()

    procs: dict[str, Proc] = {}
    lg: LoadGen | None = None
    try:
        py = sys.executable
        procs["upstream"] = Proc("upstream", [py, str(HERE / "upstream.py")], side_cpu)
        url = f"http://127.0.0.1:{procs['upstream'].wait_port()}"
        procs["minimal"] = Proc("minimal", [py, str(HERE / "minimal_proxy.py"), "--upstream",
                                            url], proxy_cpu)
        procs["ccrotate"] = Proc("ccrotate", [py, str(HERE / "server.py"), "--upstream", url],
                                 proxy_cpu)
        procs["minimal"].wait_port()
        procs["ccrotate"].wait_port()
        idle = {t: procs[t].rss_kb() for t in ("minimal", "ccrotate")}
        lg = LoadGen(side_cpu)
        figures: dict[str, Any] = {}

        def want(name: str) -> bool:
            return only is None or name in only

        if want("latency"):
            figures["latency"] = latency(lg, procs, p)
        if want("throughput"):
            figures["throughput"] = throughput(lg, procs, p)
        if want("streams"):
            figures["streams"] = streams(lg, procs, p)
        if want("failover"):
            figures["failover"] = failover(lg, procs, p)
        if want("memory"):
            figures["memory"] = memory(lg, procs, p, idle)
        if want("translator"):
            figures["translator"] = translator(p)
    finally:
        if lg is not None:
            lg.stop()
        for proc in procs.values():
            proc.stop()

    result = {"meta": {**meta(pin), "smoke": args.smoke,
                       "seconds": round(time.monotonic() - started, 1)},
              "figures": figures}
    result["goals"] = evaluate(figures)
    out = args.out or HERE.parent / "bench-results" / time.strftime("%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(render(result))
    print(f"\nwrote {out}")
    return 0


def _has_taskset() -> bool:
    try:
        subprocess.run(["taskset", "-c", "0", "true"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
