"""Suggestion latency with a large history: ``GET /incidents/{id}/suggestions`` work per incident.

Generated, seeded data in a real database (SQLite or PostgreSQL, migrated): ``--incidents``
(100,000) past resolved incidents on ``--devices`` devices of ``--models`` models, each linked
to one of ``--articles`` published articles (KCS links, with telemetry signatures); the open
incidents measured have 24 h of telemetry for ``--metrics`` metrics every 5 minutes before
their fault (the z-score window query reads it). For each open incident the server's own code
runs — ``server.knowledge.suggest.suggestions``: the incident and its device, the index
freshness check, the telemetry signature, the ranking — and, separately, the same request over
HTTP (in-process ASGI, the full FastAPI path with the token check).

Baseline in the same run: the same ranking with the in-memory index rebuilt on every request
(what it costs without the cache). Search over articles and the 100,000 incidents is timed too.

    python -m benchmarks.suggestions [--incidents 100000] [--articles 3000] [--db sqlite|postgres|both]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from benchmarks.results import record
from server.app import create_app
from server.base.users import Principal
from server.db import create_engine, create_sessionmaker, run_migrations
from server.db.models import Article, ArticleLink, Device, Incident, Role, TelemetrySample
from server.knowledge import index as kb_index
from server.knowledge import suggest
from tests.support.databases import sqlite_url, temporary_postgres_database
from tests.support.server import V1, bearer, create_token, server_settings

START = datetime(2025, 11, 1, tzinfo=UTC)
ADMIN = Principal(user_id=0, name="bench", role=Role.ADMIN)
WORDS = [  # symptom vocabulary
    "paper", "jam", "tray", "feed", "roller", "fuser", "heat", "overheats", "noise", "grinding", "leak",
    "coolant", "pressure", "low", "high", "compressor", "stops", "starts", "error", "display", "blank",
    "screen", "frozen", "slow", "print", "faded", "streaks", "toner", "drum", "motor", "vibration", "belt",
    "worn", "sensor", "reading", "wrong", "door", "open", "cover", "alarm", "beeps", "network", "lost",
    "offline", "power", "cycle", "reboot", "fan", "loud", "hot", "cold", "temperature", "flow", "valve",
    "stuck", "pump", "dry", "filter", "clogged", "image", "artefact", "noisy", "tube", "detector",
    "calibration", "drift", "battery", "charge", "ups", "fault", "reset", "firmware", "update", "after",
    "hours", "weekend", "morning", "intermittent", "random", "always", "sometimes", "customer", "reports",
    "operator", "says",
]  # fmt: skip
METRICS = ("temp_c", "pressure_bar", "vibration_mm_s", "current_a", "flow_l_min", "speed_rpm", "humidity")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summary(seconds: list[float]) -> tuple[float, float, float, float]:
    ms = [s * 1000 for s in seconds]
    return percentile(ms, 0.5), percentile(ms, 0.95), percentile(ms, 0.99), statistics.fmean(ms)


def phrase(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def generate(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """Rows for every table, seeded: the same history on every backend."""
    rng = random.Random(args.seed)
    models = [f"M-{m:02d}" for m in range(args.models)]
    codes_of = {m: rng.sample([f"E{c:03d}" for c in range(args.codes)], 15) for m in models}
    devices: list[dict[str, Any]] = [{"id": f"bd-{d:05d}", "model": models[d % len(models)], "firmware": f"{1 + d % 3}.{d % 7}",
                "first_seen": START} for d in range(args.devices)]  # fmt: skip
    articles: list[dict[str, Any]] = []
    by_env: dict[tuple[str, str], list[int]] = {}
    for a in range(1, args.articles + 1):
        model = rng.choice(models)
        code = rng.choice(codes_of[model])
        generic = rng.random() < 0.15
        sig = {
            m: round(rng.choice((-1, 1)) * rng.uniform(2.5, 8), 2)
            for m in rng.sample(METRICS, rng.randint(1, 3))
        }
        use = rng.randint(0, 60)
        articles.append(
            {"id": a, "title": f"{code}: {phrase(rng, 4)}", "type": "problem", "state": "published",
             "symptom": phrase(rng, rng.randint(6, 14)), "cause": phrase(rng, 6), "resolution": phrase(rng, 10),
             "actions": [{"action": "selftest", "args": {}}], "models": [] if generic else [model],
             "fault_codes": [code], "signature": sig, "customer_safe": rng.random() < 0.3, "use_count": use,
             "reuse_count": max(0, use - 1), "success_count": rng.randint(0, use), "apply_count": 0,
             "created_by": "bench", "created_at": START, "updated_at": START, "published_at": START}
        )  # fmt: skip
        by_env.setdefault((model, code), []).append(a)
    incidents: list[dict[str, Any]] = []
    links: list[dict[str, Any]] = []
    span = 365 * 86400.0
    for i in range(1, args.incidents + 1):
        device = rng.choice(devices)
        code = rng.choice(codes_of[device["model"]])
        t = START + timedelta(seconds=rng.uniform(0, span))
        incidents.append(
            {"id": i, "device_id": device["id"], "kind": "fault", "status": "resolved", "fault_code": code,
             "codes": [code], "severity": "error", "effect": "down", "priority": 3, "external": False,
             "t_fault": t, "t_detect": t, "t_resolved": t + timedelta(hours=2), "fault_s": t.timestamp(),
             "detect_s": t.timestamp(), "resolved_s": t.timestamp() + 7200, "channel": "remote",
             "symptom": phrase(rng, rng.randint(5, 10)), "cause": phrase(rng, 5), "resolution": phrase(rng, 8),
             "needs_dispatch": False, "remote_used": True, "visits": 0, "reopened": 0, "episodes": [],
             "auto_resolve": False}
        )  # fmt: skip
        choices = by_env.get((device["model"], code))
        if choices:
            links.append({"article_id": rng.choice(choices), "incident_id": i, "kind": "linked",
                          "fixed": rng.random() < 0.8, "signature": {}, "created_by": "bench", "created_at": t})  # fmt: skip
    return {"devices": devices, "articles": articles, "incidents": incidents, "links": links}


def open_incidents(
    args: argparse.Namespace, data: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``--queries`` open incidents at the end of the year, each with 24 h of telemetry before it
    (one metric in three drifting away in the last 15 minutes)."""
    rng = random.Random(args.seed + 1)
    devices = rng.sample(data["devices"], args.queries)
    base = len(data["incidents"])
    t_fault = START + timedelta(days=366)
    rows, samples = [], []
    for n, device in enumerate(devices, 1):
        code = data["incidents"][rng.randrange(base)]["fault_code"]
        rows.append(
            {"id": base + n, "device_id": device["id"], "kind": "fault", "status": "open", "fault_code": code,
             "codes": [code], "severity": "error", "effect": "down", "priority": 2, "external": False,
             "t_fault": t_fault, "t_detect": t_fault, "fault_s": t_fault.timestamp(), "detect_s": t_fault.timestamp(),
             "symptom": phrase(rng, 8), "cause": "", "resolution": "", "needs_dispatch": False, "remote_used": False,
             "visits": 0, "reopened": 0, "episodes": [], "auto_resolve": True}
        )  # fmt: skip
        drifting = set(rng.sample(METRICS[: args.metrics], max(1, args.metrics // 3)))
        for step in range(288):
            ts = t_fault - timedelta(minutes=5 * (288 - step))
            for metric in METRICS[: args.metrics]:
                value = 50 + rng.gauss(0, 1)
                if metric in drifting and step >= 285:
                    value += 12
                samples.append({"device_id": device["id"], "metric": metric, "ts": ts, "value": value})
    return rows, samples


async def load(
    sessions: async_sessionmaker[AsyncSession], args: argparse.Namespace
) -> tuple[list[int], float]:
    started = time.perf_counter()
    data = generate(args)
    opened, samples = open_incidents(args, data)
    async with sessions() as session:
        for table, rows in ((Device, data["devices"]), (Article, data["articles"]), (Incident, data["incidents"]),
                            (ArticleLink, data["links"]), (Incident, opened), (TelemetrySample, samples)):  # fmt: skip
            for chunk in range(0, len(rows), 5000):
                await session.execute(insert(table), rows[chunk : chunk + 5000])
        await session.commit()
        if session.get_bind().dialect.name == "postgresql":
            await session.execute(
                text("SELECT setval('kb_articles_id_seq', (SELECT max(id) FROM kb_articles))")
            )
            await session.execute(text("SELECT setval('incidents_id_seq', (SELECT max(id) FROM incidents))"))
            await session.commit()
    async with sessions() as session:  # statistics for the planner, as a running server would have
        conn = await session.connection()
        await conn.execute(text("ANALYZE"))
        await session.commit()
    return [row["id"] for row in opened], time.perf_counter() - started


async def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    run_migrations(url)
    engine = create_engine(url)
    sessions = create_sessionmaker(engine)
    out: dict[str, Any] = {}
    try:
        ids, out["load_s"] = await load(sessions, args)
        print(f"loaded in {out['load_s']:.1f}s")
        kb_index.invalidate()
        async with sessions() as session:
            started = time.perf_counter()
            await suggest.suggestions(session, ADMIN, ids[0])
            out["cold_s"] = time.perf_counter() - started  # builds the index
        cached, rebuilt, found = [], [], 0
        for incident_id in ids:
            async with sessions() as session:
                started = time.perf_counter()
                result = await suggest.suggestions(session, ADMIN, incident_id)
                cached.append(time.perf_counter() - started)
                found += bool(result)
        for incident_id in ids[: max(5, len(ids) // 10)]:
            kb_index.invalidate()
            async with sessions() as session:
                started = time.perf_counter()
                await suggest.suggestions(session, ADMIN, incident_id)
                rebuilt.append(time.perf_counter() - started)
        out["cached"], out["rebuilt"], out["with_results"] = (
            summary(cached),
            summary(rebuilt),
            found / len(ids),
        )
        searches = []
        rng = random.Random(args.seed + 2)
        for _ in range(20):
            async with sessions() as session:
                started = time.perf_counter()
                await suggest.search(session, ADMIN, phrase(rng, 3), limit=20)
                searches.append(time.perf_counter() - started)
        out["search"] = summary(searches)
        app = create_app(server_settings(url, incidents={"enabled": False}))
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client,
        ):
            token = bearer(await create_token(app.state.runtime, "bench-ops", Role.OPS))
            over_http = []
            for incident_id in ids:
                started = time.perf_counter()
                answer = await client.get(f"{V1}/incidents/{incident_id}/suggestions", headers=token)
                over_http.append(time.perf_counter() - started)
                answer.raise_for_status()
            out["http"] = summary(over_http)
    finally:
        await engine.dispose()
    return out


@contextlib.contextmanager
def database(kind: str) -> Iterator[str]:
    if kind == "postgres":
        with temporary_postgres_database("fc_kbbench") as url:
            yield url
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield sqlite_url(Path(tmp) / "kb.db")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--incidents", type=int, default=100_000)
    parser.add_argument("--articles", type=int, default=3000)
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--codes", type=int, default=60)
    parser.add_argument("--metrics", type=int, default=6)
    parser.add_argument("--queries", type=int, default=200, help="open incidents to suggest for")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="sqlite")
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args()
    rows = []
    for kind in ("sqlite", "postgres") if args.db == "both" else (args.db,):
        with database(kind) as url:
            print(f"{kind}: generating and loading …")
            got = asyncio.run(measure(url, args))
        fmt = "p50 {:.1f} / p95 {:.1f} / p99 {:.1f} ms (mean {:.1f})"
        rows.append(
            f"| {kind} | {args.incidents:,} | {args.articles:,} | {got['load_s']:.0f} s | {got['cold_s'] * 1000:.0f} ms "
            f"| {fmt.format(*got['cached'])} | {fmt.format(*got['http'])} | {fmt.format(*got['rebuilt'])} "
            f"| {fmt.format(*got['search'])} | {got['with_results']:.0%} |"
        )
        print(rows[-1])
    body = (
        f"{args.incidents:,} past incidents on {args.devices:,} devices ({args.models} models, {args.codes} fault codes), "
        f"{args.articles:,} published articles with links; {args.queries} open incidents with 24 h of telemetry "
        f"({args.metrics} metrics, 5 min) measured one after the other (seed {args.seed}). Target: under 100 ms "
        "per incident. *cached*: the service call with the in-memory article index; *HTTP*: the same through "
        "the API; *baseline*: the index rebuilt on every request; *cold*: the first call (builds the index).\n\n"
        "| backend | incidents | articles | load | cold | cached (service) | HTTP | baseline: no cache | search | "
        "with suggestions |\n| --- | ---: | ---: | ---: | ---: | --- | --- | --- | --- | ---: |\n"
        + "\n".join(rows)
    )
    if args.no_record:
        print(body)
    else:
        record("benchmarks.suggestions", "Knowledge suggestions with 100,000 past incidents", body)


if __name__ == "__main__":
    main()
