"""``Content-Disposition`` for downloads, the one place a file name goes into a header.

File names come from devices (a ``file.fetch`` reply names the path it read), so they are
hostile input: a quote would end the quoted string, ``; filename*=`` would inject a second
parameter, CR/LF would split the header (Starlette then aborts the response) and a non-ASCII
name cannot be encoded in latin-1 at all (a 500). RFC 6266 §4.3 with RFC 5987/8187: an ASCII
fallback ``filename="…"`` with every unsafe character replaced, plus ``filename*=UTF-8''…``
(percent-encoded, so it can carry anything) whenever the fallback is not the name itself.
Browsers prefer ``filename*`` when both are present.
"""

from __future__ import annotations

import posixpath
import unicodedata
from typing import Literal
from urllib.parse import quote

__all__ = ["MAX_FILENAME_CHARS", "content_disposition"]

MAX_FILENAME_CHARS = 200
"""File systems allow 255 bytes; a longer name is cut, keeping its extension."""

_FALLBACK_NAME = "download"
# RFC 5987 attr-char: ALPHA / DIGIT / "!" / "#" / "$" / "&" / "+" / "-" / "." / "^" / "_" / "`" / "|" / "~"
_ATTR_SAFE = "!#$&+-.^_`|~"


def _base_name(name: str) -> str:
    """The last path component, without control characters, within the length limit."""
    name = name.replace("\\", "/")
    name = posixpath.basename(name.rstrip("/"))
    name = "".join(" " if unicodedata.category(ch) in {"Cc", "Cf", "Cs", "Zl", "Zp"} else ch for ch in name)
    name = name.strip(" .")
    if len(name) > MAX_FILENAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 16:
            name = stem[: MAX_FILENAME_CHARS - len(ext) - 1] + "." + ext
        else:
            name = name[:MAX_FILENAME_CHARS]
    return name or _FALLBACK_NAME


def _ascii_fallback(name: str) -> str:
    """Printable ASCII without the characters a quoted-string or a file system chokes on."""
    decomposed = unicodedata.normalize("NFKD", name)
    chars = []
    for ch in decomposed:
        if unicodedata.combining(ch):
            continue  # é → e
        if " " <= ch <= "~" and ch not in '"\\%;/:*?<>|':
            chars.append(ch)
        else:
            chars.append("_")
    fallback = "".join(chars).strip(" .")
    return fallback or _FALLBACK_NAME


def content_disposition(filename: str, *, disposition: Literal["attachment", "inline"] = "attachment") -> str:
    """The header value naming ``filename`` safely, for any string whatever its source."""
    name = _base_name(filename)
    fallback = _ascii_fallback(name)
    value = f'{disposition}; filename="{fallback}"'
    if fallback != name:
        encoded = quote(name.encode("utf-8", "surrogatepass").decode("utf-8", "replace"), safe=_ATTR_SAFE)
        value += f"; filename*=UTF-8''{encoded}"
    return value
