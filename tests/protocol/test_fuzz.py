"""Fuzzing the codec and the command verifier (issue 13): whatever comes in, the only exceptions
are the protocol's own — ``DecodeError`` / ``TopicError`` from decoding, ``CommandRejected``
from verification. Anything else (OverflowError, ValueError, RecursionError, …) is a crash that
would stop whoever called it, e.g. the server's ingest.

Inputs: arbitrary bytes; arbitrary JSON documents; the golden vectors with fields replaced,
added or removed (so most inputs get past the JSON and version checks into the schema); the
vectors' bytes mutated. Bounded (a few hundred examples each, no per-example deadline on this
shared machine) so the file runs in seconds.

What it found on the old codec, now fixed (protocol/messages.py, protocol/codec.py): a
timestamp whose UTC conversion overflows (``0001-01-01T00:00:00+01:00``) raised OverflowError;
an integer literal of more than 4300 digits raised ValueError from the JSON parser. (Values the
codec accepted but a database could not store — ``10**400``, ``NaN`` or lone surrogates inside
``data`` — are no crash here; test_bounds.py covers them.)
"""

from __future__ import annotations

import contextlib
import json
import re
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import (
    CommandRejected,
    CommandVerifier,
    DecodeError,
    MemoryReplayCache,
    TopicError,
    UpKind,
    decode_command,
    decode_uplink,
    load_public_key,
    up_topic,
)
from tests.protocol import vectors

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

COMMAND_VECTOR: dict[str, Any] = json.loads((vectors.VECTORS_DIR / "command.json").read_text())
VERIFIER = CommandVerifier(load_public_key(COMMAND_VECTOR["public_key_pem"].encode()), "printer-0001")
UP_VECTORS: dict[UpKind, dict[str, Any]] = {
    kind: json.loads((vectors.VECTORS_DIR / f"{kind.value}.json").read_text()) for kind in UpKind
}
DEVICE = "printer-0001"

# every character, lone surrogates included (json.dumps writes them as \ud800 escapes)
any_text = st.text(st.characters(exclude_categories=()), max_size=40)
# values at the edges, drawn often: a uniform draw would almost never hit them
edges = st.sampled_from(
    [
        2**63 - 1,
        2**63,
        -(2**63),
        -(2**63) - 1,
        2**31,
        10**400,
        float("nan"),
        float("inf"),
        1e308,
        -0.0,
        "2026-01-02T03:04:05Z",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "2026-13-45T99:99:99Z",
        "\ud800",
        "\x00",
        "",
    ]
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # unbounded
    st.floats(),  # NaN and infinities too: json.dumps writes them as NaN / Infinity literals
    any_text,
    edges,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=20,
)


def _dumps(obj: object) -> bytes:
    # surrogates cannot be encoded as UTF-8 raw: ensure_ascii writes them as escapes, as an attacker would
    return json.dumps(obj, ensure_ascii=True).encode()


def _decode_uplink(topic: str, payload: bytes) -> None:
    with contextlib.suppress(DecodeError, TopicError):
        decode_uplink(topic, payload)


def _decode_and_verify(payload: bytes) -> None:
    try:
        command = decode_command(payload)
    except DecodeError:
        return
    try:
        VERIFIER.verify(command, now=command.issued_at)
        VERIFIER.verify(command)  # the real clock as well: a command far in the past or future
        VERIFIER.check_replay(command, MemoryReplayCache())
    except CommandRejected:
        pass


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    """``base`` with a few fields replaced, added or removed (nested objects too)."""
    body = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(1, 3))):
        target = body
        nested = [k for k, v in body.items() if isinstance(v, dict)]
        if nested and draw(st.booleans()):
            target = body[draw(st.sampled_from(nested))]
        keys = list(target)
        action = draw(st.sampled_from(["replace", "add", "remove"]))
        if action == "replace" and keys:
            target[draw(st.sampled_from(keys))] = draw(edges | json_values)
        elif action == "remove" and keys:
            del target[draw(st.sampled_from(keys))]
        else:
            target[draw(any_text)] = draw(json_values)
    return body


@st.composite
def byte_mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with bytes flipped, inserted or cut off."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(buf)))
        action = draw(st.sampled_from(["flip", "insert", "truncate"]))
        if action == "flip" and position < len(buf):
            buf[position] ^= draw(st.integers(1, 255))
        elif action == "insert":
            buf[position:position] = draw(st.binary(min_size=1, max_size=8))
        else:
            del buf[position:]
    return bytes(buf)


