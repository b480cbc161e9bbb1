"""Signed anchors of the audit chain's head, kept outside the database (docs/security.md)."""
