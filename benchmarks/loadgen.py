"""wrk runs: one bounded run of a Lua script, parsed into a ``Load`` result.

wrk is started with ``taskset`` on the load generator's core, always with
``-d`` (duration) and ``--timeout``; its Lua ``done()`` hook prints one JSON
line (``benchmarks/wrk/chat.lua``) that is parsed here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.procs import cpu_list

LUA_DIR = Path(__file__).resolve().parent / "wrk"
_MARK = "BENCH_JSON "
#: Extra seconds wrk may take beyond ``-d`` before the run counts as hung.
_GRACE_S = 30.0


@dataclass
class Load:
    """What one wrk run measured (latencies in milliseconds)."""

    label: str
    connections: int
    duration_s: float
    requests: int
    #: 2xx answers per second (wrk's non-2xx ``status`` errors are left out).
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    errors: dict[str, int] = field(default_factory=dict)
    #: CPU seconds used meanwhile by the process serving the target (the
    #: gateway's workers, or the fake upstream when going direct) ...
    cpu_s: float = 0.0
    #: ... and by the fake upstream (for gateway targets: behind the gateway).
    upstream_cpu_s: float = 0.0

    @property
    def cpu_us_per_request(self) -> float:
        """Return the serving process's CPU microseconds per request."""
        return self.cpu_s * 1e6 / self.requests if self.requests else 0.0

    @property
    def cpu_share(self) -> float:
        """Return the share of one core the serving process used meanwhile."""
        return self.cpu_s / self.duration_s if self.duration_s else 0.0

    @property
    def failed(self) -> int:
        """Return the errors of every kind, non-2xx answers included."""
        return sum(self.errors.values())

    def as_json(self) -> dict[str, Any]:
        """Return the raw numbers for ``latest.json``."""
        return {
            **asdict(self),
            "failed": self.failed,
            "cpu_us_per_request": self.cpu_us_per_request,
            "cpu_share": self.cpu_share,
        }


@dataclass(frozen=True)
class Target:
    """Where and what to send: a base URL, a model or alias, a key, plain or SSE."""

    url: str
    model: str
    key: str = "x"
    stream: bool = False
    prompt: str = "hello"


def wrk_path() -> str | None:
    """Return the ``wrk`` executable, or ``None`` when it is not installed."""
    return shutil.which("wrk")


def run_wrk(
    label: str,
    target: Target,
    *,
    connections: int,
    duration_s: float,
    cpus: set[int] | None,
) -> Load:
    """Run wrk once against ``target`` and return what it measured."""
    script = LUA_DIR / ("stream.lua" if target.stream else "chat.lua")
    argv = [
        "taskset",
        "-c",
        cpu_list(cpus),
        wrk_path() or "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",  # wrk takes whole seconds
        "--timeout",
        "10s",
        "-s",
        str(script),
        f"{target.url}/v1/chat/completions",
    ]
    env = {
        **os.environ,
        "BENCH_MODEL": target.model,
        "BENCH_AUTH": target.key,
        "BENCH_PROMPT": target.prompt,
    }
    done = subprocess.run(
        argv,
        env=env,
        capture_output=True,
        text=True,
        timeout=duration_s + _GRACE_S,
        check=False,
    )
    return _parse(label, connections, done)


def _parse(
    label: str, connections: int, done: subprocess.CompletedProcess[str]
) -> Load:
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(_MARK)), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(
            f"wrk failed ({label}, rc={done.returncode}): {done.stderr or done.stdout}"
        )
    raw = json.loads(line[len(_MARK) :])
    duration_s = raw["duration_us"] / 1e6
    good = raw["requests"] - raw["errors"]["status"]
    return Load(
        label=label,
        connections=connections,
        duration_s=duration_s,
        requests=raw["requests"],
        rps=good / duration_s if duration_s else 0.0,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        mean_ms=raw["mean_us"] / 1000,
        errors={k: v for k, v in raw["errors"].items() if v},
    )
