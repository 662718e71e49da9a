"""The Redis store vs the local one: throughput and added latency, same run.

A second gateway (same server, one worker, pinned like the first) runs the
bench config with ``[store] kind = "redis"`` on the Redis at 127.0.0.1:6379
under a prefix of its own; ``paired`` then loads the local and the Redis
gateway back to back on the ``healthy`` alias, at 1 connection (latency) and
at 64 (throughput). The healthy hot path never waits on Redis (the sync runs
beside it), so the difference is the cost of the background sync and of the
fleet-aware policies. Skipped, with a note, when no Redis answers there.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

from benchmarks.gwconfig import TENANT_KEY
from benchmarks.loadgen import Target
from benchmarks.procs import wait_http

if TYPE_CHECKING:
    from benchmarks.bench import Bench

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
_CONNS = (1, 64)
_LOCAL_STORE = 'kind = "local"'


def _redis_answers() -> bool:
    try:
        with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def redis_store(bench: Bench) -> None:
    """Measure the Redis store against the local one, into ``results["store"]``."""
    if not _redis_answers():
        bench.say(f"store: no Redis on {REDIS_HOST}:{REDIS_PORT}; Redis row skipped")
        bench.results["store"] = {"skipped": "no Redis on 127.0.0.1:6379"}
        return
    server = bench.plan.servers[0]
    local_config = bench.config
    text = local_config.read_text()
    if _LOCAL_STORE not in text:
        raise RuntimeError("the bench config has no local [store] to swap")
    redis_config = local_config.with_name("bench-redis.toml")
    store = (
        f'kind = "redis"\nurl = "redis://{REDIS_HOST}:{REDIS_PORT}/0"\n'
        f'prefix = "fusebox-bench:{os.getpid()}:"'
    )
    redis_config.write_text(text.replace(_LOCAL_STORE, store, 1))
    bench.config = redis_config
    try:
        gw = bench.start_gateway(server, 1, bench.pins.gateway)
    finally:
        bench.config = local_config
    bench.extra.append(gw)
    try:
        wait_http(gw.proc, f"{gw.url}/readyz")
        _measure(bench, server, gw.url)
    finally:
        bench.fleet.stop(gw.proc)
        bench.extra.remove(gw)


def _measure(bench: Bench, server: str, redis_url: str) -> None:
    targets = {
        "local store": Target(bench.gateways[server].url, "healthy", TENANT_KEY),
        "redis store": Target(redis_url, "healthy", TENANT_KEY),
    }
    for target in targets.values():
        bench.load("warm-up", target, 16, bench.plan.warmup_s)
    rows = {}
    for conns in _CONNS:
        loads = bench.paired(f"store_c{conns}", targets, conns)
        local, shared = loads["local store"], loads["redis store"]
        rows[f"c{conns}"] = {
            "local_rps": local.rps,
            "redis_rps": shared.rps,
            "local_p50_ms": local.p50_ms,
            "redis_p50_ms": shared.p50_ms,
            "local_p99_ms": local.p99_ms,
            "redis_p99_ms": shared.p99_ms,
            "added_p50_ms": shared.p50_ms - local.p50_ms,
        }
        bench.say(
            f"store ({server}, {conns} conn): local {local.rps:,.0f}/s "
            f"p50 {local.p50_ms:.2f} ms, redis {shared.rps:,.0f}/s "
            f"p50 {shared.p50_ms:.2f} ms (+{shared.p50_ms - local.p50_ms:.2f} ms)"
        )
    bench.results["store"] = {"server": server, **rows}
