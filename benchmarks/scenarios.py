"""The measurements, in the order ``run.py`` makes them; each stores raw numbers.

Each function takes the ``Bench`` and writes into ``bench.results``:
``warm_up`` (and the RSS after it), ``probes`` (one request per alias, checked),
``sweep`` (plain or SSE at each connection count), ``slow`` (256 connections,
50 ms upstream), ``failover`` and ``open_breaker`` (1 connection, paired with a
healthy call), ``ttfe`` (raw-socket time to first event), ``memory_streams``
(RSS during 256 concurrent streams), ``workers`` (2 vs 1, unpinned) and, on
request, ``floors`` (Fusebox beside minimal reference apps).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from benchmarks import ttfe as ttfe_client
from benchmarks.bench import Gateway
from benchmarks.calls import probe, reset_upstream
from benchmarks.gwconfig import TENANT_KEY
from benchmarks.loadgen import Target
from benchmarks.procs import (
    ALL_CORES,
    HOST,
    free_port,
    memory_kib,
    set_affinity,
    wait_http,
)
from benchmarks.stats import RssSampler

if TYPE_CHECKING:
    from benchmarks.bench import Bench
    from benchmarks.loadgen import Load

_MIB = 1024
_EVENTS_EXPECTED = 11
_OPEN_WARM_CALLS = 5
_WORKERS_CONNS = 64
_MEMORY_CONNS = 256


def _memory(gw: Gateway) -> dict[str, Any]:
    per_pid = {pid: memory_kib(pid) for pid in gw.worker_pids()}
    return {
        "pids": {str(p): m for p, m in per_pid.items()},
        "rss_mib": max((m.get("VmRSS", 0) for m in per_pid.values()), default=0) / _MIB,
        "hwm_mib": max((m.get("VmHWM", 0) for m in per_pid.values()), default=0) / _MIB,
    }


def warm_up(bench: Bench) -> None:
    """Load each gateway briefly (plain, then SSE), then read its RSS."""
    for server, gw in bench.gateways.items():
        for stream in (False, True):
            target = Target(gw.url, "healthy", TENANT_KEY, stream=stream)
            bench.load("warm-up", target, 16, bench.plan.warmup_s)
        bench.results.setdefault("memory", {})[server] = {"after_warmup": _memory(gw)}
    reset_upstream(bench.upstream_url)
    bench.say(
        "warmed up: "
        + ", ".join(
            f"{s} RSS {m['after_warmup']['rss_mib']:.1f} MiB"
            for s, m in bench.results["memory"].items()
        )
    )


def probes(bench: Bench) -> list[str]:
    """Send one request per alias and shape; return the problems found."""
    found: dict[str, Any] = {}
    problems = []
    for alias in ("healthy", "slow", "failover", "open", "drip"):
        for stream in (False, True):
            for label, target in bench.targets(alias, stream=stream).items():
                result = probe(target)
                found[f"{label}:{alias}:{'sse' if stream else 'plain'}"] = result
                if result["status"] != 200 or result.get("error_event"):
                    problems.append(f"{label} {alias} stream={stream}: {result}")
                if stream and result.get("events") != _EVENTS_EXPECTED:
                    problems.append(
                        f"{label} {alias}: {result.get('events')} SSE events, "
                        f"not {_EVENTS_EXPECTED}"
                    )
    bench.results["probes"] = found
    for problem in problems:
        bench.say(f"PROBE PROBLEM: {problem}")
    return problems


def sweep(bench: Bench, *, stream: bool) -> None:
    """Healthy alias at each connection count, plain or SSE, every target."""
    kind = "stream" if stream else "plain"
    conns = bench.plan.stream_conns if stream else bench.plan.plain_conns
    for c in conns:
        bench.paired(f"{kind}_c{c}", bench.targets("healthy", stream=stream), c)


def slow(bench: Bench) -> None:
    """256 connections, the upstream answering after 50 ms."""
    bench.paired("slow_c256", bench.targets("slow"), 256)


def _with_baseline(bench: Bench, alias: str) -> dict[str, Target]:
    targets = bench.targets(alias, direct=False)
    for server, gw in bench.gateways.items():
        targets[f"{server}:healthy"] = Target(gw.url, "healthy", TENANT_KEY)
    return targets


def failover(bench: Bench) -> None:
    """One failover after an immediate 500, paired with a healthy call (1 conn)."""
    bench.paired("failover_c1", _with_baseline(bench, "failover"), 1)


def open_breaker(bench: Bench) -> None:
    """Open up3's breaker, check it is open, then measure the skip (1 conn)."""
    states = {}
    for server, gw in bench.gateways.items():
        target = Target(gw.url, "open", TENANT_KEY)
        seen = [probe(target) for _ in range(_OPEN_WARM_CALLS)]
        states[server] = seen[-1]
        if "=open" not in str(seen[-1].get("x-fusebox-attempts")):
            bench.say(f"WARNING: {server}: up3's breaker did not open: {seen[-1]}")
    bench.results["open_breaker_check"] = states
    bench.paired("open_c1", _with_baseline(bench, "open"), 1)


