"""Tools agents can call: the base (typed arguments, timeout, retries, error kinds, risk
level), the registry with its AutoGen adapter, and the built-in tools."""
