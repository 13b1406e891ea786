"""The operator's side of repairs (docs/reconciliation.md):

    perpline recon repairs [--all]                   open repairs (all with --all) as JSON lines
    perpline recon repair ID --apply [--by NAME]     apply a proposed (or failed) repair; the reconciler
                                                     re-checks it and marks it confirmed
    perpline recon resume SYMBOL [--by NAME]         lift a reconciliation halt once the matcher's events
                                                     are whole again
"""

from __future__ import annotations

import argparse
import getpass
import json
import time
from dataclasses import asdict

from confluent_kafka import Producer

from perpline.ch.client import get_client
from perpline.ch.migrate import apply_migrations
from perpline.config import producer_config, settings
from perpline.recon.repairs import LedgerLog, Repair, Repairer
from perpline.recon.rules import load_rules

APPLICABLE = ("proposed", "failed")


def repairer() -> Repairer:
    cfg = settings()
    client = get_client(cfg.clickhouse_url)
    apply_migrations(client)
    return Repairer(client, Producer(producer_config(cfg.kafka_bootstrap)), LedgerLog(cfg.kafka_bootstrap), load_rules())


def apply(rep: Repairer, repair_id: str, operator: str) -> Repair:
    """Apply one repair as an operator; refused (ValueError) unless it is proposed or failed and has an action."""
    found = rep.load(repair_id)
    if not found:
        raise ValueError(f"no repair {repair_id}")
    repair = found[-1]
    if repair.status not in APPLICABLE or repair.policy == "never":
        raise ValueError(f"repair {repair_id} is {repair.status} (policy {repair.policy}): nothing to apply")
    return rep.apply(repair, f"operator:{operator}")


def resume(rep: Repairer, symbol: str, operator: str) -> None:
    rep.client.insert("recon_halts", [[symbol, 0, f"resumed by {operator}", "", int(time.time() * 1000)]],
                      column_names=["symbol", "halted", "reason", "repair_id", "updated_ms"])


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="perpline recon")
    sub = parser.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser("repairs", help="list repairs")
    ls.add_argument("--all", action="store_true")
    one = sub.add_parser("repair", help="apply a proposed repair")
    one.add_argument("repair_id")
    one.add_argument("--apply", action="store_true", required=True)
    one.add_argument("--by", default=getpass.getuser())
    res = sub.add_parser("resume", help="lift a reconciliation halt of a symbol")
    res.add_argument("symbol")
    res.add_argument("--by", default=getpass.getuser())
    args = parser.parse_args(argv)
    rep = repairer()
    if args.cmd == "repairs":
        for repair in rep.load(open_only=not args.all):
            print(json.dumps(asdict(repair)))
        return
    if args.cmd == "resume":
        resume(rep, args.symbol, args.by)
        print(json.dumps({"symbol": args.symbol, "halted": False}))
        return
    try:
        repair = apply(rep, args.repair_id, args.by)
    except ValueError as err:
        print(json.dumps({"error": str(err)}))
        raise SystemExit(2) from err
    print(json.dumps(asdict(repair)))
    raise SystemExit(0 if repair.status == "applied" else 1)
