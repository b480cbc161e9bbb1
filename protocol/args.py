"""Checking a command's ``args`` against an action's ``args_schema`` (contract: the agent checks it
before it runs anything, the server before it signs).

A deliberately small subset of JSON Schema, enough for diagnostics actions: a top-level
object with ``properties`` (each with ``type`` and optional ``minimum``/``maximum``/
``maxLength``/``enum``), ``required`` and ``additionalProperties: false``. An empty schema
accepts anything. A failure becomes a ``bad_args`` rejection: the handler never runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["check_args"]

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


def _check_value(name: str, value: Any, schema: Mapping[str, Any]) -> str | None:
    expected = schema.get("type")
    if expected is not None:
        types = _TYPES.get(expected)
        # bool is an int in Python, never in JSON Schema
        if (
            types is None
            or not isinstance(value, types)
            or (isinstance(value, bool) and expected != "boolean")
        ):
            return f"{name}: expected {expected}, got {type(value).__name__}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{name}: must be one of {list(schema['enum'])}"
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            return f"{name}: must be >= {schema['minimum']}"
        if "maximum" in schema and value > schema["maximum"]:
            return f"{name}: must be <= {schema['maximum']}"
    if isinstance(value, str) and "maxLength" in schema and len(value) > schema["maxLength"]:
        return f"{name}: longer than {schema['maxLength']} characters"
    return None


def check_args(args: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Problems with ``args``, one line each; empty when they fit ``schema``."""
    if not schema:
        return []
    properties: Mapping[str, Any] = schema.get("properties", {})
    problems = [f"{name}: required" for name in schema.get("required", ()) if name not in args]
    for name, value in args.items():
        if name not in properties:
            if schema.get("additionalProperties", True) is False:
                problems.append(
                    f"{name}: unknown argument (expected {', '.join(sorted(properties)) or 'none'})"
                )
            continue
        problem = _check_value(name, value, properties[name])
        if problem:
            problems.append(problem)
    return problems
