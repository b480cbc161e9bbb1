"""Agent footprint: RSS and CPU% of a real `fleetcare agent run` process while it idles,
publishing system telemetry every 10 s to a real Mosquitto over mutual TLS.

Baseline in the same run: an idle `python -c "import time; time.sleep(...)"` process, so the
figures read as "agent minus a bare interpreter".

    python -m benchmarks.agent_footprint [--seconds 60] [--interval 10]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks.results import record
from certs import init_pki, issue_device_cert
from tests.support.broker import MosquittoBroker


def measure(proc: psutil.Process, seconds: float) -> tuple[float, float]:
    """(mean CPU % of one core, peak RSS MiB) over ``seconds``."""
    cpu0 = sum(proc.cpu_times()[:2])
    start = time.monotonic()
    peak = 0
    while time.monotonic() - start < seconds:
        peak = max(peak, proc.memory_info().rss)
        time.sleep(0.5)
    cpu = sum(proc.cpu_times()[:2]) - cpu0
    return 100 * cpu / (time.monotonic() - start), peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--interval", type=float, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fc-bench-agent-") as tmp_name:
        tmp = Path(tmp_name)
        pki = init_pki(tmp / "pki")
        cert, key = issue_device_cert(pki, "bench-agent")
        with MosquittoBroker(pki, tmp / "broker") as broker:
            config = tmp / "agent.toml"
            config.write_text(
                f'device_id = "bench-agent"\nserver_key_file = "{pki.signing_pub}"\n'
                f'data_dir = "{tmp / "agent-data"}"\ntelemetry_interval = {args.interval}\n'
                f'[broker]\nhost = "{broker.host}"\nport = {broker.port}\n'
                f'[tls]\nca_file = "{pki.ca_cert}"\ncert_file = "{cert}"\nkey_file = "{key}"\n'
            )
            fleetcare = Path(sys.executable).with_name("fleetcare")
            agent = subprocess.Popen(
                [str(fleetcare), "agent", "run", "--config", str(config)], stderr=subprocess.DEVNULL
            )
            idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(100000)"])
            try:
                time.sleep(5)  # start-up and first inventory/telemetry are not "idle"
                if agent.poll() is not None:
                    raise SystemExit(f"agent exited with {agent.returncode}")
                agent_cpu, agent_rss = measure(psutil.Process(agent.pid), args.seconds)
                base_cpu, base_rss = measure(psutil.Process(idle.pid), min(args.seconds, 10))
            finally:
                for proc in (agent, idle):
                    proc.terminate()
                    proc.wait(10)
    body = (
        f"Idle agent publishing system telemetry every {args.interval:g} s, measured over {args.seconds:g} s.\n\n"
        "| process | CPU % of one core | peak RSS MiB |\n| --- | ---: | ---: |\n"
        f"| `fleetcare agent run` | {agent_cpu:.2f} | {agent_rss:.1f} |\n"
        f"| bare `python -c sleep` (baseline) | {base_cpu:.2f} | {base_rss:.1f} |\n"
        f"| agent - baseline | {agent_cpu - base_cpu:.2f} | {agent_rss - base_rss:.1f} |"
    )
    print(body)
    record("benchmarks.agent_footprint", "Agent footprint while idle", body)


if __name__ == "__main__":
    main()
