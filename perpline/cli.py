"""The `perpline` command: one entry point for every process and tool.

    perpline up [--demo]          run the whole exchange on this machine
    perpline api | matcher | accounts | ledger-sink | risk | index-feed | recon | demo | broker | clickhouse
    perpline recon --full --once  one full reconciliation pass: breaks as JSON lines, exit 1 if any
    perpline topics [--json]      topics with partitions, offsets, records, consumer groups' committed offsets and lag
    perpline topics tail TOPIC    records as pretty JSON [--from-beginning|--last N] [--trace-id X] [--key K] [--follow]
    perpline schemas              regenerate redpanda/schemas/*.json from the message types
    perpline admin ...            users, API keys, wallet deposits (perpline admin -h)
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "up": "perpline.stack.up",
    "api": "perpline.api.main",
    "matcher": "perpline.matcher.runner",
    "accounts": "perpline.pipelines.accounts",
    "ledger-sink": "perpline.pipelines.ledger_sink",
    "risk": "perpline.risk.runner",
    "index-feed": "perpline.risk.index_feed",
    "recon": "perpline.recon.runner",
    "demo": "perpline.demo.traders",
    "broker": "perpline.broker.launch",
    "clickhouse": "perpline.ch.server",
    "schemas": "perpline.contracts.schemas",
    "admin": "perpline.auth.admin",
    "topics": "perpline.topics_tool",
}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help") or args[0] not in COMMANDS:
        print(__doc__.strip())
        print("\ncommands: " + ", ".join(COMMANDS))
        sys.exit(0 if args and args[0] in ("-h", "--help") else 2)
    module = importlib.import_module(COMMANDS[args[0]])
    sys.argv = [f"perpline {args[0]}", *args[1:]]
    module.main(args[1:])


if __name__ == "__main__":
    main()
