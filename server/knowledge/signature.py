"""The telemetry signature of a fault: which metrics were abnormal just before it, measured
against the device's *own* baseline (so a chiller that always runs warm is not "hot").

For each metric, the mean over the window ``[t_fault - WINDOW_S, t_fault + AFTER_S]`` is compared
with the mean and spread over the baseline ``[t_fault - BASELINE_S, t_fault - WINDOW_S)``:
``z = (window mean - baseline mean) / baseline std``. Metrics with ``|z| >= ABNORMAL_Z`` form the
signature (z clipped to ±``CLIP_Z``). One aggregate query over the telemetry index
``(device_id, metric, ts)``; nothing is stored per sample.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta

from sqlalchemy import and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import TelemetrySample

__all__ = ["ABNORMAL_Z", "incident_signature", "mean_signature", "similarity", "z_scores"]

WINDOW_S = 900.0
AFTER_S = 60.0
BASELINE_S = 86400.0
MIN_BASELINE = 5  # samples: fewer says nothing about the device's normal
ABNORMAL_Z = 2.0
CLIP_Z = 10.0
MIN_STD_FRACTION = 0.01  # a flat baseline: 1 % of its mean (or 1e-6) as the spread


def z_scores(rows: list[tuple[str, int, float, float, int, float]]) -> dict[str, float]:
    """Per metric ``(metric, n_base, sum_base, sumsq_base, n_win, sum_win)`` → abnormal z-scores."""
    out: dict[str, float] = {}
    for metric, n_base, s_base, ss_base, n_win, s_win in rows:
        if n_base < MIN_BASELINE or n_win < 1:
            continue
        mean = s_base / n_base
        var = max(ss_base / n_base - mean * mean, 0.0)
        std = max(math.sqrt(var), abs(mean) * MIN_STD_FRACTION, 1e-6)
        z = (s_win / n_win - mean) / std
        if abs(z) >= ABNORMAL_Z:
            out[metric] = round(max(-CLIP_Z, min(CLIP_Z, z)), 3)
    return out


async def incident_signature(session: AsyncSession, device_id: str, t_fault: datetime) -> dict[str, float]:
    """The abnormal metrics of ``device_id`` around ``t_fault`` (empty without telemetry)."""
    t = TelemetrySample
    base_from = t_fault - timedelta(seconds=BASELINE_S)
    win_from = t_fault - timedelta(seconds=WINDOW_S)
    win_to = t_fault + timedelta(seconds=AFTER_S)
    in_base = t.ts < win_from
    in_win = and_(t.ts >= win_from, t.ts <= win_to)
    rows = await session.execute(
        select(
            t.metric,
            func.sum(case((in_base, 1), else_=0)),
            func.sum(case((in_base, t.value), else_=0.0)),
            func.sum(case((in_base, t.value * t.value), else_=0.0)),
            func.sum(case((in_win, 1), else_=0)),
            func.sum(case((in_win, t.value), else_=0.0)),
        )
        .where(t.device_id == device_id, t.ts >= base_from, t.ts <= win_to)
        .group_by(t.metric)
    )
    return z_scores(
        [
            (str(m), int(a or 0), float(b or 0), float(c or 0), int(d or 0), float(e or 0))
            for m, a, b, c, d, e in rows
        ]
    )


def similarity(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Cosine of two signatures in [0, 1]: the same metrics abnormal in the same direction.
    Opposite directions count as nothing rather than negative (a signature is evidence *for*)."""
    if not a or not b:
        return 0.0
    dot = sum(v * b.get(k, 0.0) for k, v in a.items())
    norm = math.sqrt(sum(v * v for v in a.values())) * math.sqrt(sum(v * v for v in b.values()))
    return max(0.0, dot / norm) if norm else 0.0


def mean_signature(signatures: list[Mapping[str, float]]) -> dict[str, float]:
    """An article's signature: the mean z per metric over the incidents it fixed; a metric
    abnormal in fewer than half of them is dropped (it was not part of the pattern)."""
    if not signatures:
        return {}
    totals: dict[str, float] = {}
    counts: dict[str, int] = {}
    for sig in signatures:
        for metric, z in sig.items():
            totals[metric] = totals.get(metric, 0.0) + z
            counts[metric] = counts.get(metric, 0) + 1
    n = len(signatures)
    return {m: round(totals[m] / counts[m], 3) for m in totals if counts[m] * 2 >= n}
