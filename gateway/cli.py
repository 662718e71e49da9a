"""The ``fusebox`` command line: check, serve, hash-key, mock-upstream, demo.

Each subcommand imports what it needs lazily, so ``fusebox check`` stays quick.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusebox", description="A resilient OpenAI-compatible LLM gateway."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check", help="validate a config file and summarise it")
    check.add_argument("path", help="the TOML config file")

    serve = sub.add_parser("serve", help="serve the gateway")
    serve.add_argument("--config", default="fusebox.toml", help="the TOML config file")
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=int, help="override server.port")
    serve.add_argument("--workers", type=int, default=1, help="worker processes")
    serve.add_argument(
        "--server",
        choices=["uvicorn", "granian"],
        default="uvicorn",
        help="the ASGI server (default uvicorn: measured faster, see benchmarks/)",
    )
    serve.add_argument(
        "--log-level", default="info", help="debug, info, warning or error"
    )
    serve.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="request log lines as readable text or one JSON object per line",
    )

    hash_key = sub.add_parser("hash-key", help="print the sha256 of a tenant key")
    hash_key.add_argument("key", help="the tenant's API key")

    mock = sub.add_parser(
        "mock-upstream", help="a fake OpenAI + Anthropic upstream that injects faults"
    )
    mock.add_argument("--host", default="127.0.0.1")
    mock.add_argument("--port", type=int, default=9100)

    demo = sub.add_parser(
        "demo", help="a narrated chaos tour: outage, breaker, fallback, recovery"
    )
    demo.add_argument("--fast", action="store_true", help="the same tour in ~10 s")

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fusebox`` command and return its exit status."""
    args = _parser().parse_args(argv)
    if args.command == "check":
        from gateway.commands import check  # noqa: PLC0415

        return check(args.path)
    if args.command == "hash-key":
        from gateway.commands import hash_key  # noqa: PLC0415

        return hash_key(args.key)
    if args.command == "serve":
        from gateway.server import serve  # noqa: PLC0415

        return serve(args)
    if args.command == "mock-upstream":
        from gateway.fakeupstream import run_forever  # noqa: PLC0415

        return run_forever(args.host, args.port)
    if args.command == "demo":
        from gateway.demo import run_demo  # noqa: PLC0415

        return run_demo(fast=args.fast)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
