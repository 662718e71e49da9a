"""What the numbers were measured on: cores, CPU model, Python, load, versions."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import resource
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks.loadgen import wrk_path
from benchmarks.procs import ALL_CORES


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def _output(argv: list[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=10, check=False
        )
        return (done.stdout or done.stderr).strip().splitlines()[0]
    return "unknown"


def load_average() -> str:
    """Return ``/proc/loadavg``'s first three fields (other users' load shows here)."""
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "unknown"


_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


class CpuLedger:
    """How much CPU other people's processes took while the benchmark ran.

    The machine's busy time (``/proc/stat``) minus this process's, its reaped
    children's (``getrusage``) and its live children's CPU: on a shared
    machine this says how far the absolute figures are from an idle machine's.
    """

    def __init__(self) -> None:
        """Start counting now."""
        self.started = time.monotonic()
        self.busy0 = self._busy_s()
        self.own0 = self._own_s()

    @staticmethod
    def _busy_s() -> float:
        with contextlib.suppress(OSError, ValueError):
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(
                int, fields[:8]
            )
            return (user + nice + system + irq + softirq + steal) * _TICK_S
        return 0.0

    @staticmethod
    def _own_s() -> float:
        usage = [
            resource.getrusage(w)
            for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        ]
        return sum(u.ru_utime + u.ru_stime for u in usage)

    def others_share(self, live_s: float) -> float:
        """Return the share of all cores others used since the start (0-1).

        ``live_s`` is the CPU used by children still running (not yet reaped).
        """
        wall = time.monotonic() - self.started
        others = (self._busy_s() - self.busy0) - (self._own_s() - self.own0) - live_s
        return max(0.0, others / (wall * len(ALL_CORES))) if wall else 0.0


def machine_info() -> dict[str, Any]:
    """Return the machine facts stored with every result."""
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "usable_cores": sorted(ALL_CORES),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "wrk": _output([wrk_path() or "wrk", "--version"]),
        "git_commit": _output(["git", "rev-parse", "--short", "HEAD"]),
        "load_average_start": load_average(),
    }