def ttfe(bench: Bench) -> None:
    """Time to first SSE event, sequential streams, targets interleaved in blocks."""
    targets = bench.targets("healthy", stream=True)
    blocks = 10  # interleaved, so a noisy moment hits every target alike
    per_block = max(1, bench.plan.ttfe_streams // blocks)
    merged: dict[str, ttfe_client.Ttfe] = {}
    for _ in range(blocks):
        reset_upstream(bench.upstream_url)
        for label, target in targets.items():
            got = ttfe_client.measure(label, target, streams=per_block, budget_s=20.0)
            if label in merged:
                merged[label].samples_ms += got.samples_ms
                merged[label].errors += got.errors
            else:
                merged[label] = got
    bench.results["ttfe"] = {label: t.as_json() for label, t in merged.items()}
    bench.say(
        "ttfe: "
        + "  ".join(
            f"{label} p50={t.pct(50):.3f} p99={t.pct(99):.3f}ms "
            f"events={t.events_per_stream}"
            for label, t in merged.items()
        )
    )


def memory_streams(bench: Bench) -> None:
    """RSS while 256 connections each hold an ~80 ms stream open, one gateway a time."""
    reset_upstream(bench.upstream_url)
    for server, gw in bench.gateways.items():
        sampler = RssSampler(gw.worker_pids())
        sampler.start()
        try:
            load = bench.load(
                server, Target(gw.url, "drip", TENANT_KEY, stream=True), _MEMORY_CONNS
            )
        finally:
            peaks = sampler.stop()
        entry = bench.results["memory"][server]
        entry["streams_256"] = {
            "peak_rss_mib": max(peaks.values(), default=0) / _MIB,
            "load": load.as_json(),
        }
        entry["after_streams"] = _memory(gw)
        bench.say(
            f"memory {server}: peak RSS {entry['streams_256']['peak_rss_mib']:.1f} MiB "
            f"at 256 streams ({load.rps:,.0f} streams/s, errors {load.failed}); "
            f"VmHWM {entry['after_streams']['hwm_mib']:.1f} MiB"
        )


def workers(bench: Bench) -> None:
    """``--workers 2`` vs 1, every process free to use both cores, same run."""
    server = bench.plan.servers[0]
    upstream = bench.upstream
    if upstream is None:
        raise RuntimeError("the fake upstream is not running")
    one = bench.start_gateway(server, 1, None)
    two = bench.start_gateway(server, 2, None)
    bench.extra += [one, two]
    set_affinity(upstream.pid, ALL_CORES)
    saved_load = bench.pins
    try:
        bench.pins = type(saved_load)(gateway=None, load=None)
        targets = {
            "1 worker": Target(one.url, "healthy", TENANT_KEY),
            "2 workers": Target(two.url, "healthy", TENANT_KEY),
        }
        for label in () if bench.plan.quick else ("1 worker", "2 workers"):
            bench.load("warm-up", targets[label], 16, bench.plan.warmup_s)
        loads: dict[str, Load] = bench.paired(
            f"workers_c{_WORKERS_CONNS}", targets, _WORKERS_CONNS
        )
    finally:
        bench.pins = saved_load
        if bench.pins.load is not None:
            set_affinity(upstream.pid, bench.pins.load)
        bench.fleet.stop(one.proc)
        bench.fleet.stop(two.proc)
        bench.extra.clear()
    bench.results["workers"] = {
        "server": server,
        "connections": _WORKERS_CONNS,
        "one_rps": loads["1 worker"].rps,
        "two_rps": loads["2 workers"].rps,
    }


_FLOORS = ("canned", "aiohttp_proxy", "lean_proxy")


def floors(bench: Bench) -> None:
    """Fusebox beside reference apps (``benchmarks.floors``): CPU per request."""
    started = []
    for name in _FLOORS:
        port = free_port()
        argv = [
            sys.executable, "-m", "uvicorn", f"benchmarks.floors:{name}",
            "--host", HOST, "--port", str(port), "--loop", "uvloop",
            "--http", "httptools", "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
        env = {"FLOOR_UPSTREAM": bench.upstream_url.removeprefix("http://")}
        proc = bench.fleet.spawn(
            f"floor-{name}", argv, cpus=bench.pins.gateway, env=env
        )
        wait_http(proc, f"http://{HOST}:{port}/")
        started.append(Gateway(name, 1, proc, f"http://{HOST}:{port}"))
    bench.extra += started
    try:
        targets = {gw.server: Target(gw.url, "gpt-a") for gw in started}
        server = bench.plan.servers[0]
        targets[f"fusebox ({server})"] = Target(
            bench.gateways[server].url, "healthy", TENANT_KEY
        )
        loads = bench.paired(f"floors_c{_WORKERS_CONNS}", targets, _WORKERS_CONNS)
    finally:
        for gw in started:
            bench.fleet.stop(gw.proc)
        bench.extra.clear()
    bench.results["floors"] = {
        label: {"cpu_us_per_request": load.cpu_us_per_request, "rps": load.rps}
        for label, load in loads.items()
    }
