from __future__ import annotations

import pytest

from protocol import (
    Direction,
    DownKind,
    Receipt,
    SchemaError,
    TopicError,
    UpKind,
    command_topic,
    decode_receipt,
    parse_topic,
    receipt_topic,
    seq_ranges,
    server_subscription,
    up_topic,
)


def test_up_topic_round_trips_through_parse() -> None:
    topic = up_topic("printer-7", UpKind.EVENT)
    assert topic == "fc/v1/d/printer-7/up/event"
    parsed = parse_topic(topic)
    assert (parsed.device_id, parsed.direction, parsed.kind) == ("printer-7", Direction.UP, "event")


def test_command_topic_is_the_down_branch() -> None:
    assert command_topic("x.y_z-1") == "fc/v1/d/x.y_z-1/down/cmd"
    assert parse_topic("fc/v1/d/x.y_z-1/down/cmd").direction is Direction.DOWN


def test_receipt_topic_is_a_down_branch_too() -> None:
    """The ACLs give a device ``down/#`` to read and the server ``+/down/#`` to write: a new down
    kind needs no ACL change."""
    assert receipt_topic("x.y_z-1") == "fc/v1/d/x.y_z-1/down/receipt"
    parsed = parse_topic("fc/v1/d/x.y_z-1/down/receipt")
    assert (parsed.direction, parsed.kind) == (Direction.DOWN, DownKind.RECEIPT)


def test_seq_ranges_compacts_any_order_and_repeats() -> None:
    assert seq_ranges([]) == []
    assert seq_ranges([7, 3, 4, 5, 5, 9, 8, 0]) == [(0, 0), (3, 5), (7, 9)]
    assert Receipt(device_id="d", ranges=seq_ranges(range(10, 20))).seqs() == 10


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b'{"v":1,"device_id":"d","ranges":[]}', "ranges: List should have at least 1 item"),
        (b'{"v":1,"device_id":"d","ranges":[[5,4]]}', "first seq 5 is above last seq 4"),
        (
            b'{"v":1,"device_id":"d","ranges":[[-1,4]]}',
            "ranges.0.0: Input should be greater than or equal to 0",
        ),
        (b'{"v":1,"device_id":"d","ranges":[[1,9223372036854775808]]}', "ranges.0.1: Input should be less"),
        (b'{"v":1,"device_id":"d","ranges":[[1,2,3]]}', "ranges.0"),
        (b'{"v":1,"device_id":"d","ranges":[[1,2]],"extra":1}', "extra: Extra inputs"),
    ],
)
def test_a_bad_receipt_names_the_field(payload: bytes, problem: str) -> None:
    with pytest.raises(SchemaError, match=problem.replace("[", r"\[")):
        decode_receipt(payload)


def test_a_receipt_has_at_most_1024_ranges() -> None:
    ranges = ",".join(f"[{2 * n},{2 * n}]" for n in range(1025))
    with pytest.raises(SchemaError, match="ranges: List should have at most 1024 items"):
        decode_receipt(f'{{"v":1,"device_id":"d","ranges":[{ranges}]}}'.encode())


@pytest.mark.parametrize("device_id", ["", "a/b", "a+b", "a#", "with space", "x" * 65, "..", "é"])
def test_device_ids_that_would_break_topics_or_acls_are_refused(device_id: str) -> None:
    with pytest.raises(ValueError, match="device id"):
        up_topic(device_id, UpKind.STATUS)


@pytest.mark.parametrize(
    ("topic", "problem"),
    [
        ("fc/v1/d/dev/up", "expected"),
        ("fc/v2/d/dev/up/event", "expected"),
        ("fc/v1/d/dev/up/bogus", "unknown up kind"),
        ("fc/v1/d/dev/down/reply", "unknown direction"),
        ("fc/v1/d/de+v/up/event", "device id"),
        ("fc/v1/d/dev/up/event/extra", "expected"),
    ],
)
def test_parse_topic_names_the_problem(topic: str, problem: str) -> None:
    with pytest.raises(TopicError, match=problem) as info:
        parse_topic(topic)
    assert info.value.topic == topic


def test_server_subscription_uses_a_shared_group_unless_disabled() -> None:
    assert server_subscription() == "$share/fleetcare/fc/v1/d/+/up/#"
    assert server_subscription(None) == "fc/v1/d/+/up/#"
