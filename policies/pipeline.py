"""The per-deployment pipeline: retry ▸ breaker ▸ bulkhead ▸ attempt timeout ▸ call.

This one module fixes the policy order (STYLE.md §3.3). Retry sits outside the
breaker, so every attempt is counted and an open circuit ends the retries; the
bulkhead sits inside the breaker, so an open circuit never takes a slot and no
slot is held while a retry backs off.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, TypeAlias

from policies.backoff import full_jitter
from providers.errors import (
    CircuitOpenError,
    DeadlineExceededError,
    DeploymentPausedError,
    GatewayError,
    RejectedError,
    RetryBudgetError,
    UpstreamError,
    UpstreamRateLimitError,
    UpstreamStreamCutError,
    UpstreamTimeoutError,
)
from providers.types import ChatResponse, ChatStream, Usage, is_role_only_frame

if TYPE_CHECKING:
    from policies.breaker import Breaker, Permit
    from policies.budget import RetryBudget
    from policies.bulkhead import Bulkhead
    from policies.clock import Clock
    from policies.config import RetryConfig, TimeoutsConfig
    from policies.deadline import Deadline
    from policies.pause import PauseBoard
    from policies.store import ProbeGate
    from providers.types import Provider

#: One request's record of what each deployment did: ``{deployment: [tokens]}``.
Trail = dict[str, list[str]]
#: Optional record of each attempt for tracing: ``(deployment, index of its first
#: token in the trail, started, ended)`` in monotonic seconds. None records nothing.
AttemptLog = list[tuple[str, int, float, float]]
_PAUSE_EPSILON_S = 0.001
#: Suggested wait when another replica holds the fleet's probe slots.
_FLEET_PROBE_RETRY_AFTER_S = 1.0
#: What a pipeline returns: a whole answer, or a stream that owns its resources.
Answer: TypeAlias = "ChatResponse | GuardedStream"
Call: TypeAlias = Callable[[], Awaitable[ChatResponse | ChatStream]]


class Deployment:
    """A ``provider/model`` with its breaker and its provider's shared resources."""

    __slots__ = (
        "breaker",
        "budget",
        "bulkhead",
        "clock",
        "model",
        "name",
        "pauses",
        "probes",
        "provider",
        "retry",
        "timeouts",
    )

    def __init__(
        self,
        *,
        provider: Provider,
        model: str,
        breaker: Breaker,
        resources: ProviderResources,
        pauses: PauseBoard,
        clock: Clock,
        probes: ProbeGate | None = None,
    ) -> None:
        """Bind a model to its provider's pool, bulkhead, budget and settings.

        ``probes``, when given, must grant each half-open probe first, so a
        fleet of replicas sends at most ``half_open_probes`` per open period.
        """
        self.name = f"{provider.name}/{model}"
        self.provider = provider
        self.model = model
        self.breaker = breaker
        self.bulkhead = resources.bulkhead
        self.budget = resources.budget
        self.retry = resources.retry
        self.timeouts = resources.timeouts
        self.pauses = pauses
        self.clock = clock
        self.probes = probes


class ProviderResources:
    """What a provider owns: its bulkhead, retry budget and policy settings."""

    __slots__ = ("budget", "bulkhead", "retry", "timeouts")

    def __init__(
        self,
        *,
        bulkhead: Bulkhead,
        budget: RetryBudget,
        retry: RetryConfig,
        timeouts: TimeoutsConfig,
    ) -> None:
        """Group one provider's resources."""
        self.bulkhead = bulkhead
        self.budget = budget
        self.retry = retry
        self.timeouts = timeouts


async def run_deployment(
    dep: Deployment,
    call: Call,
    *,
    deadline: Deadline,
    trail: Trail,
    log: AttemptLog | None = None,
) -> Answer:
    """Run ``call`` on ``dep`` with retries; raise the last error to fail over.

    With a ``log``, each attempt's start and end times are appended to it.
    """
    tokens = trail.setdefault(dep.name, [])
    dep.budget.deposit()
    retry = dep.retry
    for n in range(retry.attempts):
        try:
            if log is None:
                return await _attempt(dep, call, deadline, tokens)
            return await _logged_attempt(dep, call, deadline, tokens, log)
        except UpstreamError as exc:
            wait_s = _retry_wait(dep, exc, n, deadline)
            if wait_s is None:
                raise
            if not dep.budget.try_withdraw():
                # No retry, fail over now; the upstream's failure stays the cause
                # (this rung was called, so it was not "refused locally").
                tokens.append(RetryBudgetError.token)
                raise
            await dep.clock.sleep(wait_s)
    raise AssertionError("unreachable: the last attempt re-raises")  # pragma: no cover


