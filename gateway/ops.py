"""Operator endpoints: ``/metrics``, ``/readyz``, ``/fusebox/status`` and ``/fusebox/``.

DESIGN.md §7: the probes (``/readyz``, ``/metrics``) need no key; ``/fusebox/*``
needs the admin key when ``admin.key_env`` is set and answers loopback clients
only when it is not. The status page itself is a static shell holding no data:
with an admin key set it is served to anyone, and its script sends the key
(from ``?key=`` or a prompt, kept in ``sessionStorage``) to ``/fusebox/status``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import msgspec
from litestar import MediaType, Request, Response, get

from gateway.admin import check_admin
from gateway.errors import render
from gateway.metrics import CONTENT_TYPE_LATEST
from gateway.readiness import not_ready_reason
from gateway.status import status_document, status_page
from providers.errors import AuthError, ClientError

if TYPE_CHECKING:
    from litestar.handlers import BaseRouteHandler

    from gateway.runtime import Runtime

_encode: Final = msgspec.json.Encoder().encode
_NO_STORE: Final = {"cache-control": "no-store"}
_READY: Final = _encode({"status": "ready"})


def _runtime(request: Request[Any, Any, Any]) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _json(body: bytes, status: int = 200) -> Response[bytes]:
    return Response(
        content=body, status_code=status, media_type=MediaType.JSON, headers=_NO_STORE
    )


def _admin_error(
    request: Request[Any, Any, Any], runtime: Runtime
) -> Response[bytes] | None:
    """Return the error response if this request may not use the admin API."""
    try:
        check_admin(request.scope, request.headers, runtime.admin_key)
    except ClientError as exc:
        response = _json(render(exc), exc.http_status)
        if isinstance(exc, AuthError):
            response.headers["www-authenticate"] = 'Bearer realm="fusebox"'
        return response
    return None


@get("/metrics", sync_to_thread=False)
def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    """``GET /metrics``: every Fusebox metric in Prometheus text format."""
    return Response(
        content=_runtime(request).metrics.expose(),
        headers={"content-type": CONTENT_TYPE_LATEST, **_NO_STORE},
    )


@get("/readyz")
async def readyz(request: Request[Any, Any, Any]) -> Response[bytes]:
    """``GET /readyz``: 200 once started, not draining and the store reachable."""
    reason = await not_ready_reason(_runtime(request))
    if reason is None:
        return _json(_READY)
    return _json(_encode({"status": "not_ready", "reason": reason}), 503)


@get("/fusebox/status")
async def fusebox_status(request: Request[Any, Any, Any]) -> Response[bytes]:
    """``GET /fusebox/status``: breakers, pauses, bulkheads, budgets, store."""
    runtime = _runtime(request)
    denied = _admin_error(request, runtime)
    if denied is not None:
        return denied
    store = await runtime.store_probe.health()
    not_ready = await not_ready_reason(runtime)
    return _json(_encode(status_document(runtime, store, not_ready)))


@get(["/fusebox", "/fusebox/"], sync_to_thread=False)
def fusebox_page(request: Request[Any, Any, Any]) -> Response[bytes]:
    """``GET /fusebox/``: the live status page (a static shell; data needs auth)."""
    runtime = _runtime(request)
    if runtime.admin_key is None:
        denied = _admin_error(request, runtime)
        if denied is not None:
            return denied
    return Response(content=status_page(), media_type=MediaType.HTML, headers=_NO_STORE)


OPS_ROUTES: Final[list[BaseRouteHandler]] = [
    metrics,
    readyz,
    fusebox_status,
    fusebox_page,
]
