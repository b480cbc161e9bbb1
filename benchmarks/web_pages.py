"""Web console speed on a 10,000-device fleet: the dashboard and the fleet page, server time
(HTTP round trip of the HTML) and load in headless Chromium (navigation timing: response end,
DOMContentLoaded, load), page weight (HTML + every resource). Target: under one second each.

The dashboard's charts load after the page (``/dashboard/charts/{name}``, one KPI report each,
fetched in parallel): their server time (all at once, as the browser asks) and the time from
navigation until every chart is drawn (``window.__chartsDrawnAt``) are reported beside it.
The fleet has ``consumable.low`` events on a fifth of the devices (half of them cleared by a
later ``maintenance.ended``) for the consumables-at-risk column.

``--profile`` measures no browser: it reports where the dashboard's server time goes — per
request (the page, then each chart alone, then the three at once as the browser sends them), the
KPI engine calls it makes (``compute_report``: ReportSpec, time, the engine's own step timings
``_Query.timings``) and the page's other queries (open incidents by priority, filter options).

    python -m benchmarks.web_pages [--devices 10000] [--days 60] [--runs 5] [--record] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from benchmarks.results import machine, record
from server.db.models import Event, Role
from server.kpi.generate import FleetShape, generate
from server.kpi.incident_rollups import refresh_incident_rollups
from server.kpi.records import insert_dataset
from server.kpi.rollups import refresh_rollups
from tests.support.server import create_token, running_server, server_settings

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "benchmark password"
TARGET_S = 1.0

_TIMING_JS = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const res = performance.getEntriesByType('resource');
  const bytes = nav.encodedBodySize + res.reduce((s, r) => s + (r.encodedBodySize || 0), 0);
  return {response_end: nav.responseEnd, dcl: nav.domContentLoadedEventEnd, load: nav.loadEventEnd,
          bytes: bytes, html: nav.encodedBodySize, resources: res.length,
          charts: window.__chartsDrawnAt === undefined ? null : window.__chartsDrawnAt};
}"""
_CHARTS_JS = "() => !document.getElementById('charts') || window.__chartsDrawnAt !== undefined"
CHART_URL = re.compile(r'data-src-[a-z-]+="([^"]+)"')


async def _charts_server(client: httpx.AsyncClient, html: str) -> float | None:
    """The dashboard's chart requests, all at once as the page's script sends them."""
    urls = [url.replace("&amp;", "&") for url in CHART_URL.findall(html)]
    if not urls:
        return None
    t0 = time.perf_counter()
    answers = await asyncio.gather(*(client.get(url) for url in urls))
    for answer in answers:
        answer.raise_for_status()
    return time.perf_counter() - t0


async def _measure(base_url: str, pages: dict[str, str], runs: int) -> dict[str, dict[str, Any]]:
    from playwright.async_api import async_playwright  # noqa: PLC0415 - the dev extra only

    out: dict[str, dict[str, Any]] = {}
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        form = await client.get("/login")
        csrf = form.text.split('name="csrf" value="')[1].split('"')[0]
        await client.post("/login", data={"csrf": csrf, "username": "olga", "password": PASSWORD})
        for name, path in pages.items():
            await client.get(path)  # warm: first query plans, template compile
            server, charts = [], []
            for _ in range(runs):
                t0 = time.perf_counter()
                answer = await client.get(path)
                server.append(time.perf_counter() - t0)
                answer.raise_for_status()
                charts.append(await _charts_server(client, answer.text))
            out[name] = {"server": server, "charts_server": charts}
        cookies = [{"name": c.name, "value": c.value or "", "url": base_url} for c in client.cookies.jar]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = await browser.new_context(viewport={"width": 1280, "height": 860})
        await context.add_cookies(cookies)  # type: ignore[arg-type]
        page = await context.new_page()
        for name, path in pages.items():
            await page.goto(base_url + path)  # warm the browser cache as a returning user would
            loads = []
            for _ in range(runs):
                await page.goto(base_url + path, wait_until="load")
                await page.wait_for_function(_CHARTS_JS, timeout=60_000)
                loads.append(await page.evaluate(_TIMING_JS))
            out[name]["browser"] = loads
        cold = await browser.new_context()
        await cold.add_cookies(cookies)  # type: ignore[arg-type]
        first = await cold.new_page()
        for name, path in pages.items():
            await first.goto(base_url + path, wait_until="load")
            await first.wait_for_function(_CHARTS_JS, timeout=60_000)
            out[name]["cold"] = await first.evaluate(_TIMING_JS)
        await browser.close()
    return out


@dataclass
class _Trace:
    """What the server did for one request: each KPI engine call (ReportSpec, wall time, the
    engine's step timings) and each of the dashboard's other queries (name, wall time)."""

    engine: list[tuple[Any, float, dict[str, float]]] = field(default_factory=list)
    queries: list[tuple[str, float]] = field(default_factory=list)


