"""Figures from the raw results: the issue #4 table, ``latest.json`` and the chart.

Each figure compares Fusebox with a baseline measured in the same run: the
fake upstream called directly, or (failover, open breaker) a healthy call
through the same gateway. A figure whose runs saw any error (non-2xx answers
included) is never "met".
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from benchmarks.bench import DIRECT

if TYPE_CHECKING:
    from pathlib import Path

_BOUND_SHARE = 0.9


@dataclass
class Figure:
    """One row of the table."""

    name: str
    fusebox: str
    baseline: str
    compare: str
    target: str
    met: bool | None
    note: str = ""


def _median(results: dict[str, Any], run: str, label: str) -> dict[str, Any]:
    median: dict[str, Any] = results["runs"][run][label]["median"]
    return median


def _errors(results: dict[str, Any], run: str, labels: tuple[str, ...]) -> int:
    return sum(_median(results, run, label)["failed"] for label in labels)


def _ms(value: float) -> str:
    return f"{value:.2f} ms"


def _latency_diff(
    name: str, fusebox: float, base: float, limit_ms: float, errors: int, note: str
) -> Figure:
    diff = fusebox - base
    return Figure(
        name,
        _ms(fusebox),
        _ms(base),
        f"{diff:+.2f} ms",
        f"<= +{limit_ms:g} ms",
        diff <= limit_ms and not errors,
        _with_errors(note, errors),
    )


def _with_errors(note: str, errors: int) -> str:
    return f"{note}; {errors} errors" if errors else note


def _best(
    results: dict[str, Any], prefix: str, label: str, conns: list[int]
) -> tuple[float, int]:
    best = max(conns, key=lambda c: _median(results, f"{prefix}_c{c}", label)["rps"])
    return _median(results, f"{prefix}_c{best}", label)["rps"], best


def latency_figures(results: dict[str, Any], server: str) -> list[Figure]:
    """Added latency at 1 connection, p50 and p99 (plain, answered at once)."""
    gw, direct = (
        _median(results, "plain_c1", server),
        _median(results, "plain_c1", DIRECT),
    )
    errors = _errors(results, "plain_c1", (server, DIRECT))
    return [
        _latency_diff(
            "added latency p50, 1 conn",
            gw["p50_ms"],
            direct["p50_ms"],
            0.5,
            errors,
            "vs direct",
        ),
        _latency_diff(
            "added latency p99, 1 conn",
            gw["p99_ms"],
            direct["p99_ms"],
            2.0,
            errors,
            "vs direct",
        ),
    ]


def throughput_figure(results: dict[str, Any], server: str, *, stream: bool) -> Figure:
    """Best rate over the connection counts, against the direct best (the ceiling)."""
    prefix = "stream" if stream else "plain"
    conns = results["plan"]["stream_conns" if stream else "plain_conns"]
    gw, at = _best(results, prefix, server, conns)
    direct, direct_at = _best(results, prefix, DIRECT, conns)
    goal = 2000 if stream else 5000
    errors = sum(_errors(results, f"{prefix}_c{c}", (server,)) for c in conns)
    run = _median(results, f"{prefix}_c{at}", server)
    note = (
        f"at {at} conns (direct best at {direct_at}); worker used "
        f"{run['cpu_share']:.0%} of its core"
    )
    if gw >= _BOUND_SHARE * direct:
        note += "; bounded by the fake upstream's ceiling"
    unit = "streams/s" if stream else "req/s"
    return Figure(
        f"{'streaming' if stream else 'non-streaming'} throughput, saturation",
        f"{gw:,.0f} {unit}",
        f"{direct:,.0f} {unit}",
        f"{gw / direct:.2f}x",
        f">= {goal:,} {unit}",
        gw >= goal and not errors,
        _with_errors(note, errors),
    )


def cpu_figure(results: dict[str, Any], server: str, *, stream: bool) -> Figure:
    """CPU per request at the best-throughput point: noise-proof capacity proxy.

    On a shared machine the worker may not get its whole core; CPU time per
    request does not depend on that, and ``1e6 / us`` is the rate one
    dedicated core would sustain. Compared with the fake upstream's own cost.
    """
    prefix = "stream" if stream else "plain"
    conns = results["plan"]["stream_conns" if stream else "plain_conns"]
    _, at = _best(results, prefix, server, conns)
    gw = _median(results, f"{prefix}_c{at}", server)["cpu_us_per_request"]
    direct = _median(results, f"{prefix}_c{at}", DIRECT)["cpu_us_per_request"]
    goal = 1e6 / (2000 if stream else 5000)
    per_core = 1e6 / gw if gw else 0.0
    return Figure(
        f"{'stream' if stream else 'plain'}: gateway CPU per request (derived)",
        f"{gw:,.0f} us",
        f"{direct:,.0f} us",
        f"{gw / direct:.1f}x" if direct else "",
        f"<= {goal:,.0f} us",
        gw <= goal,
        f"= {per_core:,.0f}/s per dedicated core; baseline: the fake upstream's CPU",
    )


def slow_figure(results: dict[str, Any], server: str) -> Figure:
    """256 connections with a 50 ms upstream, as a share of going direct."""
    gw = _median(results, "slow_c256", server)["rps"]
    direct = _median(results, "slow_c256", DIRECT)["rps"]
    errors = _errors(results, "slow_c256", (server, DIRECT))
    ratio = gw / direct if direct else 0.0
    return Figure(
        "throughput, 256 conns, 50 ms upstream",
        f"{gw:,.0f} req/s",
        f"{direct:,.0f} req/s",
        f"{ratio:.2f}x",
        ">= 0.80x of direct",
        ratio >= 0.8 and not errors,
        _with_errors("", errors),
    )


def ttfe_figure(results: dict[str, Any], server: str) -> Figure:
    """Added time to first SSE event, 1 connection, raw-socket client."""
    gw, direct = results["ttfe"][server], results["ttfe"][DIRECT]
    errors = gw["errors"] + direct["errors"]
    note = (
        f"p99 {gw['p99_ms']:.2f} vs {direct['p99_ms']:.2f} ms; {gw['streams']} streams"
    )
    return _latency_diff(
        "stream: added time to first event p50",
        gw["p50_ms"],
        direct["p50_ms"],
        1.0,
        errors,
        note,
    )


def resilience_figures(results: dict[str, Any], server: str) -> list[Figure]:
    """Failover after a 500, and skipping an open breaker, vs a healthy call."""
    rows = []
    for run, name, limit in (
        ("failover_c1", "one failover after a 500, p50", 0.5),
        ("open_c1", "breaker open -> next rung, p50", 0.2),
    ):
        got, base = (
            _median(results, run, server),
            _median(results, run, f"{server}:healthy"),
        )
        errors = _errors(results, run, (server, f"{server}:healthy"))
        rows.append(
            _latency_diff(
                name,
                got["p50_ms"],
                base["p50_ms"],
                limit,
                errors,
                "vs a healthy call via Fusebox",
            )
        )
    return rows


def memory_figures(results: dict[str, Any], server: str) -> list[Figure]:
    """RSS after warm-up and the peak at 256 concurrent streams."""
    memory = results["memory"][server]
    warm = memory["after_warmup"]["rss_mib"]
    peak = memory["streams_256"]["peak_rss_mib"]
    errors = memory["streams_256"]["load"]["failed"]
    hwm = memory["after_streams"]["hwm_mib"]
    return [
        Figure(
            "memory: RSS after warm-up",
            f"{warm:.1f} MiB",
            "",
            "",
            "<= 80 MiB",
            warm <= 80,
        ),
        Figure(
            "memory: RSS at 256 concurrent streams",
            f"{peak:.1f} MiB",
            "",
            "",
            "<= 120 MiB",
            peak <= 120 and not errors,
            _with_errors(f"VmHWM {hwm:.1f} MiB", errors),
        ),
    ]


def workers_figure(results: dict[str, Any]) -> Figure:
    """``--workers 2`` against one worker, both unpinned."""
    w = results["workers"]
    ratio = w["two_rps"] / w["one_rps"] if w["one_rps"] else 0.0
    errors = _errors(results, f"workers_c{w['connections']}", ("1 worker", "2 workers"))
    note = (
        f"{w['server']}, {w['connections']} conns; wrk + fake upstream share "
        "the same cores"
    )
    return Figure(
        "--workers 2 vs 1 (both cores)",
        f"{w['two_rps']:,.0f} req/s",
        f"{w['one_rps']:,.0f} req/s",
        f"{ratio:.2f}x",
        ">= 1.70x",
        ratio >= 1.7 and not errors,
        _with_errors(note, errors),
    )


def figures(results: dict[str, Any], server: str) -> list[Figure]:
    """Every figure of issue #4 for one server."""
    rows = [
        *latency_figures(results, server),
        throughput_figure(results, server, stream=False),
        cpu_figure(results, server, stream=False),
        slow_figure(results, server),
        ttfe_figure(results, server),
        throughput_figure(results, server, stream=True),
        cpu_figure(results, server, stream=True),
        *resilience_figures(results, server),
        *memory_figures(results, server),
    ]
    if results.get("workers", {}).get("server") == server:
        rows.append(workers_figure(results))
    return rows


