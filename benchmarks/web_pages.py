"""Web console speed on a 10,000-device fleet: the dashboard and the fleet page, server time
(HTTP round trip of the HTML) and load in headless Chromium (navigation timing: response end,
DOMContentLoaded, load), page weight (HTML + every resource). Target: under one second each.

    python -m benchmarks.web_pages [--devices 10000] [--days 60] [--runs 5] [--record]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from benchmarks.results import machine, record
from server.db.models import Role
from server.kpi.generate import FleetShape, generate
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
          bytes: bytes, html: nav.encodedBodySize, resources: res.length};
}"""


async def _measure(base_url: str, pages: dict[str, str], runs: int) -> dict[str, dict[str, Any]]:
    from playwright.async_api import async_playwright  # noqa: PLC0415 - the dev extra only

    out: dict[str, dict[str, Any]] = {}
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        form = await client.get("/login")
        csrf = form.text.split('name="csrf" value="')[1].split('"')[0]
        await client.post("/login", data={"csrf": csrf, "username": "olga", "password": PASSWORD})
        for name, path in pages.items():
            await client.get(path)  # warm: first query plans, template compile
            server = []
            for _ in range(runs):
                t0 = time.perf_counter()
                answer = await client.get(path)
                server.append(time.perf_counter() - t0)
                answer.raise_for_status()
            out[name] = {"server": server}
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
                loads.append(await page.evaluate(_TIMING_JS))
            out[name]["browser"] = loads
        cold = await browser.new_context()
        await cold.add_cookies(cookies)  # type: ignore[arg-type]
        first = await cold.new_page()
        for name, path in pages.items():
            await first.goto(base_url + path, wait_until="load")
            out[name]["cold"] = await first.evaluate(_TIMING_JS)
        await browser.close()
    return out


async def run(devices: int, days: float, runs: int) -> tuple[str, bool]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'web.db'}"
        settings = server_settings(url, incidents={"enabled": False})
        async with running_server(settings) as (app, base_url):
            runtime = app.state.runtime
            t0 = time.perf_counter()
            ds = generate(FleetShape(devices=devices, days=days, seed=11))
            async with runtime.sessions() as session:
                await insert_dataset(session, ds)
                await refresh_rollups(session)  # the KPI engine's state rollups, as in steady state
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
            figures = await _measure(base_url, pages, runs)
    lines = [
        f"{devices:,} devices, {days:g} days of history ({len(ds.incidents):,} incidents, "
        f"{len(ds.states):,} state intervals; loaded, rollups built in {load_s:.1f} s), SQLite, {runs} runs each, "
        f"median. {machine()}, Chromium {CHROMIUM}.",
        "",
        "| page | server (HTML) | browser: response end | DOMContentLoaded | load | first visit load "
        "| page weight (first visit) |",
        "|---|---|---|---|---|---|---|",
    ]
    ok = True
    for name, f in figures.items():
        server = statistics.median(f["server"])
        load = statistics.median(x["load"] for x in f["browser"]) / 1000
        dcl = statistics.median(x["dcl"] for x in f["browser"]) / 1000
        resp = statistics.median(x["response_end"] for x in f["browser"]) / 1000
        cold = f["cold"]
        ok = ok and max(server, load, cold["load"] / 1000) < TARGET_S
        lines.append(
            f"| {name} | {server * 1000:.0f} ms | {resp * 1000:.0f} ms | {dcl * 1000:.0f} ms | "
            f"{load * 1000:.0f} ms | {cold['load']:.0f} ms | {cold['bytes'] / 1024:.0f} KiB "
            f"({cold['resources']} files) |"
        )
    lines += [
        "",
        f"Target: every page under {TARGET_S:g} s (server and browser load): {'met' if ok else 'MISSED'}.",
    ]
    return "\n".join(lines), ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--days", type=float, default=60.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--record", action="store_true", help="append to benchmarks/RESULTS.md")
    args = parser.parse_args()
    body, ok = asyncio.run(run(args.devices, args.days, args.runs))
    print(body)
    if args.record:
        record("benchmarks.web_pages", "Web console pages on a 10,000-device fleet", body)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
