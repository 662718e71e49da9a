"""Backoff between retries on the same deployment: capped exponential, full jitter.

The retry layer (outside the breaker, inside fallback) sleeps
``full_jitter(n, base_s, max_s, clock.random())`` seconds before retry ``n``
unless the upstream named its own wait (``providers.retry_after``).
"""

from __future__ import annotations


def full_jitter(retry_n: int, base_s: float, max_s: float, rnd: float) -> float:
    """Return the sleep before a retry: ``rnd * min(max_s, base_s * 2**retry_n)``.

    Full jitter spreads the retries of many clients over the whole interval,
    so a provider that just recovered is not hit by a synchronised wave.

    Args:
        retry_n: Retries already made (0 before the first retry).
        base_s: The first interval's upper bound.
        max_s: The cap on any interval's upper bound.
        rnd: A uniform draw in [0, 1), from ``Clock.random()``.

    Returns:
        Seconds to sleep, in ``[0, min(max_s, base_s * 2**retry_n)]``.
    """
    try:
        ceiling = min(max_s, base_s * 2.0**retry_n)
    except OverflowError:
        # 2.0**n overflows past n = 1023; by then the cap has long applied.
        ceiling = max_s
    return rnd * ceiling
