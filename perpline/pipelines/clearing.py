"""clearing: matcher.events (key: symbol) -> one settlement leg per account on account.commands.

Stateful per symbol: the last cleared seq, so a re-emitted event is dropped.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter
from quixstreams import Application
from quixstreams.dataframe import StreamingDataFrame
from quixstreams.state import State

from perpline.pipelines import io
from perpline.pipelines.clearing_logic import legs_for
from perpline.pipelines.runtime import run_stateful

SOURCE = "clearing"
STATE_KEY = "last_seq"
LEGS = Counter("perpline_clearing_legs_total", "settlement legs emitted", ["type"])
DROPPED = Counter("perpline_clearing_duplicates_total", "matcher events dropped as already cleared")


def step(raw: bytes, state: State) -> list[dict[str, Any]]:
    event, dead = io.decode_or_dead_letter(SOURCE, "matcher.events", raw)
    if dead is not None:
        return [dead]
    last = int(state.get(STATE_KEY) or 0)
    legs, new_last = legs_for(event, last)
    if new_last == last:
        DROPPED.inc()
        return []
    state.set(STATE_KEY, new_last)
    for leg in legs:
        LEGS.labels(type(leg).__name__).inc()
    return [io.routed("account.commands", str(leg.account_id), leg) for leg in legs]


def build(app: Application) -> StreamingDataFrame:
    sdf = app.dataframe(io.input_topic(app, "matcher.events"))
    sdf = sdf.apply(lambda value, state: step(value, state), stateful=True, expand=True)
    return io.to_topics(sdf, io.output_topics(app, ["account.commands", "dead.letters"]))


def main(argv: list[str] | None = None) -> None:
    run_stateful("clearing", "perpline-clearing", build, argv)


if __name__ == "__main__":
    main()
