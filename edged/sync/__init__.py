"""Sync health: consumer state, the sync log, pickup deadlines."""
