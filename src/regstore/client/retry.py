"""The retry policy and retry budgets, under their old name: they live in :mod:`regstore.retry`
(a leaf both the client and the engine import)."""

from __future__ import annotations

from regstore.retry import RetryBudget, RetryPolicy, active_budget, is_transient, retryable_status

__all__ = [
    "RetryBudget",
    "RetryPolicy",
    "active_budget",
    "is_transient",
    "retryable_status",
]
