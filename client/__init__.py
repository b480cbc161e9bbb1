"""Command-line clients of the fleet server's HTTP API (``fleetcare session``, ``fleetcare kb``):
they need httpx and typer, never the server's own code."""
