from __future__ import annotations

import pytest

from protocol import Direction, TopicError, UpKind, command_topic, parse_topic, server_subscription, up_topic


def test_up_topic_round_trips_through_parse() -> None:
    topic = up_topic("printer-7", UpKind.EVENT)
    assert topic == "fc/v1/d/printer-7/up/event"
    parsed = parse_topic(topic)
    assert (parsed.device_id, parsed.direction, parsed.kind) == ("printer-7", Direction.UP, "event")


def test_command_topic_is_the_down_branch() -> None:
    assert command_topic("x.y_z-1") == "fc/v1/d/x.y_z-1/down/cmd"
    assert parse_topic("fc/v1/d/x.y_z-1/down/cmd").direction is Direction.DOWN


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
