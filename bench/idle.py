"""What an idle plain stack costs: CPU per component, as a share of one core, with nothing to do.

    python -m bench.idle [--seconds 30] [--settle 15]

Starts the plain stack (as `bench.load` does), waits `--settle` seconds after it is ready, then reads
every stack process's CPU time (utime + stime in /proc/<pid>/stat) at the start and the end of
`--seconds` and prints one JSON line: the total and each component's share of one core. What an idle
stack spends is mostly its consumers' fetches (the embedded broker answers a waiting fetch when
`fetch.wait.max.ms` expires, so each consumer asks about 1000 / wait times a second, and the broker
answers each), so this is the other side of the latency bought with a short fetch wait
(docs/architecture.md, "The latency floor of each hop").
"""

from __future__ import annotations

import argparse
import json
import os
import time

from bench.api import plain_stack
from bench.chaos import _supervisor_pid, stack_processes
from bench.soak import component_of

TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int:
    """utime + stime of one process, in clock ticks (0 once it is gone)."""
    try:
        stat = open(f"/proc/{pid}/stat").read()  # noqa: PTH123, SIM115 (a one-line read)
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def measure(root_pid: int, seconds: float) -> dict[str, float]:
    """Each component's CPU over `seconds`, in percent of one core."""
    processes = {**stack_processes(root_pid), root_pid: "perpline.cli up"}
    before = {pid: cpu_ticks(pid) for pid in processes}
    time.sleep(seconds)
    share: dict[str, float] = {}
    for pid, cmdline in processes.items():
        used = max(0, cpu_ticks(pid) - before[pid])
        name = component_of(cmdline)
        share[name] = share.get(name, 0.0) + 100.0 * used / TICKS_PER_S / seconds
    return {name: round(value, 1) for name, value in sorted(share.items(), key=lambda kv: -kv[1])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=15.0)
    args = parser.parse_args()
    with plain_stack("perpline-idle-") as (data_dir, _api, _kafka, _clickhouse):
        time.sleep(args.settle)
        share = measure(_supervisor_pid(data_dir), args.seconds)
    print(json.dumps({"seconds": args.seconds, "total_pct_of_one_core": round(sum(share.values()), 1),
                      "by_component_pct": share,
                      "fetch_wait_ms": {"write_path": os.environ.get("PERPLINE_FETCH_WAIT_MS", "default"),
                                        "background": os.environ.get("PERPLINE_BACKGROUND_FETCH_WAIT_MS", "default")}}))


if __name__ == "__main__":
    main()
