"""Cost and safety guards: prices, the cost ledger, budgets enforced by reservation, the
circuit breaker, rate limits and input screening."""
