"""Limits at the API edge (issue 13): hostile file names in Content-Disposition (attack 4: a device
names the file it fetched) and oversized command arguments over HTTP (attack 3)."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any
from urllib.parse import unquote

import pytest

from server.api.download import MAX_FILENAME_CHARS, content_disposition
from tests.server import factory as f
from tests.server.test_sessions_api import app, open_and_run, write  # noqa: F401 - the fixture

HOSTILE = [
    'a"b.log',
    "x.log\"; filename*=UTF-8''evil.exe",
    "line\r\nSet-Cookie: a=b",
    "Bericht-März-Ωmega.log",
    "..\\..\\windows\\system32\\cfg.ini",
    "/var/log/",
    "",
    "\x00\x01\x7f",
    "tab\there;semi%percent.txt",
    "x" * 5000 + ".log",
    "\ud800lone.log",
]


def parsed(value: str) -> tuple[str, str | None, dict[str, str]]:
    """Split the header strictly by RFC 6266's grammar: (disposition, decoded filename*, params).
    Anything left over (an injected parameter, a stray quote) fails the full match."""
    grammar = re.fullmatch(
        r'(attachment|inline); filename="([^"\\]*)"(?:; filename\*=UTF-8\'\'([A-Za-z0-9%!#$&+.^_`|~-]+))?',
        value,
    )
    assert grammar, value
    star = unquote(grammar.group(3), errors="strict") if grammar.group(3) else None
    return grammar.group(1), star, {"filename": grammar.group(2)}


@pytest.mark.parametrize("name", HOSTILE)
def test_every_hostile_name_gives_one_well_formed_header(name: str) -> None:
    value = content_disposition(name)
    assert all(" " <= ch <= "~" for ch in value), value  # latin-1 safe, no CR/LF, no controls
    assert value.count("filename=") == 1
    assert value.count("filename*=") <= 1
    disposition, star, params = parsed(value)
    assert disposition == "attachment"
    fallback = params["filename"]
    assert fallback
    assert not set(fallback) & set('"\\/;%')
    assert len(fallback) <= MAX_FILENAME_CHARS
    shown = star if star is not None else fallback
    assert "/" not in shown
    assert "\\" not in shown
    assert "\r" not in shown
    assert "\n" not in shown
    assert len(shown) <= MAX_FILENAME_CHARS


def test_plain_names_stay_plain_and_unicode_survives_in_filename_star() -> None:
    assert content_disposition("app.log") == 'attachment; filename="app.log"'
    assert content_disposition("/var/log/app.log", disposition="inline") == 'inline; filename="app.log"'
    _, star, params = parsed(content_disposition("Bericht-März.log"))
    assert star == "Bericht-März.log"
    assert params["filename"] == "Bericht-Marz.log"
    long = content_disposition("y" * 300 + ".tar.gz")
    assert parsed(long)[2]["filename"].endswith(".gz")


@pytest.mark.parametrize("path", ['/tmp/a"b;c.log', "/tmp/r\u00e9sum\u00e9\r\n.log", "/tmp/\u65e5\u672c.txt"])
async def test_a_device_supplied_path_downloads_with_a_safe_header(app: Any, path: str) -> None:  # noqa: F811
    client, runtime, auth = app
    content = b"log line\n" * 10
    _, command_id = await open_and_run(client, auth, "file.fetch", path="/var/log/app.log")
    data = {"path": path, "size": len(content), "sha256": hashlib.sha256(content).hexdigest(),
            "encoding": "base64", "chunks": 1}  # fmt: skip
    await write(runtime, f.reply("api-ses", 10, command_id, "accepted"),
                f.reply("api-ses", 11, command_id, "output", output=base64.b64encode(content).decode(), chunk=0),
                f.reply("api-ses", 12, command_id, "result", ok=True, data=data))  # fmt: skip
    fetched = await client.get(f"/api/v1/commands/{command_id}/file", headers=auth)
    assert fetched.status_code == 200, fetched.text
    assert fetched.content == content
    _, star, params = parsed(fetched.headers["content-disposition"])
    assert '"' not in params["filename"]
    assert ";" not in params["filename"]
    expected = path.rsplit("/", 1)[-1].replace("\r", " ").replace("\n", " ").strip()
    assert (star or params["filename"]) == expected


async def test_a_five_megabyte_command_is_a_422_naming_args(app: Any) -> None:  # noqa: F811
    """Issue 13, attack 3, over HTTP: refused before signing, with the field and the limit."""
    client, _, auth = app
    opened = await client.post("/api/v1/sessions", json={"device_id": "api-ses", "reason": "x"}, headers=auth)
    assert opened.status_code == 201, opened.text
    sent = await client.post(
        f"/api/v1/sessions/{opened.json()['id']}/commands",
        json={"action": "selftest", "args": {"blob": "x" * 5_000_000}},
        headers=auth,
    )
    assert sent.status_code == 422, sent.text
    assert "args" in sent.text
    assert "limit" in sent.text