NUMBER = re.compile(rb"(?<=[:\[,])-?\d+(\.\d+)?(?=[,}\]])")
LITERALS = [
    b"9" * 5000,
    b"-" + b"9" * 5000,
    b"1e400",
    b"-1e400",
    b"NaN",
    b"Infinity",
    b"1" + b"0" * 30,
    b"-0",
]


@st.composite
def number_mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with one number literal replaced by one Python's JSON parser treats specially
    (too many digits, overflowing to infinity, the NaN/Infinity extensions)."""
    spans = [m.span() for m in NUMBER.finditer(data)]
    start, end = draw(st.sampled_from(spans))
    return data[:start] + draw(st.sampled_from(LITERALS)) + data[end:]


topics = st.one_of(
    st.sampled_from([up_topic(DEVICE, kind) for kind in UpKind]),
    st.sampled_from(["fc/v1/d/printer-0001/down/cmd", "fc/v1/d//up/event", "fc/v1/d/a/up/event/x", ""]),
    any_text,
)


@FUZZ
@given(topic=topics, payload=st.binary(max_size=512))
def test_arbitrary_bytes_on_any_topic_raise_only_codec_errors(topic: str, payload: bytes) -> None:
    _decode_uplink(topic, payload)


@FUZZ
@given(payload=st.binary(max_size=512))
def test_arbitrary_bytes_as_a_command_raise_only_codec_and_verifier_errors(payload: bytes) -> None:
    _decode_and_verify(payload)


@FUZZ
@given(topic=topics, document=json_values)
def test_arbitrary_json_raises_only_codec_errors(topic: str, document: object) -> None:
    _decode_uplink(topic, _dumps(document))
    _decode_and_verify(_dumps(document))


@FUZZ
@given(data=st.data(), kind=st.sampled_from(list(UpKind)))
def test_mutated_message_vectors_raise_only_codec_errors(data: st.DataObject, kind: UpKind) -> None:
    body = data.draw(mutated(UP_VECTORS[kind]))
    _decode_uplink(up_topic(DEVICE, kind), _dumps(body))


@FUZZ
@given(body=mutated(COMMAND_VECTOR["command"]))
def test_mutated_command_vector_raises_only_codec_and_verifier_errors(body: dict[str, Any]) -> None:
    _decode_and_verify(_dumps(body))


@FUZZ
@given(data=st.data(), kind=st.sampled_from(list(UpKind)))
def test_byte_mutated_vectors_raise_only_codec_errors(data: st.DataObject, kind: UpKind) -> None:
    stored = (vectors.VECTORS_DIR / f"{kind.value}.json").read_bytes()
    _decode_uplink(up_topic(DEVICE, kind), data.draw(byte_mutated(stored)))
    command = json.dumps(COMMAND_VECTOR["command"]).encode()
    _decode_and_verify(data.draw(byte_mutated(command)))


@FUZZ
@given(data=st.data(), kind=st.sampled_from(list(UpKind)))
def test_number_mutated_vectors_raise_only_codec_errors(data: st.DataObject, kind: UpKind) -> None:
    stored = (vectors.VECTORS_DIR / f"{kind.value}.json").read_bytes()
    _decode_uplink(up_topic(DEVICE, kind), data.draw(number_mutated(stored)))
    command = json.dumps(COMMAND_VECTOR["command"], separators=(",", ":")).encode()
    _decode_and_verify(data.draw(number_mutated(command)))


@FUZZ
@given(
    lifetime=st.integers(min_value=-(10**6), max_value=10**9),
    skew=st.integers(min_value=-(10**9), max_value=10**9),
)
def test_command_times_anywhere_raise_only_verifier_errors(lifetime: int, skew: int) -> None:
    """Validity windows at the edges of the datetime range (a clock check must not overflow)."""
    body = dict(COMMAND_VECTOR["command"])
    command = decode_command(_dumps(body))
    try:
        shifted = command.model_copy(
            update={
                "issued_at": command.issued_at + timedelta(seconds=skew),
                "expires_at": command.issued_at + timedelta(seconds=skew + lifetime),
            }
        )
    except OverflowError:
        return  # not a representable command at all
    with contextlib.suppress(CommandRejected):
        VERIFIER.verify(shifted)
