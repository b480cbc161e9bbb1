"""Append a benchmark's figures to benchmarks/RESULTS.md with the command, date and machine."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADER = """# Benchmark results

Measured figures only, newest last; each section names the command that produced it.
The machine is shared and noisy: compare the ratios against the baseline measured in the
same run, not absolute numbers across runs.
"""


def machine() -> str:
    try:
        mosq = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True, check=False).stdout
        mosq_version = mosq.splitlines()[0] if mosq else "?"
    except OSError:
        mosq_version = "not installed"
    return (
        f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()} "
        f"{platform.release()}, {mosq_version}"
    )


def record(module: str, title: str, body: str) -> None:
    """Append ``body`` (Markdown) under ``title``; ``module`` is what ``python -m`` ran."""
    command = " ".join(["python", "-m", module, *map(shlex.quote, sys.argv[1:])])
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    if not RESULTS.exists():
        RESULTS.write_text(HEADER)
    with RESULTS.open("a") as fh:
        fh.write(f"\n## {title} — {stamp}\n\n`{command}` on {machine()}\n\n{body.strip()}\n")
    print(f"appended to {RESULTS}")
