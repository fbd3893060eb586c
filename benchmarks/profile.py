"""Profile ccrotate's reference server under the bench load with py-spy.

Starts the fake upstream and ``server.py`` (pinned like ``run.py``), attaches
``py-spy record`` to the server, drives closed-loop load from ``loadgen.py`` and
prints the hottest frames, inclusive and self, as shares of all samples. Writes
the collapsed stacks (``--out``, flamegraph.pl / speedscope input) as well.

Usage: ``python benchmarks/profile.py [--stream] [--concurrency 16] [--seconds 8]
[--out FILE]``. Needs ``py-spy`` (``pip install py-spy``) and, unless run as root,
``ptrace`` permission on the server process.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _procs import LoadGen, Proc  # noqa: E402

PATHS = {"ccrotate": "/api/v1/messages", "minimal": "/v1/messages"}


def summarise(collapsed: Path, top: int) -> str:
    """The ``top`` frames by inclusive and by self share of the samples."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    modules: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        raw = stack.split(";")
        frames = [_short(f) for f in raw]
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
        modules[_package(raw[-1])] += n
    if not total:
        return "no samples"
    out = [f"{total} samples", "", "self, by package:"]
    out += [f"  {n / total:6.1%}  {name}" for name, n in modules.most_common(12)]
    out += ["", "inclusive:"]
    out += [f"  {n / total:6.1%}  {frame}" for frame, n in inclusive.most_common(top)]
    out += ["", "self:"]
    out += [f"  {n / total:6.1%}  {frame}" for frame, n in own.most_common(top)]
    return "\n".join(out)


def _package(frame: str) -> str:
    # Who owns a frame: py-spy names files relative to sys.path, so the first part is
    # the package (ccrotate's with its subpackage).
    parts = Path(frame.partition(" (")[2].rstrip(")").rsplit(":", 1)[0]).parts
    if not parts:
        return "?"
    if parts[0] == "ccrotate" and len(parts) > 2:
        return "/".join(parts[:2])
    return parts[0].removesuffix(".py")


def _short(frame: str) -> str:
    # "fn (path/to/module.py:123)" -> "fn (module.py)": lines split one function apart.
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({'/'.join(Path(path).parts[-2:])})" if path else name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", action="store_true", help="streamed answers (SSE)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--server", default="uvicorn")
    parser.add_argument("--target", choices=("ccrotate", "minimal"), default="ccrotate",
                        help="profile ccrotate's server or the minimal proxy (the floor)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/profile.txt"))
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    pin = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    proxy_cpu, side_cpu = (1, 0) if pin else (None, None)
    procs: list[Proc] = []
    lg: LoadGen | None = None
    try:
        up = Proc("upstream", [sys.executable, str(HERE / "upstream.py")], side_cpu)
        procs.append(up)
        url = f"http://127.0.0.1:{up.wait_port()}"
        script = "server.py" if args.target == "ccrotate" else "minimal_proxy.py"
        cc = Proc(args.target, [sys.executable, str(HERE / script), "--upstream", url,
                                "--server", args.server], proxy_cpu)
        procs.append(cc)
        port = cc.wait_port()
        lg = LoadGen(side_cpu)
        spec = {"host": "127.0.0.1", "port": port, "path": PATHS[args.target],
                "kind": "closed", "concurrency": args.concurrency, "warmup": 0.5,
                "duration": args.seconds, "stream": args.stream}
        if args.stream:
            spec["headers"] = {"x-bench-gap-ms": "0", "x-bench-events": "20"}
        lg.run({**spec, "duration": 1.0})  # warm: first-request imports are not per request
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = subprocess.Popen([spy, "record", "--pid", str(cc.pid), "--format", "raw",
                                   "--rate", str(args.rate), "--nonblocking",
                                   "--duration", str(int(args.seconds) + 1), "-o",
                                   str(args.out)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
        result = lg.run(spec)
        _, err = record.communicate(timeout=args.seconds + 30)
        if record.returncode:
            print(err, file=sys.stderr)
            return 1
        print(f"{result['rps']:.0f} req/s, p50 {result['latency']['p50']:.3f} ms, "
              f"p99 {result['latency']['p99']:.3f} ms")
        print(summarise(args.out, args.top))
        print(f"\ncollapsed stacks: {args.out}")
    finally:
        if lg is not None:
            lg.stop()
        for proc in reversed(procs):
            proc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
