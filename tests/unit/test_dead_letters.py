"""The one dead-letter builder and the topic handles' refusal of a missing topic, without a broker."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from quixstreams.context import copy_context, set_message_context
from quixstreams.models.messagecontext import MessageContext

from perpline.contracts import codec, topics
from perpline.contracts.dead_letters import MAX_ERROR_CHARS, MAX_PAYLOAD_BYTES, dead_letter
from perpline.pipelines import accounts, io
from perpline.pipelines.ledger_sink import TableSink
from tests.unit.test_processor_steps import FakeState


def test_a_letter_says_where_its_input_was_and_keeps_it() -> None:
    letter = dead_letter("accounts", "p-account.commands", 3, 41, b'{"x":1}', "bad", now_ms=7)
    assert (letter.source, letter.topic, letter.partition, letter.offset) == ("accounts", "p-account.commands", 3, 41)
    assert letter.causation_id == "p-account.commands:3:41" and letter.ts_ms == 7
    assert (letter.error, letter.payload, letter.trace_id) == ("bad", '{"x":1}', "")
    assert codec.decode("dead.letters", codec.encode(letter)) == letter  # a valid dead.letters record


def test_a_letter_is_bounded_and_takes_any_bytes() -> None:
    letter = dead_letter("matcher", "orders", 0, 0, b"\xff" + b"a" * (2 * MAX_PAYLOAD_BYTES), "e" * 5000)
    assert len(letter.error) == MAX_ERROR_CHARS
    assert letter.payload == "\ufffd" + "a" * (MAX_PAYLOAD_BYTES - 1)
    assert dead_letter("matcher", "orders", 0, 0, None, "").payload == ""


def in_message(topic: str, partition: int, offset: int, fn: Any, *args: Any) -> Any:
    """Run fn as Quix runs a step: inside the input's message context."""
    ctx = copy_context()
    ctx.run(set_message_context, MessageContext(topic, partition, offset, 0))
    return ctx.run(fn, *args)


def test_a_processor_letter_keeps_the_inputs_partition_and_offset() -> None:
    (out,) = in_message("p-account.commands", 2, 17, accounts.step, b"not json", "5", FakeState())
    letter = codec.decode("dead.letters", out["v"])
    assert (out["t"], out["k"]) == ("dead.letters", "accounts")
    assert (letter.topic, letter.partition, letter.offset) == ("p-account.commands", 2, 17)
    assert letter.causation_id == "p-account.commands:2:17" and letter.payload == "not json"


def test_a_ledger_sink_letter_keeps_the_inputs_partition_and_offset() -> None:
    sent: list[dict[str, Any]] = []
    sink = TableSink("unused", "ledger_postings", "ledger.entries")
    sink.dead_producer = SimpleNamespace(produce=lambda topic, key, value: sent.append(  # type: ignore[assignment]
        {"topic": topic, "key": key, "value": value}), flush=lambda timeout: 0)
    assert sink._rows(b"{broken", 4, 99) == []
    (one,) = sent
    letter = codec.decode("dead.letters", one["value"])
    assert (one["topic"], one["key"]) == (topics.physical("dead.letters"), b"ledger-sink")
    assert (letter.topic, letter.partition, letter.offset) == (topics.physical("ledger.entries"), 4, 99)


class FakeApp:
    """What the topic handles read of a Quix Application, recording the topics it is asked for."""

    def __init__(self) -> None:
        self.config = SimpleNamespace(broker_address="broker:9092", consumer_group="g")
        self.made: list[str] = []

    def topic(self, name: str, **_kwargs: Any) -> str:
        self.made.append(name)
        return name


def test_a_topic_missing_on_the_broker_is_refused_not_created(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(io, "broker_topics", lambda bootstrap: {topics.physical("account.commands")})
    app = FakeApp()
    with pytest.raises(io.TopicMissing, match=topics.physical("orders")):
        io.output_topics(app, ["account.commands", "orders"])  # type: ignore[arg-type]
    with pytest.raises(io.TopicMissing):
        io.input_topic(app, "orders")  # type: ignore[arg-type]
    with pytest.raises(io.TopicMissing, match="topics.yaml"):
        io.input_topic(app, "no.such.topic")  # type: ignore[arg-type]
    assert app.made == []  # Quix was never asked (it would create the topic with defaults)
    assert io.input_topic(app, "account.commands") == topics.physical("account.commands")  # type: ignore[arg-type]
