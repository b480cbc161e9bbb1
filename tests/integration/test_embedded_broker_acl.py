"""The fleet ACL as code (used by the amqtt variant): the same answers as the Mosquitto ACL."""

from __future__ import annotations

import pytest

from certs import SERVER_IDENTITY
from server.embedded_broker import FleetAcl, filter_covers, topic_matches

ACL = FleetAcl()
SHARED = FleetAcl(shared_subscriptions=True)


@pytest.mark.parametrize(
    ("topic", "pattern", "expected"),
    [
        ("fc/v1/d/a/up/event", "fc/v1/d/+/up/#", True),
        ("fc/v1/d/a/up", "fc/v1/d/a/up/#", True),  # '#' also matches the parent level
        ("fc/v1/d/a/down/cmd", "fc/v1/d/+/up/#", False),
        ("fc/v1/d/a/up/event", "fc/v1/d/a/up/event", True),
        ("fc/v1/d/a/up/event/x", "fc/v1/d/+/up/+", False),
        ("$SYS/x", "#", False),
    ],
)
def test_topic_matches(topic: str, pattern: str, expected: bool) -> None:
    assert topic_matches(topic, pattern) is expected


@pytest.mark.parametrize(
    ("pattern", "requested", "expected"),
    [
        ("fc/v1/d/a/down/#", "fc/v1/d/a/down/#", True),
        ("fc/v1/d/a/down/#", "fc/v1/d/a/down/cmd", True),
        ("fc/v1/d/a/down/#", "fc/v1/d/+/down/#", False),
        ("fc/v1/d/a/down/#", "#", False),
        ("fc/v1/d/+/up/#", "fc/v1/d/+/up/#", True),
        ("fc/v1/d/+/up/#", "fc/v1/d/x/up/telemetry", True),
        ("fc/v1/d/+/up/#", "fc/v1/d/#", False),
        ("fc/v1/d/+/up/+", "fc/v1/d/x/up/#", False),
    ],
)
def test_filter_covers(pattern: str, requested: str, expected: bool) -> None:
    assert filter_covers(pattern, requested) is expected


def test_device_may_write_its_uplink_and_read_its_commands_only() -> None:
    assert ACL.may_publish("dev-1", "fc/v1/d/dev-1/up/telemetry")
    assert not ACL.may_publish("dev-1", "fc/v1/d/dev-2/up/telemetry")
    assert not ACL.may_publish("dev-1", "fc/v1/d/dev-1/down/cmd")
    assert not ACL.may_publish("dev-1", "fc/v1/d/dev-1/up/+")
    assert ACL.may_subscribe("dev-1", "fc/v1/d/dev-1/down/#")
    assert not ACL.may_subscribe("dev-1", "fc/v1/d/dev-1/up/#")
    assert not ACL.may_subscribe("dev-1", "fc/v1/d/+/down/#")
    assert ACL.may_receive("dev-1", "fc/v1/d/dev-1/down/cmd")
    assert not ACL.may_receive("dev-1", "fc/v1/d/dev-2/down/cmd")


def test_server_reads_every_uplink_and_writes_every_downlink() -> None:
    assert ACL.may_subscribe(SERVER_IDENTITY, "fc/v1/d/+/up/#")
    assert ACL.may_receive(SERVER_IDENTITY, "fc/v1/d/dev-9/up/status")
    assert ACL.may_publish(SERVER_IDENTITY, "fc/v1/d/dev-9/down/cmd")
    assert not ACL.may_publish(SERVER_IDENTITY, "fc/v1/d/dev-9/up/status")
    assert not ACL.may_subscribe(SERVER_IDENTITY, "#")


def test_shared_subscriptions_only_where_supported() -> None:
    shared = "$share/fleetcare/fc/v1/d/+/up/#"
    assert not ACL.may_subscribe(SERVER_IDENTITY, shared)
    assert SHARED.may_subscribe(SERVER_IDENTITY, shared)
    assert not SHARED.may_subscribe("dev-1", shared)
    assert not SHARED.may_subscribe(SERVER_IDENTITY, "$share//fc/v1/d/+/up/#")


@pytest.mark.parametrize("identity", ["a/b", "+", "#", "", ".."])
def test_identity_unfit_for_a_topic_gets_nothing(identity: str) -> None:
    assert not ACL.may_publish(identity, f"fc/v1/d/{identity}/up/event")
    assert not ACL.may_subscribe(identity, "fc/v1/d/+/down/#")
