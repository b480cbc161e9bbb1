"""``python -m server.cli``: the server's CLI (tests start the server this way)."""

from server.cli import app

app()
