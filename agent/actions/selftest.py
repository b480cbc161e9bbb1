"""``selftest``: delegated to the equipment. Every plugin that implements
``async selftest(ctx) -> ActionResult`` is run (one after the other); the findings are merged:
ok only if every plugin's is. Without any, the action answers ok=False and says so — a device
that cannot test itself must not look healthy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agent.plugin import ActionContext, ActionResult, ActionSpec, EquipmentPlugin

__all__ = ["selftest_action"]


def selftest_action(plugins: Sequence[EquipmentPlugin]) -> ActionSpec:
    async def handler(args: Mapping[str, Any], ctx: ActionContext) -> ActionResult:
        found = ((p, getattr(p, "selftest", None)) for p in plugins)
        testers = [(p.name, run) for p, run in found if callable(run)]
        if not testers:
            return ActionResult(
                ok=False,
                output="no equipment plugin on this device offers a self-test",
                data={"plugins": {}},
            )
        merged: dict[str, Any] = {}
        sections = []
        for number, (name, run) in enumerate(testers):
            await ctx.progress(number / len(testers), f"self-test of {name}")
            try:
                result = await run(ctx)
                if not isinstance(result, ActionResult):
                    raise TypeError(f"selftest() returned {type(result).__name__}, not ActionResult")
            except Exception as exc:  # the plugin boundary: one broken self-test is a finding
                result = ActionResult(ok=False, output=f"self-test crashed: {exc!r}")
            merged[name] = {"ok": result.ok, "output": result.output, "data": result.data}
            sections.append(f"[{name}] {'PASS' if result.ok else 'FAIL'}\n{result.output}".rstrip())
        ok = all(entry["ok"] for entry in merged.values())
        return ActionResult(ok=ok, output="\n\n".join(sections), data={"plugins": merged})

    return ActionSpec(
        "selftest",
        handler,
        "Run the equipment's self-test (every plugin that has one) and report the findings.",
        timeout=120.0,
        args_schema={"type": "object", "properties": {}, "additionalProperties": False},
    )
