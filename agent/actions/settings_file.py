"""``config.get`` / ``config.set`` / ``config.undo``: allow-listed keys of the device's JSON
settings file (``policy.config_file``, ``policy.config_keys``).

``config.set`` (disruptive) writes the whole file atomically (temporary file in the same
directory, fsync, rename, same permissions), answers ``{key, old, new}`` and appends the change
to an undo journal (``data_dir/config-journal.jsonl``). ``config.undo`` (disruptive) restores
the value before the most recent change not yet undone — a key that did not exist is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.errors import ActionArgumentError, ActionError
from agent.plugin import ActionContext, ActionResult, ActionSpec
from protocol import format_ts

__all__ = ["ConfigFile", "config_actions"]

_MISSING = object()


class ConfigFile:
    """The JSON object in ``path``; only ``keys`` are visible or changeable."""

    def __init__(self, path: Path | None, keys: Sequence[str], journal: Path) -> None:
        self.path = path
        self.keys = list(keys)
        self.journal = journal
        self._lock = asyncio.Lock()

    def _checked(self, key: str) -> str:
        if self.path is None or not self.keys:
            raise ActionArgumentError(
                "no configuration keys are allowed on this device (policy.config_file / config_keys)"
            )
        if key not in self.keys:
            raise ActionArgumentError(f"key {key!r} is not in policy.config_keys ({', '.join(self.keys)})")
        return key

    def read(self) -> dict[str, Any]:
        assert self.path is not None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ActionError(f"cannot read the settings file {self.path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ActionError(f"the settings file {self.path} does not hold a JSON object")
        return data

    def _write(self, data: Mapping[str, Any]) -> None:
        assert self.path is not None
        text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        mode = self.path.stat().st_mode & 0o7777 if self.path.exists() else 0o644
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):  # the rename itself durable
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def get(self, key: str | None) -> dict[str, Any]:
        data = self.read()
        keys = [self._checked(key)] if key is not None else [self._checked(k) for k in self.keys]
        return {k: data.get(k) for k in keys}

    def _journal(self) -> list[dict[str, Any]]:
        if not self.journal.exists():
            return []
        return [json.loads(line) for line in self.journal.read_text(encoding="utf-8").splitlines() if line]

    def _append(self, entry: Mapping[str, Any]) -> None:
        with self.journal.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def _apply(self, key: str, value: Any) -> tuple[Any, bool]:
        data = self.read()
        old = data.get(key, _MISSING)
        if value is _MISSING:
            data.pop(key, None)
        else:
            data[key] = value
        self._write(data)
        return (None if old is _MISSING else old), old is not _MISSING

    def set(self, key: str, value: Any, *, who: str, command_id: str, now: datetime) -> dict[str, Any]:
        self._checked(key)
        old, existed = self._apply(key, value)
        entry = {
            "op": "set",
            "n": len(self._journal()),
            "id": command_id,
            "by": who,
            "at": format_ts(now),
            "key": key,
            "old": old,
            "existed": existed,
            "new": value,
        }
        self._append(entry)
        return {"key": key, "old": old, "new": value, "existed": existed}

    def undo(self, *, who: str, command_id: str, now: datetime) -> dict[str, Any]:
        entries = self._journal()
        undone = {e["undoes"] for e in entries if e.get("op") == "undo"}
        todo = next((e for e in reversed(entries) if e.get("op") == "set" and e["n"] not in undone), None)
        if todo is None:
            raise ActionArgumentError("nothing to undo: no config.set since the journal began")
        key = self._checked(todo["key"])
        restored = todo["old"] if todo["existed"] else _MISSING
        current, _ = self._apply(key, restored)
        self._append(
            {
                "op": "undo",
                "id": command_id,
                "by": who,
                "at": format_ts(now),
                "undoes": todo["n"],
                "undoes_command": todo["id"],
                "key": key,
            }
        )
        return {
            "key": key,
            "old": current,
            "new": None if restored is _MISSING else restored,
            "removed": restored is _MISSING,
            "undid": todo["id"],
        }

    async def locked(self, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        async with self._lock:
            return await asyncio.to_thread(work)


def config_actions(config: ConfigFile) -> list[ActionSpec]:
    async def get(args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
        key = args.get("key")
        values = await config.locked(lambda: config.get(None if key is None else str(key)))
        text = "\n".join(f"{k} = {json.dumps(v)}" for k, v in values.items())
        return ActionResult(ok=True, output=text, data={"values": values})

    async def set_(args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
        if "value" not in args:
            raise ActionArgumentError("value: required")
        key, value = str(args["key"]), args["value"]
        change = await config.locked(
            lambda: config.set(key, value, who=ctx.issuer, command_id=ctx.command_id, now=ctx.now())
        )
        return ActionResult(
            ok=True,
            output=f"{key}: {json.dumps(change['old'])} -> {json.dumps(value)} (config.undo restores it)",
            data=change,
        )

    async def undo(args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
        change = await config.locked(
            lambda: config.undo(who=ctx.issuer, command_id=ctx.command_id, now=ctx.now())
        )
        shown = "removed" if change["removed"] else json.dumps(change["new"])
        return ActionResult(
            ok=True, output=f"{change['key']}: {json.dumps(change['old'])} -> {shown}", data=change
        )

    key_schema = {"type": "string", "maxLength": 128}
    return [
        ActionSpec(
            "config.get",
            get,
            "Allow-listed device settings (policy.config_keys of policy.config_file).",
            timeout=10.0,
            args_schema={"type": "object", "properties": {"key": key_schema}, "additionalProperties": False},
        ),
        ActionSpec(
            "config.set",
            set_,
            "Change one allow-listed device setting; the old value is kept for config.undo.",
            disruptive=True,
            timeout=15.0,
            args_schema={
                "type": "object",
                "properties": {"key": key_schema, "value": {}},
                "required": ["key", "value"],
                "additionalProperties": False,
            },
        ),
        ActionSpec(
            "config.undo",
            undo,
            "Restore the value the most recent config.set replaced.",
            disruptive=True,
            timeout=15.0,
            args_schema={"type": "object", "properties": {}, "additionalProperties": False},
        ),
    ]
