"""The owner's local policy: decisions, precedence, patterns vs disruptive actions, windows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from agent.config import MaintenanceWindow, PolicySettings, settings_from_mapping
from agent.errors import AgentConfigError
from agent.plugin import ActionContext, ActionResult, ActionSpec
from agent.policy import ActionPolicy
from protocol import CANCEL_ACTION, CONSENT_ACTION, PolicyDecision

ALLOWED, CONSENT, FORBIDDEN = PolicyDecision.ALLOWED, PolicyDecision.NEEDS_CONSENT, PolicyDecision.FORBIDDEN


async def _noop(args: Any, ctx: ActionContext) -> ActionResult:
    return ActionResult(ok=True)


def spec(name: str, *, disruptive: bool = False) -> ActionSpec:
    return ActionSpec(name, _noop, disruptive=disruptive)


@pytest.mark.parametrize(
    ("allowed", "consent", "forbidden", "action", "disruptive", "expected"),
    [
        (["ping"], [], [], "ping", False, ALLOWED),
        ([], [], [], "ping", False, FORBIDDEN),  # not listed
        (["printer.*"], [], [], "printer.status", False, ALLOWED),
        (["printer.*"], [], [], "printer.reboot", True, FORBIDDEN),  # a pattern never enables it
        (["printer.reboot"], [], [], "printer.reboot", True, ALLOWED),
        ([], ["printer.*"], [], "printer.reboot", True, FORBIDDEN),  # not in the consent list either
        ([], ["printer.reboot"], [], "printer.reboot", True, CONSENT),
        (["printer.*"], ["printer.status"], [], "printer.status", False, CONSENT),  # consent > allowed
        (["printer.status"], ["printer.*"], [], "printer.status", False, CONSENT),
        (["printer.status"], ["printer.status"], ["printer.*"], "printer.status", False, FORBIDDEN),
        (["printer.reboot"], [], ["printer.*"], "printer.reboot", True, FORBIDDEN),  # forbid patterns match
        (["*"], [], [], "file.fetch", False, ALLOWED),
    ],
)
def test_policy_precedence(
    allowed: list[str],
    consent: list[str],
    forbidden: list[str],
    action: str,
    disruptive: bool,
    expected: PolicyDecision,
) -> None:
    policy = ActionPolicy(allowed, consent=consent, forbidden=forbidden)
    assert policy.decide(spec(action, disruptive=disruptive)) is expected


def test_control_actions_are_always_allowed_and_never_need_consent() -> None:
    policy = ActionPolicy([], forbidden=["*"], attended=True)
    for name in (CONSENT_ACTION, CANCEL_ACTION):
        assert policy.decide(spec(name)) is ALLOWED
        assert not policy.needs_consent(spec(name), session_all_commands=True)
        assert policy.allows_name(name)


def test_attended_and_all_commands_sessions_need_consent_for_allowed_actions() -> None:
    assert not ActionPolicy(["ping"]).needs_consent(spec("ping"))
    assert ActionPolicy(["ping"], attended=True).needs_consent(spec("ping"))
    assert ActionPolicy(["ping"]).needs_consent(spec("ping"), session_all_commands=True)
    assert ActionPolicy([], consent=["ping"]).needs_consent(spec("ping"))


def test_default_policy_allows_read_only_diagnostics_and_asks_consent_for_file_fetch() -> None:
    policy = ActionPolicy.from_settings(PolicySettings())
    assert policy.decide(spec("network.check")) is ALLOWED
    assert policy.decide(spec("selftest")) is ALLOWED
    assert policy.decide(spec("file.fetch")) is CONSENT
    assert policy.decide(spec("service.restart", disruptive=True)) is FORBIDDEN
    assert policy.decide(spec("config.set", disruptive=True)) is FORBIDDEN


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_window_crossing_midnight_belongs_to_the_day_it_starts() -> None:
    window = MaintenanceWindow(days=["mon"], start="22:00", end="06:00", tz="UTC")
    assert not window.contains(_at("2026-06-01T21:59:59+00:00"))  # Monday 21:59
    assert window.contains(_at("2026-06-01T22:00:00+00:00"))  # Monday 22:00
    assert window.contains(_at("2026-06-02T05:59:00+00:00"))  # Tuesday early: Monday's window
    assert not window.contains(_at("2026-06-02T06:00:00+00:00"))
    assert not window.contains(_at("2026-06-02T22:30:00+00:00"))  # Tuesday night: not listed
    assert not window.contains(_at("2026-06-01T03:00:00+00:00"))  # Monday early: Sunday's window


def test_window_uses_its_time_zone_including_daylight_saving() -> None:
    window = MaintenanceWindow(
        days=["mon", "tue", "wed", "thu", "fri"], start="08:00", end="09:00", tz="Europe/Berlin"
    )
    assert window.contains(_at("2026-06-01T06:30:00+00:00"))  # summer: UTC+2 → 08:30
    assert not window.contains(_at("2026-06-01T07:30:00+00:00"))  # 09:30 in Berlin
    assert window.contains(_at("2026-01-05T07:30:00+00:00"))  # winter: UTC+1 → 08:30 (a Monday)
    assert window.label() == "mon-fri 08:00-09:00 Europe/Berlin"


def test_windows_bound_only_disruptive_actions() -> None:
    window = MaintenanceWindow(days=["sun"], start="01:00", end="02:00")
    policy = ActionPolicy(["ping", "printer.reboot"], windows=[window])
    monday = _at("2026-06-01T12:00:00+00:00")
    assert policy.in_window(spec("ping"), monday)
    assert not policy.in_window(spec("printer.reboot", disruptive=True), monday)
    assert policy.in_window(spec("printer.reboot", disruptive=True), _at("2026-06-07T01:30:00+00:00"))
    assert policy.windows_for(spec("ping")) == []
    assert ActionPolicy(["printer.reboot"]).in_window(spec("printer.reboot", disruptive=True), monday)


def test_whole_day_window_when_start_equals_end() -> None:
    window = MaintenanceWindow(days=["sat"], start="00:00", end="00:00", tz="UTC")
    assert window.contains(datetime(2026, 6, 6, 0, 0, tzinfo=UTC))
    assert window.contains(datetime(2026, 6, 6, 23, 59, tzinfo=UTC))
    assert not window.contains(datetime(2026, 6, 7, 0, 0, tzinfo=UTC))


@pytest.mark.parametrize(
    ("policy", "field", "message"),
    [
        ({"windows": [{"start": "25:00", "end": "06:00"}]}, "policy.windows.0.start", "HH:MM"),
        (
            {"windows": [{"start": "22:00", "end": "06:00", "tz": "Mars/Olympus"}]},
            "policy.windows.0.tz",
            "IANA",
        ),
        (
            {"windows": [{"days": ["funday"], "start": "22:00", "end": "06:00"}]},
            "policy.windows.0.days.0",
            "",
        ),
        ({"network_hosts": ["example.com"]}, "policy.network_hosts", "host:port"),
        ({"services": ["-rf"]}, "policy.services", "service unit"),
        ({"config_keys": ["volume"]}, "policy", "config_file"),
    ],
)
def test_policy_settings_errors_name_the_field(
    tmp_path: Any, server_key_file: Any, policy: dict[str, Any], field: str, message: str
) -> None:
    data = {
        "device_id": "dev-1",
        "broker": {"host": "localhost", "allow_plaintext": True},
        "server_key_file": server_key_file,
        "data_dir": tmp_path,
        "policy": policy,
    }
    with pytest.raises(AgentConfigError) as caught:
        settings_from_mapping(data)
    fields = [f for f, _ in caught.value.errors]
    assert field in fields
    assert message in " ".join(m for _, m in caught.value.errors)
