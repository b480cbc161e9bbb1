"""Colour contrast of the console's text against WCAG 2.x AA (4.5:1 for body text), computed
from the values in server/web/static/app.css — a colour change that breaks it fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CSS = (Path(__file__).parents[2] / "server" / "web" / "static" / "app.css").read_text()
AA_TEXT = 4.5


def _variables() -> dict[str, str]:
    root = re.search(r":root\s*\{(.*?)\}", CSS, re.S)
    assert root, "app.css has no :root block"
    return dict(re.findall(r"--([\w-]+):\s*(#[0-9a-fA-F]{3,6})", root.group(1)))


VARS = _variables()


def _colour(value: str) -> str:
    value = value.strip()
    found = re.fullmatch(r"var\(--([\w-]+)\)", value)
    return VARS[found.group(1)] if found else value


def declaration(selector: str, prop: str) -> str:
    """The value of ``prop`` in the rule whose selector list contains ``selector``."""
    for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", CSS):
        if selector in [s.strip() for s in selectors.split(",")]:
            found = re.search(rf"(?:^|;|\s){re.escape(prop)}:\s*([^;]+)", body)
            if found:
                return _colour(found.group(1))
    raise AssertionError(f"app.css: no {prop} for {selector}")


def luminance(hex_colour: str) -> float:
    digits = hex_colour.lstrip("#")
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    channels = [int(digits[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_the_formula_against_known_values() -> None:
    assert contrast("#000", "#fff") == pytest.approx(21.0)
    assert contrast("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)  # the classic near miss
    assert contrast("#fff", "#fff") == pytest.approx(1.0)


PAIRS = [
    ("body text", VARS["fg"], VARS["bg"]),
    ("muted text (labels, period)", VARS["muted"], VARS["bg"]),
    ("links", declaration("a", "color"), VARS["bg"]),
    ("tile value", VARS["fg"], declaration(".tile", "background")),
    ("tile label and sub", VARS["muted"], declaration(".tile", "background")),
    ("target met", VARS["running"], declaration(".tile", "background")),
    ("target missed", VARS["down"], declaration(".tile", "background")),
    ("buttons", declaration("button", "color"), declaration("button", "background")),
    (
        "secondary buttons",
        declaration("button.secondary", "color"),
        declaration("button.secondary", "background"),
    ),
    ("header", declaration(".top", "color"), declaration(".top", "background")),
    ("online badge", declaration(".badge.on", "color"), declaration(".badge.on", "background")),
    ("offline badge", declaration(".badge.off", "color"), declaration(".badge.off", "background")),
    ("allowed action", declaration(".p-allowed", "color"), declaration(".p-allowed", "background")),
    (
        "needs consent",
        declaration(".p-needs_consent", "color"),
        declaration(".p-needs_consent", "background"),
    ),
    ("forbidden action", declaration(".p-forbidden", "color"), declaration(".p-forbidden", "background")),
    ("session output", declaration("#run-output", "color"), declaration("#run-output", "background")),
    ("table header", VARS["fg"], declaration("table.data thead th", "background")),
    ("error text", VARS["down"], VARS["bg"]),
    ("at-risk count", VARS["down"], VARS["bg"]),
]


@pytest.mark.parametrize(("what", "fg", "bg"), PAIRS, ids=[p[0] for p in PAIRS])
def test_text_colours_meet_wcag_aa(what: str, fg: str, bg: str) -> None:
    ratio = contrast(fg, bg)
    assert ratio >= AA_TEXT, f"{what}: {fg} on {bg} is {ratio:.2f}:1, below {AA_TEXT}:1 (WCAG AA)"
