"""Actions a signed, allowed command may run: registry, argument checks, built-ins, executor."""

from agent.actions.args import check_args
from agent.actions.builtins import BUILTIN_ACTION_NAMES, builtin_actions
from agent.actions.executor import CHUNK_CHARS, ActionExecutor, ReplySender
from agent.actions.logs import LogAccess, LogTail
from agent.actions.registry import ActionRegistry, RegisteredAction

__all__ = [
    "BUILTIN_ACTION_NAMES",
    "CHUNK_CHARS",
    "ActionExecutor",
    "ActionRegistry",
    "LogAccess",
    "LogTail",
    "RegisteredAction",
    "ReplySender",
    "builtin_actions",
    "check_args",
]
