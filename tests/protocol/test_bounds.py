"""Every number and every free-form value in the protocol has bounds in the schema (issue 13).

Before, ``seq = 2**63`` passed the schema and stopped the server's ingest in the database
driver; a ``data`` value of ``10**400``, ``NaN`` or a lone surrogate passed too and broke
whatever stored or signed it. Each rejection is a :class:`protocol.SchemaError` (or
:class:`protocol.NotJson` where the JSON parser itself gives up) naming the field and the problem.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from protocol import (
    Event,
    NotJson,
    SchemaError,
    SystemInfo,
    UpKind,
    decode,
    decode_command,
    encode,
)
from protocol.messages import MAX_INT, MAX_JSON_DEPTH
from tests.protocol import vectors

T0 = vectors.T0


def _vector(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((vectors.VECTORS_DIR / f"{name}.json").read_text())
    return body


def _decode(kind: UpKind, body: dict[str, Any]) -> object:
    return decode(kind, json.dumps(body).encode())


def _schema_error(kind: UpKind, body: dict[str, Any]) -> SchemaError:
    with pytest.raises(SchemaError) as info:
        _decode(kind, body)
    return info.value


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


# -- integers of the message fields --------------------------------------------------------------


@pytest.mark.parametrize("kind", list(UpKind), ids=str)
def test_seq_at_the_64_bit_limit_is_accepted_and_one_above_is_refused(kind: UpKind) -> None:
    body = _vector(kind.value)
    body["seq"] = MAX_INT
    assert _decode(kind, body).seq == 2**63 - 1  # type: ignore[attr-defined]
    body["seq"] = MAX_INT + 1
    error = _schema_error(kind, body)
    assert error.field == "seq"
    assert "less than or equal to" in str(error)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cpu_count", -1),
        ("cpu_count", 2**31),
        ("memory_total", -1),
        ("memory_total", 2**63),
        ("disk_total", 2**63),
        ("disk_total", 10**400),
    ],
)
def test_inventory_system_integers_are_bounded(field: str, value: int) -> None:
    body = _vector("inventory")
    body["system"][field] = value
    assert _schema_error(UpKind.INVENTORY, body).field == f"system.{field}"


def test_inventory_system_integers_accept_their_largest_values() -> None:
    info = SystemInfo(cpu_count=2**31 - 1, memory_total=MAX_INT, disk_total=MAX_INT)
    assert (info.cpu_count, info.memory_total, info.disk_total) == (2**31 - 1, MAX_INT, MAX_INT)


@pytest.mark.parametrize("chunk", [-1, 2**31, 2**63])
def test_reply_chunk_is_bounded(chunk: int) -> None:
    body = _vector("reply")
    body.update(type="output", chunk=chunk)
    assert _schema_error(UpKind.REPLY, body).field == "chunk"


@pytest.mark.parametrize(("field", "value"), [("progress", "NaN"), ("progress", 1.5)])
def test_reply_progress_is_a_finite_fraction(field: str, value: object) -> None:
    body = _vector("reply")
    body.update(type="progress")
    payload = json.dumps(body)[:-1] + f', "{field}": {value}}}'
    with pytest.raises(SchemaError) as info:
        decode(UpKind.REPLY, payload.encode())
    assert info.value.field == field


@pytest.mark.parametrize("timeout", ["Infinity", "NaN", "1e400"])
def test_action_timeout_must_be_finite(timeout: str) -> None:
    text = encode(vectors.messages()["inventory"]).decode().replace('"timeout":5.0', f'"timeout":{timeout}')
    assert timeout in text
    with pytest.raises(SchemaError) as info:
        decode(UpKind.INVENTORY, text.encode())
    assert info.value.field == "agent.catalogue.0.timeout"


# -- timestamps ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ts", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_timestamp_outside_the_representable_utc_range_is_a_schema_error(ts: str) -> None:
    """Normalising to UTC overflowed (``OverflowError``) instead of failing validation."""
    body = _vector("status")
    body["ts"] = ts
    error = _schema_error(UpKind.STATUS, body)
    assert error.field == "ts"
    assert "out of range" in str(error)


# -- strings ------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["detail", "code"])
def test_lone_surrogate_in_text_is_refused(field: str) -> None:
    """A ``\\ud800`` escape decodes to a str that cannot be encoded as UTF-8 (the database
    driver and the command signer would raise UnicodeEncodeError); pydantic refuses it in str
    fields, the JSON object check below does the same inside ``data``."""
    text = json.dumps(_vector("event") | {field: "x\ud800y"})
    assert "\\ud800" in text
    with pytest.raises(SchemaError) as info:
        decode(UpKind.EVENT, text.encode())
    assert info.value.field == field
    assert "unicode" in str(info.value)


def test_escaped_surrogate_pair_is_an_ordinary_character() -> None:
    text = json.dumps(_vector("event") | {"detail": "jam \U0001f5a8"})  # json escapes it as a pair
    assert "\\ud83d" in text
    assert decode(UpKind.EVENT, text.encode()).detail == "jam \U0001f5a8"  # type: ignore[union-attr]


def test_command_signature_must_be_base64url() -> None:
    stored = json.loads((vectors.VECTORS_DIR / "command.json").read_text())["command"]
    stored["sig"] = "ü" * 10
    with pytest.raises(SchemaError) as info:
        decode_command(json.dumps(stored).encode())
    assert info.value.field == "sig"


# -- JSON objects (data, config, args, args_schema) ----------------------------------------------


@pytest.mark.parametrize(
    ("value", "path", "problem"),
    [
        ({"x": 10**400}, "x", "64-bit"),
        ({"x": [1, -(2**63) - 1]}, "x.1", "64-bit"),
        ({"x": {"y": float("nan")}}, "x.y", "finite"),
        ({"x": float("inf")}, "x", "finite"),
        ({"x": "a\udfffb"}, "x", "surrogate"),
        ({"k\ud800": 1}, "k\\ud800", "surrogate"),
    ],
)
def test_event_data_values_are_bounded_and_named(value: dict[str, Any], path: str, problem: str) -> None:
    text = json.dumps(_vector("event") | {"data": value})  # json.dumps writes NaN/Infinity literals
    with pytest.raises(SchemaError) as info:
        decode(UpKind.EVENT, text.encode())
    assert info.value.field == "data"
    assert path in str(info.value)
    assert problem in str(info.value)


def test_int_limit_inside_data_is_inclusive() -> None:
    body = _vector("event") | {"data": {"max": MAX_INT, "min": -MAX_INT - 1}}
    assert _decode(UpKind.EVENT, body).data == {"max": MAX_INT, "min": -(2**63)}  # type: ignore[attr-defined]


def test_nesting_deeper_than_the_limit_is_refused() -> None:
    accepted = Event(device_id="d", seq=1, ts=T0, event="fault.raised", data=_nested(MAX_JSON_DEPTH))
    assert decode(UpKind.EVENT, encode(accepted)) == accepted
    text = json.dumps(_vector("event") | {"data": _nested(MAX_JSON_DEPTH + 1)})
    with pytest.raises(SchemaError) as info:
        decode(UpKind.EVENT, text.encode())
    assert info.value.field == "data"
    assert f"deeper than {MAX_JSON_DEPTH}" in str(info.value)


def test_integer_too_long_for_the_json_parser_is_not_json() -> None:
    """Python's parser refuses integers above 4300 digits with a ValueError that escaped the codec."""
    text = json.dumps(_vector("event"))[:-1] + ', "data": {"x": ' + "9" * 5000 + "}}"
    with pytest.raises(NotJson, match="digits"):
        decode(UpKind.EVENT, text.encode())


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("event", ["data"]),
        ("reply", ["data"]),
        ("inventory", ["config"]),
        ("inventory", ["agent", "catalogue", 1, "args_schema"]),
    ],
)
def test_every_json_object_field_is_checked(name: str, path: list[str | int]) -> None:
    body = _vector(name)
    parent: Any = body
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = {"x": 2**64}
    error = _schema_error(UpKind(name), body)
    assert error.field == ".".join(str(p) for p in path)
    assert "64-bit" in str(error)


def test_command_args_are_checked_when_decoded() -> None:
    stored = json.loads((vectors.VECTORS_DIR / "command.json").read_text())["command"]
    stored["args"] = {"tray": 2**64}
    with pytest.raises(SchemaError) as info:
        decode_command(json.dumps(stored).encode())
    assert info.value.field == "args"