def _retry_wait(
    dep: Deployment, exc: UpstreamError, n: int, deadline: Deadline
) -> float | None:
    """Return how long to wait before retrying, or None to fail over now."""
    retry = dep.retry
    backoff = full_jitter(n, retry.base_s, retry.max_s, dep.clock.random())
    if isinstance(exc, UpstreamRateLimitError):
        after = exc.retry_after_s
        pause_s = after if after is not None else min(retry.max_s, retry.base_s * 2**n)
        dep.pauses.pause(dep.name, pause_s, f"429 from {dep.name}")
        if after is not None and after > retry.max_retry_after_s:
            return None
        # Wait out the pause this 429 set, so the retry is not refused by it.
        backoff = pause_s + _PAUSE_EPSILON_S
    if not exc.retryable or n + 1 >= retry.attempts:
        return None
    if backoff >= deadline.left():
        return None
    return backoff


async def _logged_attempt(
    dep: Deployment,
    call: Call,
    deadline: Deadline,
    tokens: list[str],
    log: AttemptLog,
) -> Answer:
    """Run ``_attempt`` and note when it started and ended (tracing only)."""
    first = len(tokens)
    started = dep.clock.monotonic()
    try:
        return await _attempt(dep, call, deadline, tokens)
    finally:
        log.append((dep.name, first, started, dep.clock.monotonic()))


async def _attempt(
    dep: Deployment,
    call: Call,
    deadline: Deadline,
    tokens: list[str],
) -> Answer:
    """One attempt through pause ▸ breaker ▸ bulkhead ▸ timeout."""
    left = deadline.left()
    if left <= 0:
        tokens.append(DeadlineExceededError.token)
        raise DeadlineExceededError("the request's deadline ran out")
    _check_pause(dep, tokens)
    try:
        permit = dep.breaker.acquire()
    except RejectedError as exc:
        tokens.append(exc.token)
        raise
    try:
        await dep.bulkhead.acquire(left)
    except BaseException as exc:
        # Also on cancellation while queued: a half-open probe slot must not leak.
        dep.breaker.release(permit)
        if isinstance(exc, RejectedError):
            tokens.append(exc.token)
        raise
    if permit.is_probe and dep.probes is not None:
        await _claim_probe(dep, dep.probes, permit, tokens)
    return await _timed_call(dep, call, deadline, tokens, permit)


async def _claim_probe(
    dep: Deployment, probes: ProbeGate, permit: Permit, tokens: list[str]
) -> None:
    """Let a half-open probe out only if the fleet grants it one of its slots.

    Claimed once the bulkhead slot is held, so a full bulkhead never uses up
    one of the fleet's probes; refused, the call gives both back.
    """
    try:
        granted = await probes.claim_probe(dep.name, dep.timeouts.attempt_s)
    except BaseException:
        dep.bulkhead.release()
        dep.breaker.release(permit)
        raise
    if not granted:
        dep.bulkhead.release()
        dep.breaker.release(permit)
        tokens.append(CircuitOpenError.token)
        raise CircuitOpenError(
            f"circuit half-open for {dep.name}: another replica is probing it",
            retry_after_s=_FLEET_PROBE_RETRY_AFTER_S,
        )


def _check_pause(dep: Deployment, tokens: list[str]) -> None:
    paused_s = dep.pauses.paused_for(dep.name)
    if paused_s > 0:
        tokens.append(DeploymentPausedError.token)
        raise DeploymentPausedError(
            f"{dep.name} is paused after a 429", retry_after_s=paused_s
        )


async def _timed_call(
    dep: Deployment,
    call: Call,
    deadline: Deadline,
    tokens: list[str],
    permit: Permit,
) -> Answer:
    """Call with the attempt timeout; settle the slot and the breaker."""
    limit = min(dep.timeouts.first_token_s, dep.timeouts.attempt_s)
    left = deadline.left()
    started = dep.clock.monotonic()
    try:
        try:
            async with asyncio.timeout(min(limit, left)):
                result = await call()
        except TimeoutError as exc:
            raise _timeout_error(dep, limit, left) from exc
    except UpstreamError as exc:
        tokens.append(exc.attempt_token)
        _settle_error(dep, permit, exc, dep.clock.monotonic() - started)
        raise
    except DeadlineExceededError as exc:
        # The client's deadline, not the deployment, ended the wait: the call
        # counts, and as slow when it took ``slow_s`` or longer, never as failed.
        tokens.append(exc.token)
        dep.bulkhead.release()
        elapsed = dep.clock.monotonic() - started
        dep.breaker.record(permit, failed=False, duration_s=elapsed)
        raise
    except BaseException:
        dep.bulkhead.release()
        dep.breaker.release(permit)
        raise
    tokens.append("200")
    if isinstance(result, ChatResponse):
        dep.bulkhead.release()
        dep.breaker.record(
            permit, failed=False, duration_s=dep.clock.monotonic() - started
        )
        return result
    return GuardedStream(result, dep, permit, started, deadline)


