"""Combining repeated runs: medians of wrk results, and RSS sampling while loaded."""

from __future__ import annotations

import statistics
import threading
from typing import TYPE_CHECKING

from benchmarks.loadgen import Load
from benchmarks.procs import memory_kib, sleep_s

if TYPE_CHECKING:
    from collections.abc import Sequence

_LATENCIES = ("p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms")


def median_load(loads: Sequence[Load]) -> Load:
    """Return one ``Load`` holding the medians of ``loads`` (errors summed)."""
    first = loads[0]
    errors: dict[str, int] = {}
    for load in loads:
        for kind, count in load.errors.items():
            errors[kind] = errors.get(kind, 0) + count
    return Load(
        label=first.label,
        connections=first.connections,
        duration_s=sum(load.duration_s for load in loads),
        requests=sum(load.requests for load in loads),
        rps=statistics.median(load.rps for load in loads),
        errors=errors,
        cpu_s=sum(load.cpu_s for load in loads),
        upstream_cpu_s=sum(load.upstream_cpu_s for load in loads),
        **{
            k: statistics.median(getattr(load, k) for load in loads) for k in _LATENCIES
        },
    )


class RssSampler:
    """Samples the ``VmRSS`` of processes from a thread and keeps each one's peak."""

    def __init__(self, pids: list[int], every_s: float = 0.1) -> None:
        """Watch ``pids`` (call ``start`` then ``stop``)."""
        self.pids = pids
        self.every_s = every_s
        self.peak_kib: dict[int, int] = dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self.pids:
                rss = memory_kib(pid).get("VmRSS", 0)
                self.peak_kib[pid] = max(self.peak_kib[pid], rss)
            sleep_s(self.every_s)

    def start(self) -> None:
        """Start sampling."""
        self._thread.start()

    def stop(self) -> dict[int, int]:
        """Stop sampling; return each process's peak RSS in KiB."""
        self._stop.set()
        self._thread.join(5.0)
        return self.peak_kib
