"""Bytes ⇄ messages, with the checks that keep bad input from reaching the application.

Order of checks, cheapest first: size, JSON, version, schema, topic/payload device binding.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from protocol.errors import DeviceMismatch, NotJson, PayloadTooLarge, SchemaError, UnsupportedVersion
from protocol.messages import PROTOCOL_VERSION, Command, Receipt, UpMessage, model_for
from protocol.topics import Direction, UpKind, parse_topic

__all__ = ["MAX_PAYLOAD_BYTES", "decode", "decode_command", "decode_receipt", "decode_uplink", "encode"]

MAX_PAYLOAD_BYTES = 256 * 1024

M = TypeVar("M", bound=BaseModel)


def encode(message: BaseModel) -> bytes:
    return message.model_dump_json(exclude_defaults=False).encode()


def _load(payload: bytes, limit: int) -> dict[str, Any]:
    if len(payload) > limit:
        raise PayloadTooLarge(len(payload), limit)
    try:
        text = payload.decode("utf-8")  # explicit: json.loads(bytes) would also guess UTF-16/32
    except UnicodeDecodeError as exc:
        raise NotJson(f"not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotJson(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except RecursionError as exc:
        raise NotJson("nested too deeply") from exc
    except ValueError as exc:  # an integer literal above 4300 digits (sys.get_int_max_str_digits)
        raise NotJson(str(exc).split(";")[0]) from exc
    if not isinstance(obj, dict):
        raise NotJson(f"top level is {type(obj).__name__}, expected an object")
    version = obj.get("v")
    if version != PROTOCOL_VERSION or isinstance(version, bool):
        raise UnsupportedVersion(version, PROTOCOL_VERSION)
    return obj


def _validate(model: type[M], obj: dict[str, Any], kind: str) -> M:
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        errors = [
            (".".join(str(part) for part in err["loc"]), err["msg"]) for err in exc.errors(include_url=False)
        ]
        raise SchemaError(kind, errors) from exc


def decode(kind: UpKind, payload: bytes, *, limit: int = MAX_PAYLOAD_BYTES) -> UpMessage:
    obj = _load(payload, limit)
    obj.setdefault("kind", kind.value)
    # model_for maps each kind to a member of UpMessage
    return _validate(model_for(kind), obj, kind.value)  # type: ignore[return-value]


def decode_uplink(topic: str, payload: bytes, *, limit: int = MAX_PAYLOAD_BYTES) -> UpMessage:
    """Decode a device→server message and bind it to the topic the broker authenticated."""
    parsed = parse_topic(topic)
    if parsed.direction is not Direction.UP:
        raise SchemaError("uplink", [("topic", f"{topic!r} is not an up topic")])
    message = decode(UpKind(parsed.kind), payload, limit=limit)
    if message.device_id != parsed.device_id:
        raise DeviceMismatch(parsed.device_id, message.device_id)
    return message


def decode_command(payload: bytes, *, limit: int = MAX_PAYLOAD_BYTES) -> Command:
    return _validate(Command, _load(payload, limit), "cmd")


def decode_receipt(payload: bytes, *, limit: int = MAX_PAYLOAD_BYTES) -> Receipt:
    return _validate(Receipt, _load(payload, limit), "receipt")
