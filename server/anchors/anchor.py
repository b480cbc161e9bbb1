"""Signed anchors of the audit chain's head, kept outside the database.

The hash chain (:mod:`server.base.audit`) proves entries were not edited *relative to the
head*, but the database holds the head too: whoever can write it can delete the newest entries
(no gap is left) or edit an entry and re-seal everything after it (the hash has no key). An
*anchor* is a record of the head made while it was honest::

    {"v": 1, "chain_seq": 1234, "hash": "<sha256 hex>", "at": "2026-12-07T08:00:00.000000+00:00",
     "server": "fleetcare-server-1@host", "kid": "<key id>", "sig": "<Ed25519, base64url>"}

signed over ``b"fleetcare-audit-anchor-v1\\n" + canonical_json(every field but sig)`` with a key
the database does not hold (``auth.audit_anchor_key_file``, by default the command-signing key
``signing_key_file``: the domain prefix differs from the commands' ``fleetcare-cmd-v1``, so an
anchor signature never passes as a command's). Each anchor is appended to a JSON-lines file
(:func:`anchor_file`, fsync'd) and written to the log as one INFO line
``fleetcare-audit-anchor {json}``, so that a log shipper carries a copy off the machine.

:func:`verify_anchored` checks the chain against every anchor whose signature verifies: the
chain must still hold each anchored ``(chain_seq, hash)``. Shorter than an anchor: **truncated**;
another hash at an anchored number: **rewritten**; a line that does not verify (bad signature,
unknown key, not an anchor at all): **forged**. Anchors only protect what they saw: entries
newer than the newest anchor, and anchors deleted together with the entries, are not detected —
hence the copy in the log stream (verify accepts a log file as its anchors source).

:class:`AuditAnchorer` is the server task: it anchors the head soon after a seal advanced it
(at most one anchor every ``auth.audit_anchor_min_gap`` s) and checks it every
``auth.audit_anchor_interval`` s. Each round has a timeout, the file is written in a daemon
thread (a stalled disk blocks neither the event loop nor the server's exit), and failures are
logged and counted, never raised into the server.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

import protocol
from server.base import audit
from server.errors import ConfigError
from server.settings import ServerSettings

__all__ = [
    "DOMAIN",
    "LOG_MARKER",
    "UNCHECKED",
    "Anchor",
    "AnchorError",
    "AnchorProblem",
    "AnchorReport",
    "AuditCheck",
    "anchor_file",
    "append_anchor",
    "last_anchor",
    "load_anchor_key",
    "load_public_keys",
    "parse_anchor",
    "read_anchors",
    "sign_anchor",
    "verify_anchored",
]

logger = logging.getLogger(__name__)

DOMAIN = b"fleetcare-audit-anchor-v1\n"
LOG_MARKER = "fleetcare-audit-anchor"
VERSION = 1
_FIELDS = frozenset({"v", "chain_seq", "hash", "at", "server", "kid", "sig"})
_HASH = re.compile(r"[0-9a-f]{64}")
_TAIL = 64 * 1024  # bytes read from the file's end to find the last anchor at start-up
_MAX_FORGED = 100  # forged lines listed one by one; the rest are counted
UNCHECKED = "removed or rewritten entries cannot be detected"
T = TypeVar("T")


# --- one anchor --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Anchor:
    chain_seq: int
    hash: str
    at: datetime
    server: str
    kid: str
    sig: str

    def body(self) -> dict[str, Any]:
        """Every field but the signature: what is signed."""
        return {
            "v": VERSION,
            "chain_seq": self.chain_seq,
            "hash": self.hash,
            "at": self.at.astimezone(UTC).isoformat(timespec="microseconds"),
            "server": self.server,
            "kid": self.kid,
        }

    def line(self) -> str:
        """The anchor as one JSON line (no newline)."""
        return json.dumps({**self.body(), "sig": self.sig}, sort_keys=True, separators=(",", ":"))


def _signed_bytes(body: Mapping[str, Any]) -> bytes:
    return DOMAIN + json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign_anchor(
    key: Ed25519PrivateKey, head: audit.ChainHead, *, server: str, at: datetime | None = None
) -> Anchor:
    unsigned = Anchor(
        chain_seq=head.chain_seq,
        hash=head.hash,
        at=(at or datetime.now(UTC)).astimezone(UTC),
        server=server,
        kid=protocol.key_id(key.public_key()),
        sig="",
    )
    sig = base64.urlsafe_b64encode(key.sign(_signed_bytes(unsigned.body()))).rstrip(b"=").decode()
    return Anchor(unsigned.chain_seq, unsigned.hash, unsigned.at, unsigned.server, unsigned.kid, sig)


class AnchorError(ValueError):
    """Text that is not a valid anchor signed by a known key; the message says why."""


def parse_anchor(text: str, keys: Mapping[str, Ed25519PublicKey]) -> Anchor:
    """The anchor in ``text`` (one JSON object) if it is well-formed and its signature verifies
    with one of ``keys`` (by key id). Raises :class:`AnchorError`."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise AnchorError(f"not JSON ({exc})") from exc
    if not isinstance(data, dict) or set(data) != _FIELDS or data["v"] != VERSION:
        raise AnchorError(f"not a version-{VERSION} anchor (fields {', '.join(sorted(_FIELDS))})")
    seq, digest, at, server, kid, sig = (data[k] for k in ("chain_seq", "hash", "at", "server", "kid", "sig"))
    if type(seq) is not int or seq < 1:
        raise AnchorError(f"chain_seq must be a positive integer, got {seq!r}")
    if not isinstance(digest, str) or not _HASH.fullmatch(digest):
        raise AnchorError("hash must be 64 lowercase hex digits")
    if not all(isinstance(value, str) for value in (at, server, kid, sig)):
        raise AnchorError("at, server, kid and sig must be strings")
    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        raise AnchorError(f"at must be an ISO time, got {at!r}") from None
    key = keys.get(kid)
    if key is None:
        known = ", ".join(sorted(keys)) or "none"
        raise AnchorError(
            f"signed by key {kid!r}, not by the anchor key ({known}): forged, or made before a key "
            "change (give the old public key with --public-key)"
        )
    try:
        key.verify(
            base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)),
            _signed_bytes({k: v for k, v in data.items() if k != "sig"}),
        )
    except (InvalidSignature, ValueError, binascii.Error):
        raise AnchorError("the signature does not verify: the anchor was forged or altered") from None
    return Anchor(seq, digest, when, server, kid, sig)


