"""``python -m benchmarks.run [--quick] [--server uvicorn|granian|both] [--profile S]``.

Starts the fake upstream and Fusebox (one worker pinned to core 0; wrk and the
fake upstream on core 1), measures every figure of issue #4 side by side with
going direct, prints the table and writes ``benchmarks/results/latest.json`` and
``benchmarks/results/latency.png``. Every process it starts is stopped on the
way out, Ctrl-C included. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks import scenarios
from benchmarks.bench import Bench, Pinning, Plan
from benchmarks.chart import write_chart
from benchmarks.loadgen import wrk_path
from benchmarks.machine import CpuLedger, load_average, machine_info
from benchmarks.procs import Fleet, cpu_seconds, tree
from benchmarks.report import figures, floors_table, table, write_json
from benchmarks.storebench import redis_store

if TYPE_CHECKING:
    from types import FrameType

RESULTS = Path(__file__).resolve().parent / "results"
#: Others' CPU share above which the run is flagged as measured on a busy machine.
_BUSY = 0.1


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run under 60 s")
    parser.add_argument(
        "--server",
        choices=["uvicorn", "granian", "both"],
        default=None,
        help="server(s) to measure (default: both; uvicorn with --quick)",
    )
    parser.add_argument(
        "--profile",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="also record py-spy profiles of each gateway under load",
    )
    parser.add_argument(
        "--floors",
        action="store_true",
        help="also measure minimal reference apps beside Fusebox (CPU per request)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    return parser.parse_args(argv)


def ensure_wrk() -> bool:
    """Return whether wrk is there, trying ``apt-get install -y wrk`` if not."""
    if wrk_path():
        return True
    print("wrk is not installed: trying `apt-get install -y wrk` (Debian's package)")
    if shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "wrk"], check=False, timeout=300
        )
    if wrk_path():
        return True
    print(
        "wrk is still missing: run `apt-get update && apt-get install -y wrk`, "
        "or `make bench`, which does it.",
        file=sys.stderr,
    )
    return False


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001
    raise KeyboardInterrupt


def measure(bench: Bench) -> None:
    """Make every measurement of the plan, in order."""
    bench.start()
    scenarios.warm_up(bench)
    scenarios.probes(bench)
    scenarios.sweep(bench, stream=False)
    scenarios.sweep(bench, stream=True)
    scenarios.slow(bench)
    scenarios.failover(bench)
    scenarios.open_breaker(bench)
    scenarios.ttfe(bench)
    scenarios.memory_streams(bench)
    if bench.plan.floors:
        scenarios.floors(bench)
    if bench.plan.profile_s:
        from benchmarks.spy import profile_all  # noqa: PLC0415 - optional

        profile_all(bench, Path(bench.results["out"]))
    scenarios.workers(bench)
    redis_store(bench)


def report(bench: Bench, out: Path) -> None:
    """Print the tables and write the JSON and the chart."""
    results = bench.results
    rows = {server: figures(results, server) for server in bench.plan.servers}
    machine = results["machine"]
    print(
        f"\nmachine: {machine['nproc']} cores ({machine['cpu_model']}), Python "
        f"{machine['python']}; load average {machine['load_average_start']} at "
        f"start; other processes used {machine['others_cpu_share']:.0%} of the "
        "cores during the run"
    )
    if machine["others_cpu_share"] > _BUSY:
        print(
            "WARNING: the machine was shared: absolute rates and latencies are "
            "pessimistic; CPU per request (and each run's cpu share) is the steadier "
            "figure."
        )
    for server, server_rows in rows.items():
        print(f"\n## Fusebox ({server}, 1 worker) vs direct\n")
        print(table(server_rows))
    ceiling = max(
        results["runs"][f"plain_c{c}"]["direct"]["median"]["rps"]
        for c in bench.plan.plain_conns
    )
    print(
        f"\nfake upstream ceiling (wrk direct, best of {list(bench.plan.plain_conns)} "
        f"conns): {ceiling:,.0f} req/s"
    )
    results["upstream_ceiling_rps"] = ceiling
    if "floors" in results:
        print(floors_table(results["floors"]))
    write_json(out / "latest.json", results, rows)
    print(f"results written: {out / 'latest.json'}")
    print(write_chart(out / "latency.png", results))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status (1 if it could not run)."""
    args = _args(argv)
    server = args.server or ("uvicorn" if args.quick else "both")
    servers = ("uvicorn", "granian") if server == "both" else (server,)
    plan = Plan.make(
        quick=args.quick, servers=servers, profile_s=args.profile, floors=args.floors
    )
    if not ensure_wrk():
        return 1
    pins = Pinning.detect()
    if pins.load is not None:
        os.sched_setaffinity(0, pins.load)  # the TTFE client runs in this process
    signal.signal(signal.SIGTERM, _raise_interrupt)
    with tempfile.TemporaryDirectory(prefix="fusebox-bench-") as tmp:
        ledger = CpuLedger()
        fleet = Fleet(Path(tmp))
        bench = Bench(fleet, plan, pins)
        bench.results |= {
            "machine": machine_info(),
            "plan": plan.__dict__
            | {
                "pinning": {
                    "gateway": sorted(pins.gateway or []),
                    "load": sorted(pins.load or []),
                }
            },
        }
        bench.results["out"] = str(args.out)
        try:
            measure(bench)
            live_s = cpu_seconds([p for proc in fleet.procs for p in tree(proc.pid)])
            bench.results["machine"]["others_cpu_share"] = ledger.others_share(live_s)
        except KeyboardInterrupt:
            print("\ninterrupted: stopping every process started", file=sys.stderr)
            return 130
        except RuntimeError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
        finally:
            fleet.close()
        bench.results["machine"]["load_average_end"] = load_average()
        bench.say("done; all processes stopped")
    report(bench, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