_ENGINE = "compute_report"


@contextlib.contextmanager
def _traced() -> Iterator[_Trace]:
    """Wrap the names the dashboard's request path calls (``compute_report`` as the console's
    KPI page imported it, the dashboard's two other queries) to record their calls; restored
    after."""
    import server.web.pages.kpis as kpi_page  # noqa: PLC0415 - patched only while profiling

    trace = _Trace()
    engine = getattr(kpi_page, _ENGINE)  # the name server.web.pages.kpis imported and calls

    async def compute_report(session: Any, spec: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        report = await engine(session, spec, **kwargs)
        trace.engine.append((spec, time.perf_counter() - t0, dict(report.timings)))
        return report

    def timed(name: str, call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await call(*args, **kwargs)
            finally:
                trace.queries.append((name, time.perf_counter() - t0))

        return wrapper

    saved = {name: getattr(kpi_page, name) for name in ("open_by_priority", "filter_options")}
    setattr(kpi_page, _ENGINE, compute_report)
    for name, call in saved.items():
        setattr(kpi_page, name, timed(name, call))
    try:
        yield trace
    finally:
        setattr(kpi_page, _ENGINE, engine)
        for name, call in saved.items():
            setattr(kpi_page, name, call)


def _spec_text(spec: Any) -> str:
    filters = ", ".join(f"{k}={v}" for k, v in spec.filters().items())
    return (
        f"group_by={spec.group_by.value if spec.group_by else None}, "
        f"[{spec.start:%Y-%m-%d}, {spec.end:%Y-%m-%d}){', ' + filters if filters else ''}, "
        f"with_state={spec.with_state}"
    )


async def _profile(base_url: str, path: str, runs: int) -> list[str]:
    """The dashboard's requests one at a time, then its charts at once; the median of ``runs``."""
    steps: dict[str, list[tuple[float, _Trace]]] = {}
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        form = await client.get("/login")
        csrf = form.text.split('name="csrf" value="')[1].split('"')[0]
        await client.post("/login", data={"csrf": csrf, "username": "olga", "password": PASSWORD})
        html = (await client.get(path)).text  # warm
        charts = [url.replace("&amp;", "&") for url in CHART_URL.findall(html)]
        for url in charts:
            (await client.get(url)).raise_for_status()
        for _ in range(runs):
            for url in [path, *charts]:
                with _traced() as trace:
                    t0 = time.perf_counter()
                    (await client.get(url)).raise_for_status()
                    steps.setdefault(url, []).append((time.perf_counter() - t0, trace))
            with _traced() as trace:
                t0 = time.perf_counter()
                for answer in await asyncio.gather(*(client.get(url) for url in charts)):
                    answer.raise_for_status()
                steps.setdefault("the 3 charts at once", []).append((time.perf_counter() - t0, trace))
    lines = [
        "| request | request time | KPI engine calls | ReportSpec | engine call time | engine steps "
        "(median s; `_Query.timings`) | other queries |",
        "|---|---|---|---|---|---|---|",
    ]
    for url, measured in steps.items():
        request = statistics.median(t for t, _ in measured)
        counts = sorted({len(trace.engine) for _, trace in measured})
        calls: dict[str, list[tuple[float, dict[str, float]]]] = {}  # by spec: the parallel order varies
        for _, trace in measured:
            for spec, wall, timings in trace.engine:
                calls.setdefault(_spec_text(spec), []).append((wall, timings))
        others = ", ".join(
            f"{name} {statistics.median(t.queries[i][1] for _, t in measured):.3f} s"
            for i, (name, _) in enumerate(measured[0][1].queries)
        )
        for n, (spec, seen) in enumerate(calls.items()):
            keys = {k for _, timings in seen for k in timings} - {"total"}
            step = {k: statistics.median(timings.get(k, 0.0) for _, timings in seen) for k in keys}
            steps_text = ", ".join(f"{k} {v:.3f}" for k, v in sorted(step.items(), key=lambda kv: -kv[1]))
            head = (
                f"| `{url.split('?')[0]}` | {request:.3f} s | {'/'.join(map(str, counts))}"
                if n == 0
                else "| | |"
            )
            wall = statistics.median(w for w, _ in seen)
            lines.append(f"{head} | {spec} | {wall:.3f} s | {steps_text} | {others if n == 0 else ''} |")
    return lines


def _consumable_events(records: list[Any], end: datetime) -> list[Event]:
    """``consumable.low`` on every fifth device; every tenth device's cleared by maintenance."""
    events = []
    for n, device in enumerate(records[::5]):
        low = end - timedelta(days=1 + n % 20)
        events.append(_event(device.id, 1, "consumable.low", "TONER_LOW_BLACK", low))
        if n % 2:
            events.append(_event(device.id, 2, "maintenance.ended", None, low + timedelta(hours=4)))
    return events


def _event(device_id: str, seq: int, type_: str, code: str | None, ts: datetime) -> Event:
    return Event(
        device_id=device_id, seq=seq, type=type_, code=code, severity="warning", ts=ts, received_at=ts
    )


async def run(devices: int, days: float, runs: int, *, profile: bool = False) -> tuple[str, bool]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'web.db'}"
        settings = server_settings(url, incidents={"enabled": False})
        async with running_server(settings) as (app, base_url):
            runtime = app.state.runtime
            t0 = time.perf_counter()
            ds = generate(FleetShape(devices=devices, days=days, seed=11))
            async with runtime.sessions() as session:
                await insert_dataset(session, ds)
                await refresh_rollups(session)  # the KPI engine's rollups, as in steady state
                await refresh_incident_rollups(session)
                await session.commit()
                session.add_all(_consumable_events(ds.devices, FleetShape().start + timedelta(days=days)))
                await session.commit()
            load_s = time.perf_counter() - t0
            await create_token(runtime, "olga", Role.OPS, password=PASSWORD)
            start = FleetShape().start
            end = (start + timedelta(days=days)).date().isoformat()
            begin = (start + timedelta(days=days) - timedelta(days=28)).date().isoformat()
            pages = {
                "dashboard (4 weeks)": f"/?from={begin}&to={end}",
                f"fleet (page 1 of {-(-devices // 50)})": "/fleet",
                "fleet, sorted by open incidents": "/fleet?sort=open&dir=desc",
                "fleet, search": "/fleet?q=dev-0999",
            }
            if profile:
                table = await _profile(base_url, pages["dashboard (4 weeks)"], runs)
                head = (
                    f"{devices:,} devices, {days:g} days of history, SQLite, {runs} runs, median. "
                    f"{machine()}. Dashboard {pages['dashboard (4 weeks)']}:"
                )
                return "\n".join([head, "", *table]), True
            figures = await _measure(base_url, pages, runs)
    lines = [
        f"{devices:,} devices, {days:g} days of history ({len(ds.incidents):,} incidents, "
        f"{len(ds.states):,} state intervals; loaded, rollups built in {load_s:.1f} s), SQLite, {runs} runs each, "
        f"median. {machine()}, Chromium {CHROMIUM}.",
        "",
        "| page | server (HTML) | browser: response end | DOMContentLoaded | load | first visit load "
        "| page weight (first visit) | charts: server (parallel) | charts drawn (first visit) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ok = True
    for name, f in figures.items():
        server = statistics.median(f["server"])
        load = statistics.median(x["load"] for x in f["browser"]) / 1000
        dcl = statistics.median(x["dcl"] for x in f["browser"]) / 1000
        resp = statistics.median(x["response_end"] for x in f["browser"]) / 1000
        cold = f["cold"]
        ok = ok and max(server, load, cold["load"] / 1000) < TARGET_S
        charts = [c for c in f["charts_server"] if c is not None]
        drawn = [x["charts"] for x in f["browser"] if x["charts"] is not None]
        chart_cells = (
            f"{statistics.median(charts) * 1000:.0f} ms | {statistics.median(drawn):.0f} ms "
            f"({cold['charts']:.0f} ms)"
            if charts and drawn and cold["charts"] is not None
            else "— | —"
        )
        lines.append(
            f"| {name} | {server * 1000:.0f} ms | {resp * 1000:.0f} ms | {dcl * 1000:.0f} ms | "
            f"{load * 1000:.0f} ms | {cold['load']:.0f} ms | {cold['bytes'] / 1024:.0f} KiB "
            f"({cold['resources']} files) | {chart_cells} |"
        )
    lines += [
        "",
        f"Target: every page under {TARGET_S:g} s (server and browser load): {'met' if ok else 'MISSED'}. "
        "The dashboard's charts are not part of its load: they are drawn when their data arrives "
        '(the last two columns; "charts drawn" counts from the start of navigation).',
    ]
    return "\n".join(lines), ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--days", type=float, default=60.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--record", action="store_true", help="append to benchmarks/RESULTS.md")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="where the dashboard's server time goes (no browser, no record)",
    )
    args = parser.parse_args()
    if args.profile and args.record:
        parser.error("--profile prints a profile; it is not recorded (drop --record)")
    body, ok = asyncio.run(run(args.devices, args.days, args.runs, profile=args.profile))
    print(body)
    if args.record:
        record("benchmarks.web_pages", "Web console pages on a 10,000-device fleet", body)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
