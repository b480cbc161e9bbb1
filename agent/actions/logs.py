"""``logs.tail``: the last lines of a log file the device owner allow-listed.

The requested path is resolved (symlinks, ``..``) *before* it is compared with the allowed
files and directories, so neither a ``../`` escape nor a symlink pointing out of an allowed
directory gets through. The file is then opened without following a final symlink, must be a
regular file (never a device or FIFO that could block or stream forever), and on Linux the
opened descriptor's real path is checked again, closing the window between check and open.
At most ``max_bytes`` are read from the end of the file; at most ``max_lines`` are returned.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import ActionArgumentError

__all__ = ["AllowedPaths", "LogAccess", "LogTail"]

_PROC_FD = Path("/proc/self/fd")


@dataclass(frozen=True, slots=True)
class LogTail:
    path: str
    text: str
    lines: int
    truncated: bool

    def data(self) -> dict[str, Any]:
        return {"path": self.path, "lines": self.lines, "truncated": self.truncated}


class AllowedPaths:
    """Files, or directories (everything beneath them), an action may read — and the safe way
    to open one of them. Shared by ``logs.tail`` and ``file.fetch`` (``what`` names the list
    in messages, ``setting`` the policy key)."""

    def __init__(self, allowed: Sequence[Path], *, what: str, setting: str) -> None:
        self.allowed = [Path(p) for p in allowed]
        self.what = what
        self.setting = setting

    def _roots(self) -> list[Path]:
        # Resolved at every call: an allowed directory that is itself a symlink may move.
        return [Path(os.path.realpath(p)) for p in self.allowed]

    def _inside(self, target: Path, roots: Sequence[Path]) -> bool:
        return any(target == root or target.is_relative_to(root) for root in roots)

    def check(self, raw: str) -> Path:
        """The real path of ``raw`` if it lies inside the allowed paths; else ActionArgumentError."""
        if not raw or "\x00" in raw or not os.path.isabs(raw):
            raise ActionArgumentError(f"path {raw!r} must be an absolute file path")
        if not self.allowed:
            raise ActionArgumentError(f"no {self.what} are allowed on this device ({self.setting} is empty)")
        target = Path(os.path.realpath(raw))
        roots = self._roots()
        if not self._inside(target, roots):
            shown = ", ".join(str(p) for p in self.allowed)
            raise ActionArgumentError(
                f"path {raw!r} (resolves to {str(target)!r}) is outside the allowed {self.what}: {shown}"
            )
        return target

    def open_regular(self, raw: str) -> tuple[int, Path, os.stat_result]:
        """Open ``raw`` for reading after :meth:`check`: no final symlink, regular files only,
        and (Linux) the opened descriptor's real path checked again. Returns (fd, real path,
        fstat); the caller closes the fd. Blocking: call it from a worker thread."""
        target = self.check(raw)
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(target, flags)
        except FileNotFoundError as exc:
            raise ActionArgumentError(f"no such file: {raw!r}") from exc
        except OSError as exc:
            raise ActionArgumentError(f"cannot open {raw!r}: {exc.strerror}") from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ActionArgumentError(f"{raw!r} is not a regular file")
            if _PROC_FD.is_dir():
                opened = Path(os.path.realpath(_PROC_FD / str(fd)))
                if not self._inside(opened, self._roots()):
                    raise ActionArgumentError(f"path {raw!r} changed while being opened; refused")
        except BaseException:
            os.close(fd)
            raise
        return fd, target, info


class LogAccess(AllowedPaths):
    def __init__(self, allowed: Sequence[Path], *, max_lines: int = 500, max_bytes: int = 256 * 1024) -> None:
        super().__init__(allowed, what="log paths", setting="policy.log_paths")
        self.max_lines = max_lines
        self.max_bytes = max_bytes

    def tail(self, raw: str, lines: int) -> LogTail:
        """Blocking file I/O: call it from a worker thread."""
        wanted = max(1, min(int(lines), self.max_lines))
        fd, target, info = self.open_regular(raw)
        try:
            start = max(0, info.st_size - self.max_bytes)
            os.lseek(fd, start, os.SEEK_SET)
            data = os.read(fd, self.max_bytes)
        finally:
            os.close(fd)
        text = data.decode("utf-8", errors="replace")
        all_lines = text.splitlines()
        if start > 0 and all_lines:
            all_lines = all_lines[1:]  # the first line was cut by the byte bound
        kept = all_lines[-wanted:]
        truncated = int(lines) > self.max_lines or (start > 0 and len(kept) < wanted)
        return LogTail(str(target), "\n".join(kept), len(kept), truncated)
