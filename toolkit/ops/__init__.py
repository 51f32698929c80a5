"""24/7 operations: what is normal at each hour of the week (liquidity regimes), for alerting by context."""
