"""The benchmark runs and its engines agree on traded volume (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

from perpline import REPO_ROOT


def test_bench_matcher_reports_every_figure_and_volumes_agree() -> None:
    out = subprocess.run([sys.executable, "-m", "bench.matcher", "--commands", "3000", "--recovery-inputs", "2000",
                          "--no-peers"], cwd=REPO_ROOT,
                         capture_output=True, text=True, check=True, timeout=120)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("commands", "ops_per_s", "p50_ns", "p99_ns", "p999_ns", "ops_per_s_pure", "ratio_vs_pure",
                "ratio_vs_naive", "volume_lots", "batch_ops_per_s", "ops_per_s_python_loop", "decode_ns_per_msg",
                "recovery_s_per_1m"):
        assert key in report, key
    assert report["commands"] == 3000 and report["volume_lots"] > 0 and report["volumes_agree"] is True
    assert report["books_agree"] is True
