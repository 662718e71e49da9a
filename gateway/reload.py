"""Hot reload: SIGHUP or ``POST /fusebox/reload`` re-reads the config file.

The file is the one the server was started with (``create_app(config_path=)``,
else ``$FUSEBOX_CONFIG``, which ``fusebox serve`` sets). An invalid file, or one
naming an unset ``api_key_env`` variable, is rejected with its problems and the
running config keeps serving. A valid one builds a new ``Runtime`` that takes
over the live state of everything that still exists (``carry_state``):

* the breaker of each deployment still named in a chain, when its provider's
  ``breaker`` settings are unchanged (state, window, open period, history);
  a deployment whose breaker settings changed starts closed;
* the 429 pause board, whole (pauses of removed deployments just expire);
* each provider's retry budget (same ``budget_ratio``/``budget_min_per_s``)
  and bulkhead (same ``bulkhead`` table), so limits stay honest while the old
  runtime's requests finish;
* each tenant's concurrency limiter (same ``max_concurrent``);
* the metrics registry (counters never reset) and the started/draining flags.

The old runtime's store is closed and the new one started on the carried
objects (``Runtime.start``), so a shared store keeps syncing the same state.
Then ``app.state.runtime`` is swapped. A request that already read the old
runtime finishes on it, with the old config; the old runtime's connection
pools are closed once its in-flight count reaches zero, or after
``server.drain_s``. Each reload writes a ``config_reload`` event.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING, Any, Final

import msgspec
from litestar import MediaType, Request, Response, post

from gateway.admin import check_admin
from gateway.config import load_config
from gateway.errors import render
from gateway.reqlog import log_event
from gateway.runtime import Runtime
from gateway.server import CONFIG_ENV
from providers.errors import AuthError, ClientError, ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from litestar import Litestar

    from policies.config import RetryConfig

log = logging.getLogger("fusebox")
_encode: Final = msgspec.json.Encoder().encode


class Carried(msgspec.Struct, kw_only=True):
    """What a reload handed from the old runtime to the new one."""

    #: Deployments whose breaker (state, window, history) was kept.
    breakers: list[str] = msgspec.field(default_factory=list)
    #: Deployments kept whose breaker settings changed: they start closed.
    reset_breakers: list[str] = msgspec.field(default_factory=list)
    #: Deployments no chain names any more.
    removed: list[str] = msgspec.field(default_factory=list)
    retry_budgets: list[str] = msgspec.field(default_factory=list)
    bulkheads: list[str] = msgspec.field(default_factory=list)
    tenant_limiters: list[str] = msgspec.field(default_factory=list)
    #: Active 429 pauses on the board that was kept.
    pauses: int = 0


class ReloadResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The answer to a reload: ``reloaded`` with what was kept, or ``rejected``."""

    status: str
    config: str | None
    problems: list[str] = msgspec.field(default_factory=list)
    carried: Carried | None = None
    #: Settings read only at startup that differ in the new file.
    restart_needed: list[str] = msgspec.field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the new config is serving."""
        return self.status == "reloaded"


class Reloader:
    """Re-reads the config file and swaps the app's runtime; one per app."""

    def __init__(
        self, path: str | None = None, environ: Mapping[str, str] | None = None
    ) -> None:
        """Remember where the config lives and which environment holds the keys."""
        self._path = path
        self._environ = environ
        self._lock = asyncio.Lock()
        self._retiring: dict[asyncio.Task[None], Runtime] = {}
        self._pending: set[asyncio.Task[ReloadResult]] = set()

    @property
    def path(self) -> str | None:
        """The config file a reload reads."""
        return self._path or os.environ.get(CONFIG_ENV)

    @property
    def retiring(self) -> int:
        """Old runtimes still waiting for their requests before closing."""
        return len(self._retiring)

    def reload_soon(self, app: Litestar) -> None:
        """Start a reload in the background (the SIGHUP handler)."""
        task = asyncio.get_running_loop().create_task(self.reload(app))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def reload(self, app: Litestar) -> ReloadResult:
        """Re-read the config; swap the runtime if it is valid."""
        async with self._lock:
            path = self.path
            old: Runtime = app.state.runtime
            new, problems = self._build(path, old)
            if new is None:
                result = ReloadResult(status="rejected", config=path, problems=problems)
                _log_reload(result)
                return result
            carried = carry_state(old, new)
            # The new store shares the carried state from now on, not the old one.
            await old.store.detach()
            await new.start()
            app.state.runtime = new
            self._retire(old)
        result = ReloadResult(
            status="reloaded",
            config=path,
            carried=carried,
            restart_needed=_restart_needed(old, new),
        )
        _log_reload(result)
        return result

    def _build(
        self, path: str | None, old: Runtime
    ) -> tuple[Runtime | None, list[str]]:
        """Load, check and build; return the new runtime or the problems."""
        if path is None:
            return None, [
                "no config file to reload: this gateway was not started from a file"
            ]
        try:
            config = load_config(path)
        except ConfigError as exc:
            return None, list(exc.problems)
        env = os.environ if self._environ is None else self._environ
        missing = config.missing_key_envs(env)
        if missing:
            names = ", ".join(missing)
            return None, [f"set the environment variable(s) {names} before reloading"]
        try:
            runtime = Runtime(
                config,
                clock=old.clock,
                environ=env,
                tracer_provider=old.tracer_provider,
            )
        except Exception as exc:
            log.exception("building the runtime for %s failed", path)
            return None, [f"building the runtime failed: {exc}"]
        return runtime, []

    def _retire(self, old: Runtime) -> None:
        task = asyncio.get_running_loop().create_task(_close_when_idle(old))
        self._retiring[task] = old
        task.add_done_callback(self._retired)

    def _retired(self, task: asyncio.Task[None]) -> None:
        self._retiring.pop(task, None)

    async def aclose(self) -> None:
        """At shutdown: stop waiting and close every retired runtime's pools now."""
        for pending in list(self._pending):
            pending.cancel()
        retiring = list(self._retiring.items())
        self._retiring.clear()
        for task, runtime in retiring:
            task.cancel()
            await runtime.aclose()


