"""The device agent: connects one piece of equipment to the fleet over MQTT with mutual TLS.

    from agent import AgentRuntime, AgentSettings, load_settings

    async with AgentRuntime(load_settings(Path("agent.toml"))) as runtime:
        await runtime.wait_connected()

Guides: docs/agent.md (operating it), docs/plugins.md (writing an equipment plugin).
"""

from agent.clock import Clock, SystemClock
from agent.config import (
    DEFAULT_ALLOWED_ACTIONS,
    AgentSettings,
    BrokerSettings,
    PluginSettings,
    PolicySettings,
    ReconnectSettings,
    TlsSettings,
    load_settings,
)
from agent.errors import (
    ActionArgumentError,
    ActionConflict,
    ActionError,
    AgentConfigError,
    AgentError,
    DataDirInUse,
    FatalLinkError,
    LinkDown,
    LinkError,
    MessageTooLarge,
    OutboxError,
    PluginError,
    PluginNotFound,
)
from agent.link import LinkState
from agent.runtime import AgentRuntime, run_agent

__all__ = [
    "DEFAULT_ALLOWED_ACTIONS",
    "ActionArgumentError",
    "ActionConflict",
    "ActionError",
    "AgentConfigError",
    "AgentError",
    "AgentRuntime",
    "AgentSettings",
    "BrokerSettings",
    "Clock",
    "DataDirInUse",
    "FatalLinkError",
    "LinkDown",
    "LinkError",
    "LinkState",
    "MessageTooLarge",
    "OutboxError",
    "PluginError",
    "PluginNotFound",
    "PluginSettings",
    "PolicySettings",
    "ReconnectSettings",
    "SystemClock",
    "TlsSettings",
    "load_settings",
    "run_agent",
]
