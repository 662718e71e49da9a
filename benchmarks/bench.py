"""The bench: the plan, the processes under test, and paired, repeated wrk runs.

Every figure is measured side by side: within one repeat, each target (the fake
upstream directly, and each gateway server) is loaded back to back, the order
flipping between repeats; the medians of the repeats are kept, with every raw
run, in ``results``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.calls import reset_upstream
from benchmarks.gwconfig import TENANT_KEY, UPSTREAM_KEY_ENV, write_config
from benchmarks.loadgen import Load, Target, run_wrk
from benchmarks.procs import (
    ALL_CORES,
    HOST,
    Fleet,
    Proc,
    cpu_seconds,
    free_port,
    python_procs,
    wait_http,
)
from benchmarks.stats import median_load

DIRECT = "direct"
#: The upstream model each gateway alias ends up calling (for the direct runs).
DIRECT_MODEL = {
    "healthy": "gpt-a",
    "slow": "gpt-a~delay50",
    "drip": "gpt-a~gap10",
    "failover": "gpt-a",
    "open": "gpt-a",
}


@dataclass(frozen=True)
class Plan:
    """How long and how often to measure, and at which connection counts."""

    quick: bool
    duration_s: float
    warmup_s: float
    repeats: int
    plain_conns: tuple[int, ...]
    stream_conns: tuple[int, ...]
    ttfe_streams: int
    servers: tuple[str, ...]
    profile_s: float
    floors: bool = False

    @classmethod
    def make(
        cls,
        *,
        quick: bool,
        servers: tuple[str, ...],
        profile_s: float,
        floors: bool = False,
    ) -> Plan:
        """Return the quick smoke plan (< 60 s) or the full one."""
        if quick:
            return cls(
                quick=True,
                duration_s=2.0,
                warmup_s=1.0,
                repeats=1,
                plain_conns=(1, 64),
                stream_conns=(64,),  # 1-connection streaming: the TTFE client
                ttfe_streams=150,
                servers=servers,
                profile_s=profile_s,
                floors=floors,
            )
        return cls(
            quick=False,
            duration_s=4.0,
            warmup_s=3.0,
            repeats=3,
            plain_conns=(1, 16, 64, 256),
            stream_conns=(1, 16, 64, 256),
            ttfe_streams=300,
            servers=servers,
            profile_s=profile_s,
            floors=floors,
        )


@dataclass(frozen=True)
class Pinning:
    """Cores for the gateway and for the load generator plus the fake upstream."""

    gateway: set[int] | None
    load: set[int] | None

    @classmethod
    def detect(cls) -> Pinning:
        """Pin to cores 0 and 1 when two cores are usable; else pin nothing."""
        cores = sorted(ALL_CORES)
        if len(cores) >= 2:
            return cls(gateway={cores[0]}, load={cores[1]})
        return cls(gateway=None, load=None)


@dataclass
class Gateway:
    """One running ``fusebox serve``."""

    server: str
    workers: int
    proc: Proc
    url: str

    def worker_pids(self) -> list[int]:
        """Return the Python processes that serve requests (not supervisors)."""
        pids = python_procs(self.proc.pid)
        return pids[1:] if len(pids) > 1 else pids


class Bench:
    """The processes under test and the paired runner; results go in ``results``."""

    def __init__(self, fleet: Fleet, plan: Plan, pins: Pinning) -> None:
        """Prepare; ``start`` launches the fake upstream and the gateways."""
        self.fleet = fleet
        self.plan = plan
        self.pins = pins
        self.started = time.monotonic()
        self.upstream_url = ""
        self.upstream: Proc | None = None
        self.config = Path()
        self.gateways: dict[str, Gateway] = {}
        #: Gateways started for one scenario (``workers``), beside ``gateways``.
        self.extra: list[Gateway] = []
        self.results: dict[str, Any] = {"runs": {}}

    def say(self, text: str) -> None:
        """Print a progress line with the elapsed time."""
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", flush=True)

    def start(self) -> None:
        """Start the fake upstream and one gateway per server, and wait for them."""
        port = free_port()
        self.upstream = self.fleet.spawn(
            "upstream",
            [
                sys.executable,
                "-m",
                "gateway",
                "mock-upstream",
                "--host",
                HOST,
                "--port",
                str(port),
            ],
            cpus=self.pins.load,
        )
        self.upstream_url = f"http://{HOST}:{port}"
        wait_http(self.upstream, f"{self.upstream_url}/_control/health")
        self.config = write_config(
            self.fleet.workdir, gw_port=free_port(), up_port=port
        )
        for server in self.plan.servers:
            self.gateways[server] = self.start_gateway(server, 1, self.pins.gateway)
        self.say(
            f"upstream {self.upstream_url}; gateways: "
            + ", ".join(
                f"{g.server} {g.url} (pids {g.worker_pids()})"
                for g in self.gateways.values()
            )
        )

    def start_gateway(
        self, server: str, workers: int, cpus: set[int] | None
    ) -> Gateway:
        """Start ``fusebox serve`` on a free port and wait for ``/healthz``."""
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--config",
            str(self.config),
            "--host",
            HOST,
            "--port",
            str(port),
            "--server",
            server,
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ]
        proc = self.fleet.spawn(
            f"gateway-{server}-{workers}w", argv, cpus=cpus, env=UPSTREAM_KEY_ENV
        )
        url = f"http://{HOST}:{port}"
        wait_http(proc, f"{url}/healthz")
        return Gateway(server, workers, proc, url)

    def targets(
        self, alias: str, *, stream: bool = False, direct: bool = True
    ) -> dict[str, Target]:
        """Return the direct target (optional) and one target per gateway."""
        found = {}
        if direct:
            found[DIRECT] = Target(
                self.upstream_url, DIRECT_MODEL[alias], stream=stream
            )
        for server, gw in self.gateways.items():
            found[server] = Target(gw.url, alias, TENANT_KEY, stream=stream)
        return found

    def serving_pids(self, url: str) -> list[int]:
        """Return the processes that serve ``url`` (gateway workers or the fake)."""
        for gw in self.gateways.values():
            if gw.url == url:
                return gw.worker_pids()
        for gw in self.extra:
            if gw.url == url:
                return gw.worker_pids()
        return [self.upstream.pid] if self.upstream else []

    def load(
        self,
        label: str,
        target: Target,
        connections: int,
        duration_s: float | None = None,
    ) -> Load:
        """Run wrk once and account the CPU the gateway and the upstream used."""
        # The fake logs every request; a long log makes its GC pause for tens
        # of ms, which would show up in every p99: start each run with it empty.
        reset_upstream(self.upstream_url)
        upstream = [self.upstream.pid] if self.upstream else []
        serving = self.serving_pids(target.url)
        before = cpu_seconds(serving), cpu_seconds(upstream)
        result = run_wrk(
            label,
            target,
            connections=connections,
            duration_s=duration_s or self.plan.duration_s,
            cpus=self.pins.load,
        )
        result.cpu_s = cpu_seconds(serving) - before[0]
        result.upstream_cpu_s = cpu_seconds(upstream) - before[1]
        return result

    def paired(
        self,
        name: str,
        targets: dict[str, Target],
        connections: int,
        duration_s: float | None = None,
    ) -> dict[str, Load]:
        """Run wrk on each target per repeat, back to back; return the medians."""
        runs: dict[str, list[Load]] = {label: [] for label in targets}
        order = list(targets.items())
        for _ in range(self.plan.repeats):
            for label, target in order:
                runs[label].append(self.load(label, target, connections, duration_s))
            order.reverse()
        medians = {label: median_load(loads) for label, loads in runs.items()}
        self.results["runs"][name] = {
            label: {
                "median": medians[label].as_json(),
                "repeats": [load.as_json() for load in loads],
            }
            for label, loads in runs.items()
        }
        self.say(f"{name}: " + "  ".join(_brief(m) for m in medians.values()))
        return medians


def _brief(load: Load) -> str:
    errors = f" ERR={load.failed}" if load.failed else ""
    return (
        f"{load.label} {load.rps:,.0f}/s p50={load.p50_ms:.2f} "
        f"p99={load.p99_ms:.2f}ms cpu={load.cpu_us_per_request:.0f}us/req "
        f"({load.cpu_share:.0%}){errors}"
    )
