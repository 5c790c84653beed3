"""Conversation events: the event model and the event log."""
