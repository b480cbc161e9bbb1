"""The fleet server's HTTP API as the command-line tools use it: base URL and token options, one
client per request, errors as one line with a hint (exit 1; 2 when the server cannot be
reached or no token is given), and a command's server-sent events with resumption."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Annotated, Any, NoReturn

import httpx
import typer

__all__ = ["DEFAULT_URL", "HINTS", "Api", "Token", "Url", "fail", "say"]

Url = Annotated[str, typer.Option("--url", envvar="FLEETCARE_URL", help="Server base URL")]
Token = Annotated[str, typer.Option("--token", envvar="FLEETCARE_TOKEN", help="API token")]
DEFAULT_URL = "http://127.0.0.1:8080"
HINTS = {
    401: "your token is missing, expired or revoked: get one with 'fleetcare server token NAME' or sign in",
    403: "your role or your customer assignments do not allow this",
    409: "the session or command is not in a state that allows this",
}


def say(text: str) -> None:
    typer.echo(text, err=True)


def fail(response: httpx.Response) -> NoReturn:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:300]
    say(f"error ({response.status_code}): {message}")
    if response.status_code in HINTS:
        say(f"hint: {HINTS[response.status_code]}")
    raise typer.Exit(1)


class Api:
    def __init__(self, url: str, token: str) -> None:
        if not token:
            say("error: no API token: pass --token or set FLEETCARE_TOKEN")
            raise typer.Exit(2)
        self.base_url = url.rstrip("/") + "/api/v1"
        self.headers = {"Authorization": f"Bearer {token}"}

    def client(self) -> httpx.Client:
        """A client per request: a CLI call makes a handful, and nothing is left open."""
        return httpx.Client(base_url=self.base_url, headers=self.headers, timeout=30)

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            with self.client() as client:
                response = client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            say(f"error: cannot reach the server at {self.base_url}: {exc}")
            raise typer.Exit(2) from exc
        if response.status_code >= 400:
            fail(response)
        return response

    def events(self, command_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """The command's SSE stream; reconnects with Last-Event-ID if the connection drops."""
        last: str | None = None
        while True:
            headers = {"Last-Event-ID": last} if last else {}
            try:
                with (
                    self.client() as client,
                    client.stream(
                        "GET",
                        f"/commands/{command_id}/stream",
                        headers=headers,
                        timeout=httpx.Timeout(30, read=None),
                    ) as response,
                ):
                    if response.status_code >= 400:
                        response.read()
                        fail(response)
                    event, data = "", ""
                    for line in response.iter_lines():
                        if line.startswith("id: "):
                            last = line[4:]
                        elif line.startswith("event: "):
                            event = line[7:]
                        elif line.startswith("data: "):
                            data = line[6:]
                        elif not line and event:
                            yield event, json.loads(data or "{}")
                            if event == "end":
                                return
                            event, data = "", ""
            except httpx.TransportError:
                say("connection lost; resuming the stream …")
                time.sleep(1)
