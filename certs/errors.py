"""Exception tree of the certs package.

    PkiError                      anything the PKI tooling refuses or cannot do
    ├── InvalidIdentityError      a device id / common name outside [A-Za-z0-9._-]{1,64}
    ├── PkiExistsError            would overwrite a CA or certificate without force/overwrite
    ├── PkiMissingError           a file the operation needs (CA, device certificate) is absent
    └── PkiCorruptError           a file exists but cannot be loaded or does not match the CA

``str()`` of each is one line naming the file or identity and what to do about it, fit for a
CLI error message.  Errors from :mod:`cryptography` and the file system are translated at the
boundary and chained (``raise ... from exc``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "InvalidIdentityError",
    "PkiCorruptError",
    "PkiError",
    "PkiExistsError",
    "PkiMissingError",
]


class PkiError(Exception):
    """Base of every error raised by :mod:`certs`."""


class InvalidIdentityError(PkiError, ValueError):
    """A device id or certificate common name that is unsafe in topics, ACL patterns or paths."""

    def __init__(self, identity: str, rule: str, *, what: str = "device id") -> None:
        self.identity = identity
        self.rule = rule
        super().__init__(f"invalid {what} {identity!r}: {rule}")


class PkiExistsError(PkiError):
    """Refusing to overwrite existing material; carries the path that is in the way."""

    def __init__(self, path: Path, hint: str) -> None:
        self.path = path
        super().__init__(f"{path} already exists; {hint}")


class PkiMissingError(PkiError):
    """A file the operation needs does not exist."""

    def __init__(self, path: Path, hint: str) -> None:
        self.path = path
        super().__init__(f"{path} not found; {hint}")


class PkiCorruptError(PkiError):
    """A file exists but is unreadable, malformed, or not issued by this CA."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")
