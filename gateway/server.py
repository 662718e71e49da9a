"""``fusebox serve``: load and check the config, then run the ASGI server.

uvicorn with uvloop and httptools is the default; granian is selectable with
``--server granian`` (``make bench`` measures both).
"""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from gateway.commands import admin_warnings
from gateway.config import GatewayConfig, load_config
from gateway.logsetup import configure_from_env, configure_logging, export_settings
from gateway.tracing import tracing_warnings
from providers.errors import ConfigError

if TYPE_CHECKING:
    import argparse

log = logging.getLogger("fusebox")
#: The factory the worker processes import (they re-read the config path below).
CONFIG_ENV = "FUSEBOX_CONFIG"


def _load(path: str) -> GatewayConfig | None:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"fusebox: {path}: the config is invalid:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None
    for warning in admin_warnings(config, os.environ) + tracing_warnings(
        config, os.environ
    ):
        print(f"fusebox: warning: {warning}", file=sys.stderr)
    missing = config.missing_key_envs(os.environ)
    if missing:
        names = ", ".join(missing)
        print(
            f"fusebox: {path}: refusing to start: set the environment variable(s)"
            f" {names}",
            file=sys.stderr,
        )
        return None
    return config


def app_factory() -> object:
    """Build the app in a worker process from ``$FUSEBOX_CONFIG``."""
    from gateway.app import create_app  # noqa: PLC0415

    configure_from_env()
    path = os.environ[CONFIG_ENV]
    return create_app(load_config(path), config_path=path)


def serve(args: argparse.Namespace) -> int:
    """Run the gateway until interrupted; return the exit status."""
    configure_logging(args.log_level, args.log_format)
    export_settings(args.log_level, args.log_format)
    config = _load(args.config)
    if config is None:
        return 1
    server = msgspec.structs.replace(
        config.server,
        host=args.host or config.server.host,
        port=args.port if args.port is not None else config.server.port,
    )
    os.environ[CONFIG_ENV] = str(Path(args.config).resolve())
    print(
        f"fusebox: starting {args.config} on http://{server.host}:{server.port}",
        flush=True,
    )
    if args.server == "granian":
        return _granian(server.host, server.port, args.workers)
    return _uvicorn(
        server.host, server.port, args.workers, args.log_level, server.drain_s
    )


def _uvicorn(host: str, port: int, workers: int, log_level: str, drain_s: float) -> int:
    import uvicorn  # noqa: PLC0415

    from gateway.lifecycle import exit_zero_on_sigterm  # noqa: PLC0415

    exit_zero_on_sigterm()
    uvicorn.run(
        "gateway.server:app_factory",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        log_level="warning" if log_level == "info" else log_level,
        log_config=None,  # uvicorn's records go through configure_logging's handler
        access_log=False,
        # SIGTERM: in-flight requests may finish (uvicorn takes whole seconds).
        timeout_graceful_shutdown=math.ceil(drain_s),
    )
    return 0


def _granian(host: str, port: int, workers: int) -> int:
    from granian import Granian  # noqa: PLC0415
    from granian.constants import Interfaces, Loops  # noqa: PLC0415

    Granian(
        "gateway.server:app_factory",
        factory=True,
        address=host,
        port=port,
        workers=workers,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
    ).serve()
    return 0