def _anchor_text(line: str) -> str | None:
    """The anchor JSON in a line of an anchors file or of a log (``… fleetcare-audit-anchor {…}``);
    None for a line that holds none (another log line, a blank line)."""
    stripped = line.strip()
    if stripped.startswith("{"):
        return stripped
    at = stripped.find(f"{LOG_MARKER} {{")
    return stripped[at + len(LOG_MARKER) + 1 :] if at >= 0 else None


# --- the file ----------------------------------------------------------------------------------


def append_anchor(path: Path, anchor: Anchor) -> None:
    """Append ``anchor`` as one line and fsync it (and the directory when the file is new).
    Opened per write, O_APPEND: a rotated or removed file is simply started again."""
    path.parent.mkdir(parents=True, exist_ok=True)
    created = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        size = os.fstat(fd).st_size
        # a line cut short by a crash must not swallow this one
        prefix = b"\n" if size and os.pread(fd, 1, size - 1) != b"\n" else b""
        os.write(fd, prefix + anchor.line().encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def last_anchor(path: Path, keys: Mapping[str, Ed25519PublicKey]) -> Anchor | None:
    """The newest anchor in ``path`` that verifies with ``keys`` (searched in the file's last
    64 KiB); None when there is no file or no such anchor. Raises OSError."""
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - _TAIL))
            tail = fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return None
    for line in reversed(tail.splitlines()):
        text = _anchor_text(line)
        if text is not None:
            with contextlib.suppress(AnchorError):
                return parse_anchor(text, keys)
    return None


@dataclass(frozen=True, slots=True)
class AnchorProblem:
    kind: str  # truncated | rewritten | forged
    line: int  # of the anchors file
    chain_seq: int | None  # the anchored number (None: a forged line)
    hash: str | None  # the anchored hash
    found: str | None  # the chain's hash at chain_seq now (None: no such entry)
    message: str