def _met(value: bool | None) -> str:  # noqa: FBT001 - a tri-state cell
    return {True: "yes", False: "NO", None: "-"}[value]


def table(rows: list[Figure]) -> str:
    """Render rows as a Markdown table."""
    head = [
        "figure",
        "Fusebox",
        "direct / baseline",
        "ratio / diff",
        "target",
        "met?",
        "note",
    ]
    lines = [head] + [
        [r.name, r.fusebox, r.baseline, r.compare, r.target, _met(r.met), r.note]
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |"
        for line in lines
    ]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def floors_table(floors: dict[str, dict[str, float]]) -> str:
    """Render the reference apps' CPU per request beside Fusebox's."""
    lines = [
        "\n## CPU per request: Fusebox beside reference apps (plain, 64 conns)\n",
        "| app | CPU per request | = req/s per dedicated core | measured req/s |",
        "|---|---|---|---|",
    ]
    for label, got in floors.items():
        us = got["cpu_us_per_request"]
        per_core = f"{1e6 / us:,.0f}" if us else "-"
        lines.append(f"| {label} | {us:,.0f} us | {per_core} | {got['rps']:,.0f} |")
    return "\n".join(lines)


def write_json(
    path: Path, results: dict[str, Any], rows: dict[str, list[Figure]]
) -> None:
    """Write every raw number and the figures to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        **results,
        "figures": {s: [asdict(r) for r in rs] for s, rs in rows.items()},
    }
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
