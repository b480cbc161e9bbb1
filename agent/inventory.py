"""The inventory the agent sends at start: the installation's system profile, the equipment, the
agent with every action a technician may name and what the owner's policy says about it, the
configuration that matters to support, and the faults the plugins can report."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from agent.actions import ActionRegistry
from agent.collectors import system_info
from agent.config import AgentSettings
from agent.errors import PluginError
from agent.plugin import EquipmentPlugin, fault_catalogue
from agent.policy import ActionPolicy
from agent.uplink import Uplink
from fleetcare import __version__
from protocol import CONTROL_ACTIONS, ActionInfo, AgentInfo, EquipmentInfo

__all__ = ["action_catalogue", "fault_catalogues", "send_inventory"]

logger = logging.getLogger(__name__)


def action_catalogue(registry: ActionRegistry, policy: ActionPolicy) -> list[ActionInfo]:
    """One entry per action a technician may name (control actions aside), with what the
    owner's policy says about it."""
    entries = []
    for registered in sorted(registry, key=lambda r: r.name):
        spec = registered.spec
        if spec.name in CONTROL_ACTIONS:
            continue
        entries.append(
            ActionInfo(
                name=spec.name,
                description=spec.description,
                disruptive=spec.disruptive,
                timeout=spec.timeout,
                args_schema=dict(spec.args_schema),
                policy=policy.decide(spec),
                windows=[w.label() for w in policy.windows_for(spec)],
                source=registered.source,
            )
        )
    return entries


def fault_catalogues(plugins: Sequence[EquipmentPlugin], name: str) -> list[dict[str, str]]:
    """Every plugin's fault catalogue (a broken one is logged and left out)."""
    faults: dict[str, dict[str, str]] = {}
    for plugin in plugins:
        try:
            specs = fault_catalogue(plugin)
        except Exception:  # the plugin boundary
            logger.warning("%s: plugin %r has an unusable fault catalogue", name, plugin.name, exc_info=True)
            continue
        for spec in specs:
            faults.setdefault(spec.code, spec.to_json())
    return list(faults.values())


def send_inventory(
    uplink: Uplink,
    settings: AgentSettings,
    plugins: Sequence[EquipmentPlugin],
    *,
    actions: list[str],
    catalogue: list[ActionInfo],
    name: str,
) -> None:
    """Queue the inventory message (the first plugin describes the equipment)."""
    names = [p.name for p in plugins]
    try:
        equipment = plugins[0].equipment_info() if plugins else EquipmentInfo()
    except Exception as exc:  # the plugin boundary
        raise PluginError(plugins[0].name, f"equipment_info() failed: {exc!r}") from exc
    policy = settings.policy
    config: dict[str, Any] = {
        "telemetry_interval": settings.telemetry_interval,
        "allowed_actions": list(policy.allowed_actions),
        "consent_actions": list(policy.consent_actions),
        "forbidden_actions": list(policy.forbidden_actions),
        "windows": [w.label() for w in policy.windows],
        "log_paths": [str(p) for p in policy.log_paths],
        "plugins": names,
        "outbox_max_messages": settings.outbox_max_messages,
        "faults": fault_catalogues(plugins, name),
    }
    uplink.inventory(
        equipment=equipment,
        system=system_info(),
        agent=AgentInfo(
            version=__version__,
            plugins=names,
            actions=actions,
            catalogue=catalogue,
            attended=policy.attended,
        ),
        site=settings.site,
        config=config,
    )