@dataclass(frozen=True, slots=True)
class _AnchorFile:
    anchors: list[tuple[int, Anchor]]  # (line number, anchor) of every anchor that verifies
    forged: list[AnchorProblem]
    warnings: list[str]


def read_anchors(path: Path, keys: Mapping[str, Ed25519PublicKey]) -> _AnchorFile:
    """Every anchor in ``path`` (an anchors file, or a log holding ``fleetcare-audit-anchor``
    lines), its signature checked. Raises OSError when the file cannot be read."""
    data = path.read_bytes()
    lines = data.decode("utf-8", errors="replace").splitlines()
    found = _AnchorFile([], [], [])
    other = more = 0
    for number, line in enumerate(lines, start=1):
        text = _anchor_text(line)
        if text is None:
            other += bool(line.strip())
            continue
        try:
            found.anchors.append((number, parse_anchor(text, keys)))
        except AnchorError as exc:
            if number == len(lines) and not data.endswith(b"\n"):
                # the server writes whole lines: a cut last line is a write a crash interrupted
                found.warnings.append(f"line {number} of {path} is incomplete (a write cut short): ignored")
            elif len(found.forged) < _MAX_FORGED:
                found.forged.append(
                    AnchorProblem("forged", number, None, None, None, f"line {number}: {exc}")
                )
            else:
                more += 1
    if more:
        found.warnings.append(f"{more} more forged line(s) in {path} not listed")
    if other:
        found.warnings.append(f"{other} line(s) of {path} hold no anchor: ignored")
    return found


# --- the check ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AnchorReport:
    source: Path | None  # the anchors file read (None: anchoring is not configured)
    anchors: int  # anchors whose signature verified
    checked: int  # of those, compared with the chain (the rest lie beyond a broken entry)
    newest: Anchor | None  # the anchor with the highest chain_seq
    problems: tuple[AnchorProblem, ...]
    warnings: tuple[str, ...]


def _check(source: Path, found: _AnchorFile, chain: audit.VerifyReport) -> AnchorReport:
    """Compare the anchors in ``found`` with a chain verified with every anchored number watched."""
    problems = list(found.forged)
    by_seq = sorted(found.anchors, key=lambda item: (item[1].chain_seq, item[0]))
    newest = by_seq[-1][1] if by_seq else None
    if newest is not None and newest.chain_seq > chain.last_seq:
        line = by_seq[-1][0]
        problems.append(
            AnchorProblem(
                "truncated",
                line,
                newest.chain_seq,
                newest.hash,
                None,
                f"the chain ends at #{chain.last_seq}, but the anchor of {newest.at.isoformat()} (line {line}) "
                f"recorded #{newest.chain_seq} with hash {newest.hash}: "
                f"{newest.chain_seq - chain.last_seq} newest entries were removed (or an older backup restored)",
            )
        )
    compared = [
        (line, anchor, chain.watched[anchor.chain_seq])
        for line, anchor in by_seq
        if anchor.chain_seq in chain.watched
    ]
    mismatched = [(line, anchor, now) for line, anchor, now in compared if now != anchor.hash]
    if mismatched:
        line, anchor, now = mismatched[0]  # the oldest: the rewrite starts at or before it
        problems.append(
            AnchorProblem(
                "rewritten",
                line,
                anchor.chain_seq,
                anchor.hash,
                now,
                f"entry #{anchor.chain_seq} has hash {now}, but the anchor of {anchor.at.isoformat()} "
                f"(line {line}) recorded {anchor.hash}: the chain was rewritten at or before "
                f"#{anchor.chain_seq} ({len(mismatched)} of {len(compared)} anchors do not match)",
            )
        )
    warnings = list(found.warnings)
    if not found.anchors and not found.forged:
        warnings.append(f"{source} holds no anchors yet: {UNCHECKED}")
    return AnchorReport(source, len(found.anchors), len(compared), newest, tuple(problems), tuple(warnings))


