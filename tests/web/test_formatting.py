"""The console's one duration rule (server/web/rendering.py ``duration``; static/format.js is
checked against it in Chromium by test_dashboard_truth.py)."""

from __future__ import annotations

import pytest

from server.web.rendering import duration, kpi_text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "—"),
        (0, "0 s"),
        (0.4, "0.4 s"),
        (42, "42 s"),
        (150, "2.5 min"),  # the old tile said "0.0 h", the old chart "0.04 h"
        (599, "9.98 min"),
        (3600, "1 h"),
        (4500, "1.25 h"),
        (47.9 * 3600, "47.9 h"),
        (2 * 86400, "2 d"),
        (1234.5 * 86400, "1,235 d"),
        (-150, "-2.5 min"),
    ],
)
def test_duration_keeps_three_significant_digits_in_the_unit_reached(
    seconds: float | None, text: str
) -> None:
    assert duration(seconds) == text


def test_kpi_tiles_format_every_duration_by_the_rule() -> None:
    assert kpi_text("downtime_s", 150.0) == "2.5 min"
    assert kpi_text("mtrs_mean_s", 4500.0) == "1.25 h"
    assert kpi_text("mtbf_s", None, {"mtbf_censored": True, "mtbf_lower_bound_s": 3 * 86400}) == "> 3 d"
    assert kpi_text("availability", 0.9067) == "90.67 %"
