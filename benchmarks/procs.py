"""Processes the harness starts: spawned in their own session, pinned, always reaped.

Every child runs in a new process group; ``Fleet.close`` (called from a
``finally``) sends SIGTERM to each group it started, waits a bounded time, then
SIGKILLs what is left. Nothing here signals a process it did not start.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

STOP_WAIT_S = 5.0
HOST = "127.0.0.1"
#: Every core this process may use, read before the harness pins itself.
ALL_CORES = frozenset(os.sched_getaffinity(0))


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_list(cpus: set[int] | frozenset[int] | None) -> str:
    """Return ``taskset``'s CPU list for ``cpus`` (``None``: every core we may use)."""
    chosen = cpus if cpus is not None else ALL_CORES
    return ",".join(str(c) for c in sorted(chosen))


class Proc:
    """One started child process and the log file its output goes to."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log: Path) -> None:
        """Remember the process and where it logs."""
        self.name = name
        self.popen = popen
        self.log = log

    @property
    def pid(self) -> int:
        """Return the child's process id (the ``taskset`` exec'd into it)."""
        return self.popen.pid

    def alive(self) -> bool:
        """Tell whether the process is still running."""
        return self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        """Return the last lines of the process's output."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        """SIGTERM the process group, wait a bounded time, then SIGKILL it."""
        if self.popen.poll() is None:
            _signal_group(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(STOP_WAIT_S)
        # Workers may outlive their parent; the group id is the child's pid.
        _signal_group(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(STOP_WAIT_S)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class Fleet:
    """Starts processes pinned with ``taskset`` and stops every one of them."""

    def __init__(self, workdir: Path) -> None:
        """Log each child's output into ``workdir``."""
        self.workdir = workdir
        self.procs: list[Proc] = []

    def spawn(
        self,
        name: str,
        argv: list[str],
        *,
        cpus: set[int] | None,
        env: dict[str, str] | None = None,
    ) -> Proc:
        """Start ``argv`` on ``cpus`` in its own process group."""
        log = self.workdir / f"{name}.log"
        out: IO[bytes]
        with log.open("ab") as out:
            popen = subprocess.Popen(
                ["taskset", "-c", cpu_list(cpus), *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        """Stop one process now."""
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    def close(self) -> None:
        """Stop every process still running, newest first."""
        while self.procs:
            self.procs.pop().stop()


def wait_http(proc: Proc, url: str, timeout_s: float = 30.0) -> None:
    """Poll ``url`` until it answers (any HTTP status); raise if it never does."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=1.0):  # noqa: S310 - http://127.0.0.1
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            sleep_s(0.05)
    raise RuntimeError(f"{proc.name} did not answer {url} in {timeout_s:g}s")


def tree(pid: int) -> list[int]:
    """Return ``pid`` and every descendant of it."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        children = Path(f"/proc/{current}/task/{current}/children")
        with contextlib.suppress(OSError):
            todo.extend(int(c) for c in children.read_text().split())
    return found


def memory_kib(pid: int) -> dict[str, int]:
    """Return ``VmRSS`` and ``VmHWM`` (KiB) of one process, empty if it is gone."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in {"VmRSS", "VmHWM"}:
                out[key] = int(value.split()[0])
    return out


_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """Return the user + system CPU seconds the processes ``pids`` have used."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) * _TICK_S
    return total


def python_procs(pid: int) -> list[int]:
    """Return the processes of ``pid``'s tree that run Python (not ``taskset``)."""
    found = []
    for p in tree(pid):
        with contextlib.suppress(OSError):
            if "python" in Path(f"/proc/{p}/exe").readlink().name:
                found.append(p)
    return found


def set_affinity(pid: int, cpus: set[int] | frozenset[int]) -> None:
    """Move every thread of ``pid`` (one of ours) onto ``cpus``."""
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(task.name), cpus)


def sleep_s(seconds: float) -> None:
    """Wait ``seconds``: the harness is a script, not the app's injected clock."""
    time.sleep(seconds)  # noqa: TID251
