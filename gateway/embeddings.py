"""``POST /v1/embeddings``: OpenAI embeddings over an embeddings alias's chain.

Outermost layer of the onion, in the embeddings dialect: the same auth, tenant
limiter, deadline, fallback, breakers, bulkheads and retry budgets as chat
(``gateway.chat.Exchange``), over an alias declared ``endpoint = "embeddings"``,
whose rungs are interchangeable (same model and dimensions). Each upstream gets
the client's JSON with only ``model`` rewritten (``encoding_format`` float or
base64 included) and its answer goes back as it came; errors are OpenAI's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

import msgspec

from gateway.dialect import ChatDialect, openai_error
from providers.errors import InvalidRequestError, UpstreamBadRequestError

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from gateway.dialect import Dialect, ErrorReply, Reader
    from gateway.runtime import Route
    from policies.pipeline import Deployment
    from providers.errors import GatewayError
    from providers.types import ChatRequest, ChatResponse, ChatStream

_decode_json: Final = msgspec.json.Decoder(dict[str, Any]).decode


@runtime_checkable
class Embedder(Protocol):
    """A provider with an embeddings API (OpenAI-compatible and mock ones)."""

    async def embed(self, request: ChatRequest, /) -> ChatResponse:
        """Return the upstream's embeddings JSON as is, or raise an UpstreamError."""
        ...


class EmbeddingsDialect(ChatDialect):
    """One embeddings request: never streamed, answered as the upstream spelled it."""

    def __init__(self, payload: dict[str, Any], alias: str) -> None:
        """Hold the request."""
        self.payload = payload
        self.alias = alias
        self.stream = False
        self.include_usage = False

    def fit(self, route: Route) -> Route:
        """Every rung of an embeddings alias serves embeddings (config-checked)."""
        return route

    def call(
        self, dep: Deployment, request: ChatRequest
    ) -> Awaitable[ChatResponse | ChatStream]:
        """Call the provider's embeddings API."""
        provider = dep.provider
        if not isinstance(provider, Embedder):  # pragma: no cover - config-checked
            return _refuse(dep.name)
        return provider.embed(request)


async def _refuse(deployment: str) -> ChatResponse:
    raise UpstreamBadRequestError(
        f"{deployment} has no embeddings API", deployment=deployment, param="model"
    )


def decode_embeddings(body: bytes) -> tuple[dict[str, Any], str]:
    """Decode an embeddings body; check ``model`` and ``input`` are there."""
    try:
        payload = _decode_json(body)
    except msgspec.ValidationError as exc:
        raise InvalidRequestError("the request body must be a JSON object") from exc
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"the request body is not valid JSON: {exc}") from exc
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError(
            "missing required parameter: `model`",
            param="model",
            code="missing_required_parameter",
        )
    if payload.get("input") in (None, "", []):
        raise InvalidRequestError(
            "missing required parameter: `input`",
            param="input",
            code="missing_required_parameter",
        )
    return payload, model


class _EmbeddingsReader:
    """Reads embeddings bodies."""

    endpoint = "embeddings"
    serves = "embeddings"

    def decode(self, body: bytes) -> Dialect:
        """Decode and check an embeddings body."""
        return EmbeddingsDialect(*decode_embeddings(body))

    def error(self, exc: GatewayError, *, final: bool) -> ErrorReply:
        """Spell ``exc`` in OpenAI's format."""
        return openai_error(exc, final=final)


EMBEDDINGS: Final[Reader] = _EmbeddingsReader()