@dataclass(frozen=True, slots=True)
class AuditCheck:
    """The chain's check and the anchors' check together."""

    chain: audit.VerifyReport
    anchors: AnchorReport

    @property
    def ok(self) -> bool:
        return self.chain.ok and not self.anchors.problems

    def summary(self) -> str:
        if not self.chain.ok or not self.anchors.problems:
            text = self.chain.summary()
            newest = self.anchors.newest
            if self.chain.ok and newest is not None:
                text += (
                    f"; {self.anchors.checked} of {self.anchors.anchors} anchors checked, "
                    f"newest #{newest.chain_seq} of {newest.at.isoformat()}"
                )
            return text
        first = self.anchors.problems[0]
        return f"audit log TAMPERED ({first.kind}): {first.message}"

    def lines(self, limit: int = 20) -> list[str]:
        """The summary, the other anchor problems (at most ``limit``), then ``WARNING: …`` lines."""
        rest = list(self.anchors.problems[0 if not self.chain.ok else 1 :])
        out = [self.summary(), *(f"anchor {p.kind}: {p.message}" for p in rest[:limit])]
        if len(rest) > limit:
            out.append(f"... and {len(rest) - limit} more anchor problems")
        return out + [f"WARNING: {warning}" for warning in self.anchors.warnings]


async def verify_anchored(
    session: AsyncSession, *, anchors: Path | None, keys: Mapping[str, Ed25519PublicKey]
) -> AuditCheck:
    """Verify the chain, and the chain against the signed anchors in ``anchors`` (a file, or a
    log with anchor lines). No file, or no key to check it with, is a warning, not a silent OK."""

    async def alone(warning: str) -> AuditCheck:
        return AuditCheck(await audit.verify(session), AnchorReport(anchors, 0, 0, None, (), (warning,)))

    if anchors is None:
        return await alone(f"no anchors file (auth.audit_anchor_file, needed for PostgreSQL): {UNCHECKED}")
    if not keys:
        return await alone(f"no anchor key to check {anchors} with (auth.audit_anchor_key_file): {UNCHECKED}")
    try:
        found = await asyncio.to_thread(read_anchors, anchors, keys)
    except FileNotFoundError:
        return await alone(f"no anchors file at {anchors}: {UNCHECKED}")
    except OSError as exc:
        return await alone(f"cannot read the anchors file {anchors} ({exc.strerror}): {UNCHECKED}")
    chain = await audit.verify(session, watch={anchor.chain_seq for _, anchor in found.anchors})
    return AuditCheck(chain, _check(anchors, found, chain))


# --- settings ----------------------------------------------------------------------------------


def anchor_file(settings: ServerSettings) -> Path | None:
    """``auth.audit_anchor_file``; when unset, ``<name>-audit-anchors.jsonl`` beside a SQLite
    database file (each database its own anchors, e.g. a test's temporary one); None otherwise
    (PostgreSQL needs the setting)."""
    if settings.auth.audit_anchor_file is not None:
        return settings.auth.audit_anchor_file
    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    database = Path(url.database)
    return database.with_name(f"{database.stem}-audit-anchors.jsonl")


def load_anchor_key(settings: ServerSettings) -> Ed25519PrivateKey | None:
    """The anchor signing key: ``auth.audit_anchor_key_file``, else the command-signing key;
    None when neither is set. Raises :class:`ConfigError` naming the setting for a bad key."""
    setting, path = ("auth.audit_anchor_key_file", settings.auth.audit_anchor_key_file)
    if path is None:
        setting, path = ("signing_key_file", settings.signing_key_file)
    if path is None:
        return None
    try:
        return protocol.load_private_key(path.read_bytes())
    except OSError as exc:
        raise ConfigError(setting, f"cannot read {str(path)!r}: {exc.strerror}") from exc
    except protocol.InvalidKey as exc:
        raise ConfigError(setting, exc.problem) from exc


def load_public_keys(paths: Iterable[Path]) -> dict[str, Ed25519PublicKey]:
    """Public keys (PEM, e.g. ``pki/signing.pub``) by key id. Raises OSError or
    :class:`protocol.InvalidKey`."""
    keys = [protocol.load_public_key(path.read_bytes()) for path in paths]
    return {protocol.key_id(key): key for key in keys}


# --- the server task ---------------------------------------------------------------------------
