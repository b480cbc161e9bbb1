from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import (
    MAX_PAYLOAD_BYTES,
    DecodeError,
    DeviceMismatch,
    Event,
    NotJson,
    PayloadTooLarge,
    Sample,
    SchemaError,
    Telemetry,
    TopicError,
    UnsupportedVersion,
    UpKind,
    decode,
    decode_command,
    decode_uplink,
    encode,
)
from tests.protocol import vectors

T0 = vectors.T0


def _telemetry_dict(**override: object) -> dict[str, object]:
    base = json.loads((vectors.VECTORS_DIR / "telemetry.json").read_text())
    base.update(override)
    return base


def test_every_message_kind_round_trips() -> None:
    for name, message in vectors.messages().items():
        assert decode(UpKind(name), encode(message)) == message


def test_non_utc_timestamps_are_normalised_to_utc() -> None:
    cet = timezone(timedelta(hours=1))
    message = Event(device_id="d", seq=1, ts=datetime(2026, 1, 1, 1, 0, tzinfo=cet), event="agent.started")
    assert json.loads(encode(message))["ts"] == "2026-01-01T00:00:00.000000Z"


def test_oversize_payload_is_rejected_before_parsing() -> None:
    with pytest.raises(PayloadTooLarge) as info:
        decode(UpKind.EVENT, b" " * (MAX_PAYLOAD_BYTES + 1))
    assert info.value.limit == MAX_PAYLOAD_BYTES
    assert info.value.reason == "too_large"


@pytest.mark.parametrize(
    ("payload", "problem"),
    [(b"{not json", "Expecting property name"), (b"\xff\xfe", "not UTF-8"), (b"[1,2]", "top level is list")],
)
def test_non_json_payload_names_the_problem(payload: bytes, problem: str) -> None:
    with pytest.raises(NotJson, match=problem):
        decode(UpKind.EVENT, payload)


def test_deeply_nested_payload_is_rejected_not_crashing() -> None:
    with pytest.raises(NotJson):
        decode(UpKind.EVENT, b"[" * 100_000 + b"]" * 100_000)


@pytest.mark.parametrize("version", [None, 0, 2, "1", True])
def test_wrong_version_is_rejected(version: object) -> None:
    payload = json.dumps(_telemetry_dict(v=version)).encode()
    with pytest.raises(UnsupportedVersion) as info:
        decode(UpKind.TELEMETRY, payload)
    assert info.value.got == version


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"seq": -1}, "seq"),
        ({"samples": []}, "samples"),
        ({"samples": [{"metric": "Bad Name", "value": 1, "ts": "2026-01-01T00:00:00Z"}]}, "samples.0.metric"),
        ({"samples": [{"metric": "a.b", "value": "x", "ts": "2026-01-01T00:00:00Z"}]}, "samples.0.value"),
        ({"ts": "2026-01-01T00:00:00"}, "ts"),  # naive timestamps are ambiguous
        ({"surprise": 1}, "surprise"),
        ({"device_id": "a/b"}, "device_id"),
    ],
)
def test_schema_errors_name_the_field(override: dict[str, object], field: str) -> None:
    with pytest.raises(SchemaError) as info:
        decode(UpKind.TELEMETRY, json.dumps(_telemetry_dict(**override)).encode())
    assert info.value.field == field
    assert field in str(info.value)


def test_nan_values_are_refused() -> None:
    payload = encode(vectors.messages()["telemetry"]).replace(b"12.5", b"NaN")
    with pytest.raises(SchemaError, match=r"samples\.0\.value"):
        decode(UpKind.TELEMETRY, payload)


def test_uplink_binds_payload_device_to_topic_device() -> None:
    payload = encode(vectors.messages()["event"])
    with pytest.raises(DeviceMismatch) as info:
        decode_uplink("fc/v1/d/other-device/up/event", payload)
    assert (info.value.topic_device, info.value.payload_device) == ("other-device", "printer-0001")


def test_uplink_rejects_a_message_of_another_kind_on_a_topic() -> None:
    payload = encode(vectors.messages()["event"])
    with pytest.raises(SchemaError, match="kind"):
        decode_uplink("fc/v1/d/printer-0001/up/telemetry", payload)


def test_uplink_rejects_bad_topics() -> None:
    with pytest.raises(TopicError):
        decode_uplink("fc/v1/d/printer-0001/up/nope", b"{}")


def test_command_with_unknown_field_is_rejected() -> None:
    stored = json.loads((vectors.VECTORS_DIR / "command.json").read_text())["command"]
    stored["shell"] = "rm -rf /"
    with pytest.raises(SchemaError, match="shell"):
        decode_command(json.dumps(stored).encode())


metric_names = st.from_regex(r"[a-z0-9_]{1,8}(\.[a-z0-9_-]{1,8}){0,3}", fullmatch=True)
finite = st.floats(allow_nan=False, allow_infinity=False)
times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))


@given(
    seq=st.integers(min_value=0, max_value=2**53),
    samples=st.lists(st.tuples(metric_names, finite, times), min_size=1, max_size=20),
)
def test_telemetry_round_trip_property(seq: int, samples: list[tuple[str, float, datetime]]) -> None:
    message = Telemetry(
        device_id="dev-1",
        seq=seq,
        ts=T0,
        samples=[Sample(metric=m, value=v, ts=t) for m, v, t in samples],
    )
    assert decode(UpKind.TELEMETRY, encode(message)) == message


@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_crash_the_decoder(payload: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode(UpKind.EVENT, payload)
