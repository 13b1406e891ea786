"""Check every peer against the NaiveBook oracle on one flow; prints one JSON line per engine.

    PYTHONPATH=. .venv-bench/bin/python -m bench.peers.check [--commands 200000] [--seed 7] [--only NAME]

Each engine runs in its own subprocess (as `python -m bench.matcher` does), one at a time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from bench.peers import PEERS, naive_reference, run_peer


def _one(name: str, commands: int, seed: int) -> dict[str, object]:
    from bench.matcher import flow

    data = flow(commands, seed)
    ref = naive_reference(data)
    got = ref if name == "naive" else run_peer(name, data)
    return {"engine": name, "ops_per_s": round(got["ops_per_s"]), "volume_lots": got["volume_lots"],
            "levels": len(got["book"]), "volume_agrees": got["volume_lots"] == ref["volume_lots"],
            "book_agrees": got["book"] == ref["book"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commands", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--only", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_one(args.child, args.commands, args.seed)))
        return
    for name in [args.only] if args.only else ["naive", *sorted(PEERS)]:
        done = subprocess.run([sys.executable, "-m", "bench.peers.check", "--child", name, "--commands",
                               str(args.commands), "--seed", str(args.seed)], capture_output=True, text=True)
        print(done.stdout.strip() if done.returncode == 0 else json.dumps({"engine": name, "error": done.stderr[-500:]}),
              flush=True)


if __name__ == "__main__":
    main()
