"""Guided self-resolution: steps a customer works through for a fault (docs/sessions.md)."""
