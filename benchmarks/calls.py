"""One-off HTTP calls for setup and sanity probes (urllib; never under load)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmarks.loadgen import Target

_TIMEOUT_S = 10.0
_SHOWN = ("x-fusebox-attempts", "x-fusebox-served-by", "x-fusebox-degraded")


def post_json(url: str, body: dict[str, Any], key: str = "x") -> tuple[int, Any, bytes]:
    """POST ``body``; return (status, headers, raw body), error statuses included."""
    request = urllib.request.Request(  # noqa: S310 - always http://127.0.0.1
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as resp:  # noqa: S310
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def probe(target: Target) -> dict[str, Any]:
    """Send one request as the load would; return its status, headers and events."""
    body: dict[str, Any] = {
        "model": target.model,
        "messages": [{"role": "user", "content": target.prompt}],
    }
    if target.stream:
        body["stream"] = True
    status, headers, raw = post_json(
        f"{target.url}/v1/chat/completions", body, target.key
    )
    found: dict[str, Any] = {"status": status}
    found |= {name: headers.get(name) for name in _SHOWN if headers.get(name)}
    if target.stream:
        found["events"] = raw.count(b"\n\n")
        found["error_event"] = b'"error"' in raw
    return found


def reset_upstream(url: str) -> None:
    """Forget the fake upstream's request log (it grows with every request)."""
    post_json(f"{url}/_control/reset", {})