def _timeout_error(dep: Deployment, limit: float, left: float) -> GatewayError:
    if left < limit:
        return DeadlineExceededError("the request's deadline ran out")
    return UpstreamTimeoutError(
        f"upstream {dep.name} sent nothing within {limit:g}s", deployment=dep.name
    )


def _settle_error(
    dep: Deployment, permit: Permit, exc: UpstreamError, duration_s: float
) -> None:
    dep.bulkhead.release()
    if exc.counts_as_failure:
        dep.breaker.record(permit, failed=True, duration_s=duration_s)
    else:
        dep.breaker.release(permit)


class GuardedStream:
    """A provider stream that owns its bulkhead slot and breaker permit.

    They are settled exactly once: on the stream's end (success), on a cut
    (failure), or on a client hang-up (no verdict).
    """

    def __init__(
        self,
        inner: ChatStream,
        dep: Deployment,
        permit: Permit,
        started: float,
        deadline: Deadline,
    ) -> None:
        """Take ownership of ``inner`` and its resources."""
        self._inner = inner
        self._dep = dep
        self._permit = permit
        self._ttft_s = dep.clock.monotonic() - started
        self._deadline = deadline
        self._attempt_end = started + dep.timeouts.attempt_s
        self._settled = False
        self._skip_role_head = False
        self.deployment = dep.name
        self.supports_prefill = dep.provider.supports_prefill

    @property
    def model(self) -> str:
        """Return the model the upstream reported."""
        return self._inner.model

    @property
    def text(self) -> str:
        """Return the content delivered so far."""
        return self._inner.text

    @property
    def finish_reason(self) -> str | None:
        """Return the finish reason once the upstream sent it."""
        return self._inner.finish_reason

    @property
    def usage(self) -> Usage | None:
        """Return the usage once the upstream sent it."""
        return self._inner.usage

    def without_role_head(self) -> GuardedStream:
        """Drop a leading role-only chunk: this stream continues another one."""
        self._skip_role_head = True
        return self

    async def __aiter__(self) -> AsyncIterator[bytes]:
        """Yield the inner frames; stop at the deadline; settle at the end."""
        frames = aiter(self._inner)
        read_s = self._dep.timeouts.read_s
        try:
            while True:
                left = self._deadline.left()
                attempt_left = self._attempt_end - self._dep.clock.monotonic()
                try:
                    async with asyncio.timeout(min(read_s, left, attempt_left)):
                        frame = await anext(frames)
                except StopAsyncIteration:
                    break
                except TimeoutError as exc:
                    raise self._cut(left, attempt_left, read_s) from exc
                if self._skip_role_head:
                    self._skip_role_head = False
                    if is_role_only_frame(frame):
                        continue
                yield frame
        except UpstreamStreamCutError:
            self._settle(failed=True)
            raise
        self._settle(failed=False)

    def _cut(self, left: float, attempt_left: float, read_s: float) -> GatewayError:
        """Explain a timeout mid-stream; the client's deadline is no verdict."""
        if left <= min(read_s, attempt_left):
            self._settle(failed=None)
            what = "was cut: the request's deadline ran out"
        elif attempt_left <= read_s:
            what = f"ran past attempt_s ({self._dep.timeouts.attempt_s:g}s)"
        else:
            what = f"went silent for read_s ({read_s:g}s)"
        return UpstreamStreamCutError(
            f"upstream {self.deployment} {what} mid-stream", deployment=self.deployment
        )

    def _settle(self, *, failed: bool | None) -> None:
        if self._settled:
            return
        self._settled = True
        self._dep.bulkhead.release()
        if failed is None:
            self._dep.breaker.release(self._permit)
        else:
            self._dep.breaker.record(
                self._permit, failed=failed, duration_s=self._ttft_s
            )

    async def aclose(self) -> None:
        """Close the upstream; an unsettled stream was abandoned: no verdict."""
        self._settle(failed=None)
        await self._inner.aclose()
