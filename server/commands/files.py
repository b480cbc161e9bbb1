"""``file.fetch``: a file the device sent back in checksummed chunks, put together and verified."""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from server.errors import Conflict

__all__ = ["FILE_FETCH", "FetchedFile", "assemble_file"]

logger = logging.getLogger(__name__)

FILE_FETCH = "file.fetch"


@dataclass(frozen=True, slots=True)
class FetchedFile:
    name: str
    content: bytes
    sha256: str


def assemble_file(command_id: str, data: dict[str, Any], chunks: dict[int, str]) -> FetchedFile:
    """Decode and verify a ``file.fetch`` transfer (result data: ``path``, ``size``, ``sha256``,
    ``chunks``, ``encoding: base64``)."""
    try:
        size, digest = int(data["size"]), str(data["sha256"]).lower()
    except (KeyError, TypeError, ValueError) as exc:
        raise Conflict(
            f"command {command_id}: the result data lacks size/sha256; cannot check the file"
        ) from exc
    count = int(data.get("chunks") or (max(chunks) + 1 if chunks else 0))
    missing = [n for n in range(count) if n not in chunks]
    if missing:
        shown = ", ".join(str(n) for n in missing[:10]) + (" …" if len(missing) > 10 else "")
        raise Conflict(
            f"command {command_id}: the file is incomplete: {len(missing)} of {count} chunks missing ({shown})"
        )
    try:
        content = b"".join(base64.b64decode(chunks[n], validate=True) for n in range(count))
    except (binascii.Error, ValueError) as exc:
        raise Conflict(f"command {command_id}: a chunk is not valid base64: {exc}") from exc
    actual = hashlib.sha256(content).hexdigest()
    if len(content) != size or actual != digest:
        raise Conflict(
            f"command {command_id}: the file does not match the device's checksum "
            f"({len(content)} bytes, sha256 {actual[:12]}… ; expected {size} bytes, sha256 {digest[:12]}…)"
        )
    name = str(data.get("path") or data.get("name") or f"{command_id}.bin").rsplit("/", 1)[-1]
    return FetchedFile(name=name or f"{command_id}.bin", content=content, sha256=actual)
