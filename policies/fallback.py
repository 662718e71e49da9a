"""Fallback over a chain's deployment rungs, and the final answer when all fail.

Sits inside the deadline and outside each per-deployment pipeline: it is an
orchestrator, not one more wrapper. DESIGN.md §5 and §7 fix which error the
client gets when the chain is exhausted.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from policies.pipeline import (
    Answer,
    AttemptLog,
    Call,
    Deployment,
    Trail,
    run_deployment,
)
from providers.errors import (
    AllRefusedError,
    DeadlineExceededError,
    GatewayError,
    RejectedError,
    UpstreamError,
    UpstreamRateLimitError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from policies.deadline import Deadline


class ChainExhaustedError(GatewayError):
    """Every deployment rung failed; ``final`` is what the client should get."""

    def __init__(self, final: GatewayError, errors: list[GatewayError]) -> None:
        """Carry the chosen final error and every rung's error."""
        super().__init__(final.message)
        self.final = final
        self.errors = errors


async def run_chain(
    deployments: Sequence[Deployment],
    make_call: Callable[[Deployment], Call],
    *,
    deadline: Deadline,
    trail: Trail,
    skip: Callable[[Deployment], bool] | None = None,
    log: AttemptLog | None = None,
) -> tuple[Deployment, Answer]:
    """Try each deployment in order; return the first answer.

    With a ``log`` (tracing), every attempt's start and end times are noted in it.

    Raises:
        UpstreamError: a client error that ends the chain (bad request, content policy).
        DeadlineExceededError: the deadline ran out.
        ChainExhaustedError: every rung failed or refused.
    """
    errors: list[GatewayError] = []
    for dep in deployments:
        if skip is not None and skip(dep):
            continue
        try:
            return dep, await run_deployment(
                dep, make_call(dep), deadline=deadline, trail=trail, log=log
            )
        except (UpstreamError, RejectedError) as exc:
            if not exc.failover:
                raise
            errors.append(exc)
        except DeadlineExceededError:
            raise
    raise ChainExhaustedError(final_error(errors, trail), errors)


def final_error(errors: list[GatewayError], trail: Trail) -> GatewayError:
    """Pick the error the client gets once no rung could answer (DESIGN.md §7)."""
    if not errors:
        return AllRefusedError("no deployment rung could be tried", retry_after_s=1.0)
    if all(isinstance(e, RejectedError) for e in errors):
        wait = min(e.retry_after_s for e in errors if isinstance(e, RejectedError))
        return AllRefusedError(
            f"every rung is unavailable: {describe(trail)}",
            retry_after_s=max(1.0, math.ceil(wait)),
        )
    # The last upstream failure speaks for the chain: its class carries the status
    # (429 rate limit, 504 timeout, 400 context length, else 502).
    last = [e for e in errors if isinstance(e, UpstreamError)][-1]
    if isinstance(last, UpstreamRateLimitError):
        waits = [w for w in map(_wait_of, errors) if w is not None]
        last.retry_after_s = max(1.0, math.ceil(min(waits))) if waits else 1.0
    return last


def _wait_of(error: GatewayError) -> float | None:
    if isinstance(error, RejectedError | UpstreamRateLimitError):
        return error.retry_after_s
    return None


def describe(trail: Trail) -> str:
    """Render a trail as ``dep=tok,tok; dep=tok`` (the ``x-fusebox-attempts`` form)."""
    return "; ".join(f"{dep}={','.join(tokens)}" for dep, tokens in trail.items())
