"""Socket options for the broker links."""

from __future__ import annotations

import socket

__all__ = ["NO_DELAY"]

NO_DELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
"""paho leaves Nagle's algorithm on: a command's reply and the PUBACKs would each wait ~40 ms for
the peer's delayed ACK (benchmarks/command_latency.py measured ~90 ms per round trip with it)."""
