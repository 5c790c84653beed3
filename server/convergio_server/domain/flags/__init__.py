"""Feature flags: the model, validation, evaluation (flagd-compatible bucketing), the
in-process cache every server process evaluates from, and the seed file format."""
