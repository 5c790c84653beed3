"""Conversations: the service, the turn runner, speaker policies and the storage contract."""
