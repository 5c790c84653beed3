"""Workflows: the catalog of multi-step plans run by the roster's agents."""