def _log_reload(result: ReloadResult) -> None:
    """Write the ``config_reload`` event (WARNING when the file was rejected)."""
    carried = result.carried
    if carried is None:
        log_event(
            "config_reload",
            logging.WARNING,
            ok=False,
            path=result.config,
            problems=result.problems,
        )
        return
    log_event(
        "config_reload",
        ok=True,
        path=result.config,
        breakers_kept=len(carried.breakers),
        breakers_reset=len(carried.reset_breakers),
        removed=carried.removed,
        restart_needed=result.restart_needed,
    )


async def _close_when_idle(old: Runtime) -> None:
    """Close ``old``'s pools once its requests are done, or after ``drain_s``."""
    drain_s = old.config.server.drain_s
    if not await old.in_flight.wait_idle(drain_s):
        log.warning(
            "closing the replaced config's pools with %d request(s) still in flight"
            " after server.drain_s = %gs",
            old.in_flight.count,
            drain_s,
        )
    await old.aclose()


def _restart_needed(old: Runtime, new: Runtime) -> list[str]:
    before, after = old.config.server, new.config.server
    return [
        f"server.{key}"
        for key in ("host", "port")
        if getattr(before, key) != getattr(after, key)
    ]


def carry_state(old: Runtime, new: Runtime) -> Carried:
    """Hand ``old``'s live state for what still exists over to ``new``."""
    carried = Carried(pauses=len(old.pauses.snapshot()))
    new.pauses = old.pauses
    _carry_resources(old, new, carried)
    _carry_breakers(old, new, carried)
    _carry_limiters(old, new, carried)
    new.metrics = old.metrics
    new.metrics.watch(new)
    new.started = old.started
    new.draining = old.draining
    return carried


def _carry_resources(old: Runtime, new: Runtime, carried: Carried) -> None:
    for name, res in new.resources.items():
        prev = old.resources.get(name)
        if prev is None:
            continue
        before, after = old.config.providers[name], new.config.providers[name]
        if _budget_key(before.retry) == _budget_key(after.retry):
            res.budget = prev.budget
            carried.retry_budgets.append(name)
        if before.bulkhead == after.bulkhead:
            res.bulkhead = prev.bulkhead
            carried.bulkheads.append(name)


def _budget_key(retry: RetryConfig) -> tuple[float, float]:
    return (retry.budget_ratio, retry.budget_min_per_s)


def _carry_breakers(old: Runtime, new: Runtime, carried: Carried) -> None:
    for name, dep in new.deployments.items():
        provider = dep.provider.name
        res = new.resources[provider]
        dep.budget, dep.bulkhead, dep.pauses = res.budget, res.bulkhead, new.pauses
        prev = old.deployments.get(name)
        if prev is None:
            continue
        if (
            old.config.providers[provider].breaker
            != new.config.providers[provider].breaker
        ):
            carried.reset_breakers.append(name)
            continue
        prev.breaker.on_transition = dep.breaker.on_transition
        dep.breaker = prev.breaker
        carried.breakers.append(name)
    carried.removed = sorted(set(old.deployments) - set(new.deployments))


def _carry_limiters(old: Runtime, new: Runtime, carried: Carried) -> None:
    for name in list(new.limiters):
        prev = old.limiters.get(name)
        if prev is None:
            continue
        if (
            old.config.tenants[name].max_concurrent
            == new.config.tenants[name].max_concurrent
        ):
            new.limiters[name] = prev
            carried.tenant_limiters.append(name)


@post("/fusebox/reload")
async def reload_config(request: Request[Any, Any, Any]) -> Response[bytes]:
    """``POST /fusebox/reload``: re-read the config file (admin API)."""
    app = request.app
    runtime: Runtime = app.state.runtime
    try:
        check_admin(request.scope, request.headers, runtime.admin_key)
    except ClientError as exc:
        headers = {"www-authenticate": 'Bearer realm="fusebox"'}
        return Response(
            content=render(exc),
            status_code=exc.http_status,
            media_type=MediaType.JSON,
            headers=headers if isinstance(exc, AuthError) else None,
        )
    reloader: Reloader = app.state.reloader
    result = await reloader.reload(app)
    return Response(
        content=_encode(result),
        status_code=200 if result.ok else 400,
        media_type=MediaType.JSON,
        headers={"cache-control": "no-store"},
    )
