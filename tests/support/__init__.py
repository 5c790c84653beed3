"""Helpers shared by the tests: real servers on ephemeral ports."""
