"""``file.fetch``: copy an allow-listed file off the device, streamed with a checksum.

Path safety is :class:`agent.actions.logs.AllowedPaths` (``policy.fetch_paths``): resolved
before comparison, no final symlink, regular files only, re-checked after opening. The file is
read in blocks of :data:`RAW_CHUNK` bytes, each sent at once as one base64 ``output`` reply
(6144 bytes → exactly 8192 characters) through ``ctx.output``, which waits while the outbox is
full: a large file goes at the broker's pace without swelling the disk queue. The result's
``data`` holds ``path``, ``size``, ``sha256`` (of the bytes sent), ``encoding`` and ``chunks``.
Reassemble by ordering the ``output`` replies by ``chunk`` (dropping duplicates under QoS 1).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from collections.abc import Mapping
from typing import Any

from agent.actions.logs import AllowedPaths
from agent.errors import ActionArgumentError
from agent.plugin import ActionContext, ActionResult, ActionSpec

__all__ = ["RAW_CHUNK", "file_fetch_action"]

RAW_CHUNK = 6144  # base64: 8192 characters, one reply
_BLOCK_CHUNKS = 32  # chunks read per worker-thread hop


def file_fetch_action(paths: AllowedPaths, *, max_bytes: int) -> ActionSpec:
    async def handler(args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
        fd, target, info = await asyncio.to_thread(paths.open_regular, str(args["path"]))
        try:
            size = info.st_size
            if size > max_bytes:
                raise ActionArgumentError(
                    f"{target} is {size} bytes, over policy.max_fetch_bytes ({max_bytes}); "
                    "use logs.tail for the end of a log"
                )
            digest = hashlib.sha256()
            sent = chunks = 0
            reported = 0.0
            while sent < size:
                block = await asyncio.to_thread(os.read, fd, min(RAW_CHUNK * _BLOCK_CHUNKS, size - sent))
                if not block:
                    break  # the file shrank meanwhile: send what there was
                for start in range(0, len(block), RAW_CHUNK):
                    piece = block[start : start + RAW_CHUNK]
                    digest.update(piece)
                    await ctx.output(base64.b64encode(piece).decode("ascii"))
                    chunks += 1
                sent += len(block)
                if size and sent / size - reported >= 0.1:
                    reported = sent / size
                    await ctx.progress(reported, f"{sent} of {size} bytes")
        finally:
            os.close(fd)
        checksum = digest.hexdigest()
        return ActionResult(
            ok=True,
            output=f"{target}: {sent} bytes in {chunks} chunks, sha256 {checksum}",
            data={
                "path": str(target),
                "size": sent,
                "sha256": checksum,
                "encoding": "base64",
                "chunks": chunks,
            },
        )

    return ActionSpec(
        "file.fetch",
        handler,
        "Copy an allow-listed file (policy.fetch_paths), streamed as base64 chunks with its sha256.",
        timeout=600.0,
        args_schema={
            "type": "object",
            "properties": {"path": {"type": "string", "maxLength": 4096}},
            "required": ["path"],
            "additionalProperties": False,
        },
    )
