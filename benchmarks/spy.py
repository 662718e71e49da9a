"""Where the gateway's CPU goes: py-spy under load, folded stacks summarised.

``--profile SECONDS`` records each gateway worker with ``py-spy record --format
raw`` (folded stacks, idle samples excluded; percentages are of the event-loop
thread's busy samples, helper threads such as the log writer are counted
apart) while wrk drives 64 connections,
plain and SSE, and writes ``results/profile-<server>-<kind>.txt`` (the folded
stacks; ``flamegraph.pl`` or speedscope read them) and a summary: the top
functions by own time and by inclusive time, and own time by package.
py-spy is optional: ``pip install py-spy`` into the venv.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.gwconfig import TENANT_KEY
from benchmarks.loadgen import Target
from benchmarks.procs import cpu_list

if TYPE_CHECKING:
    from benchmarks.bench import Bench

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*)(?::\d+)?\)$")
_PROFILE_CONNS = 64
_TOP = 15
#: Frames in at least this share of samples are the call spine, not a hot spot.
_SPINE = 0.95
_OURS = ("gateway", "providers", "policies")


def py_spy() -> str | None:
    """Return the py-spy executable (the venv's first), or ``None``."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def _package(path: str) -> str:
    """Name the package a frame's file belongs to (``asyncio``, ``aiohttp``, ...)."""
    parts = Path(path).parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].removesuffix(".py")
    for i, part in enumerate(parts):
        if part in _OURS and i + 1 < len(parts):
            return f"{part}/{parts[i + 1]}"
    if re.fullmatch(r"python3\.\d+", parts[-2] if len(parts) > 1 else ""):
        return f"stdlib/{parts[-1]}"
    return parts[-2] if len(parts) > 1 else path


def _frame(raw: str) -> tuple[str, str]:
    match = _FRAME.match(raw.strip())
    if match is None:
        return raw, raw
    path = match["file"]
    short = "/".join(Path(path).parts[-2:])
    return f"{match['func']} ({short})", path


def summarise(folded: str) -> dict[str, Any]:
    """Return sample totals and the top functions/packages of folded stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = background = 0
    for line in folded.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        if stack.startswith("Thread._bootstrap "):
            background += int(count_text)  # a helper thread, not the event loop
            continue
        frames = [_frame(f) for f in stack.split(";")]
        total += count
        own[frames[-1][0]] += count
        packages[_package(frames[-1][1])] += count
        for name in {name for name, _ in frames}:
            inclusive[name] += count

    def top(counter: Counter[str], limit: int = _TOP) -> list[tuple[str, float]]:
        return [(name, 100.0 * n / total) for name, n in counter.most_common(limit)]

    # The call spine (server loop, app entry) is in every sample: leave it out.
    spine = {name for name, n in inclusive.items() if n >= _SPINE * total}
    return {
        "samples": total,
        "background_thread_samples": background,
        "own": top(own),
        "inclusive": top(
            Counter({k: v for k, v in inclusive.items() if k not in spine}), 2 * _TOP
        ),
        "packages": top(packages),
    }


def render(summary: dict[str, Any], title: str) -> str:
    """Format a summary as text (percentages of busy samples)."""
    head = (
        f"# {title}: {summary['samples']} busy samples of the event-loop thread "
        f"({summary['background_thread_samples']} of helper threads left out)"
    )
    lines = [head]
    for key, heading in (
        ("own", "own time"),
        ("inclusive", "inclusive time (call spine left out)"),
        ("packages", "own time by package"),
    ):
        lines.append(f"\n## top by {heading}")
        lines += [f"{pct:6.1f}%  {name}" for name, pct in summary[key]]
    return "\n".join(lines) + "\n"


def record(pid: int, seconds: float, out: Path, cpus: set[int] | None) -> list[str]:
    """Return the command that records ``pid`` for ``seconds`` into ``out``."""
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
    argv = [
        exe,
        "record",
        "--pid",
        str(pid),
        "--duration",
        f"{seconds:g}",
        "--rate",
        "100",
        "--format",
        "raw",
        "--full-filenames",
        "-o",
        str(out),
    ]
    return ["taskset", "-c", cpu_list(cpus), *argv]


def profile_all(bench: Bench, out_dir: Path) -> None:
    """Profile each gateway's worker under plain and SSE load at 64 connections."""
    if py_spy() is None:
        bench.say(
            "profile skipped: py-spy is not installed (.venv/bin/pip install py-spy)"
        )
        return
    seconds = bench.plan.profile_s
    profiles: dict[str, Any] = {}
    for server, gw in bench.gateways.items():
        for stream in (False, True):
            kind = "stream" if stream else "plain"
            out = out_dir / f"profile-{server}-{kind}.txt"
            out.parent.mkdir(parents=True, exist_ok=True)
            spy = subprocess.Popen(
                record(gw.worker_pids()[0], seconds, out, bench.pins.load),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                target = Target(gw.url, "healthy", TENANT_KEY, stream=stream)
                bench.load("profile", target, _PROFILE_CONNS, seconds + 1.0)
                spy.wait(seconds + 30)
            finally:
                if spy.poll() is None:
                    spy.kill()
                    spy.wait()
            summary = summarise(out.read_text())
            text = render(summary, f"{server} {kind}, {_PROFILE_CONNS} conns")
            (out_dir / f"profile-{server}-{kind}-summary.txt").write_text(text)
            profiles[f"{server}-{kind}"] = summary
            bench.say(f"profile {server} {kind}: {out}")
            print(text)
    bench.results["profiles"] = profiles
