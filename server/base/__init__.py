"""Foundations every domain builds on, importing only ``server.db`` and ``server.errors``: the
audit chain, users and principals, access scope, business-impact priority, incident timelines."""
