"""Resilience policies: deadline, retry, budget, breaker, bulkhead, pause, fallback."""
