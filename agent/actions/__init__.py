"""Actions a signed, allowed command may run: registry, argument checks, built-ins, executor."""

# ruff: noqa: I001 - import order is load order: builtins pulls in every action module

from protocol.args import check_args
from agent.actions.builtins import BUILTIN_ACTION_NAMES, builtin_actions, device_actions
from agent.actions.executor import CHUNK_CHARS, ActionExecutor, ReplySender
from agent.actions.logs import AllowedPaths, LogAccess, LogTail
from agent.actions.services import ServiceManager, SystemdManager
from agent.actions.registry import ActionRegistry, RegisteredAction

__all__ = [
    "BUILTIN_ACTION_NAMES",
    "CHUNK_CHARS",
    "ActionExecutor",
    "ActionRegistry",
    "AllowedPaths",
    "LogAccess",
    "LogTail",
    "RegisteredAction",
    "ReplySender",
    "ServiceManager",
    "SystemdManager",
    "builtin_actions",
    "check_args",
    "device_actions",
]
