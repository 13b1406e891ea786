"""Contracts: strict fixed-point parsing, instruments, message codec, generated schemas, topic names."""

from __future__ import annotations

import msgspec
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from perpline import REPO_ROOT
from perpline.config import LOGICAL_TOPICS
from perpline.contracts import codec, schemas
from perpline.contracts import messages as m
from perpline.contracts.codes import Code
from perpline.contracts.instruments import instrument, load_catalog
from perpline.contracts.units import (
    UnitError,
    apply_rate_charge,
    format_amount,
    format_fixed,
    parse_amount,
    parse_fixed,
)


@pytest.mark.parametrize("text,units", [("0", 0), ("1", 10**8), ("0.00000001", 1), ("12.50", 1_250_000_000),
                                        ("1.000000000", 10**8)])
def test_parse_amount_exact(text: str, units: int) -> None:
    assert parse_amount(text) == units


@pytest.mark.parametrize("text,code", [
    ("0.000000001", Code.TOO_PRECISE), ("-1", Code.NEGATIVE_NUMBER), ("NaN", Code.BAD_NUMBER),
    ("inf", Code.BAD_NUMBER), ("-Infinity", Code.BAD_NUMBER), ("1e5", Code.BAD_NUMBER), (" 1", Code.BAD_NUMBER),
    ("1.", Code.BAD_NUMBER), (".5", Code.BAD_NUMBER), ("+1", Code.BAD_NUMBER), ("", Code.BAD_NUMBER),
    ("1" * 31, Code.NUMBER_TOO_LARGE), ("9" * 100, Code.BAD_NUMBER), ("0x10", Code.BAD_NUMBER), ("١", Code.BAD_NUMBER),
])
def test_parse_amount_refuses(text: str, code: Code) -> None:
    with pytest.raises(UnitError) as err:
        parse_amount(text)
    assert err.value.code == code


@given(st.integers(min_value=-(10**29), max_value=10**29), st.integers(min_value=0, max_value=12))
def test_format_parse_round_trip(units: int, decimals: int) -> None:
    assert parse_fixed(format_fixed(units, decimals), decimals, allow_negative=True) == units


def test_fee_rounds_in_the_exchanges_favour() -> None:
    assert apply_rate_charge(1, 50_000) == 1  # 0.0005 of one unit rounds up to one unit
    assert apply_rate_charge(10**8, 50_000) == 50_000
    assert format_amount(-5) == "-0.00000005"


def test_instrument_filters_and_conversions() -> None:
    btc = instrument("BTCUSDT-PERP")
    assert instrument("BTCUSDT") is btc
    assert btc.parse_price("50000.10") == 500_001
    assert btc.format_price(500_001) == "50000.10"
    assert btc.parse_qty("0.005") == 5 and btc.format_qty(5) == "0.005"
    assert btc.notional(500_000, 1) == parse_amount("50")
    for bad, code in (("50000.05", Code.PRICE_NOT_ON_TICK), ("0", Code.NOT_POSITIVE), ("-1", Code.NEGATIVE_NUMBER)):
        with pytest.raises(UnitError) as err:
            btc.parse_price(bad)
        assert err.value.code == code
    assert btc.check_filters(500_000, 1) == Code.NOTIONAL_TOO_SMALL
    assert btc.check_filters(500_000, 2) == Code.OK
    assert btc.check_filters(500_000, btc.max_qty_lots + 1) == Code.QTY_TOO_LARGE
    with pytest.raises(UnitError):
        instrument("DOGEUSDT-PERP")


def test_both_instruments_are_binance_like() -> None:
    catalog = load_catalog()
    assert set(catalog.instruments) == {"BTCUSDT-PERP", "ETHUSDT-PERP"}
    for inst in catalog.instruments.values():
        assert inst.maker_fee_e8 < inst.taker_fee_e8
        caps = [b.notional_cap for b in inst.brackets]
        assert caps == sorted(caps) and inst.brackets[0].max_leverage == inst.max_leverage


def test_codec_round_trip_and_refusals() -> None:
    msg = m.PlaceOrder(trace_id="t", causation_id="c", ts_ms=1, request_id="r", account_id=1, symbol="BTCUSDT-PERP",
                       side="BUY", order_type="LIMIT", price="1", quantity="1", client_order_id="x")
    assert codec.decode("account.commands", codec.encode(msg)) == msg
    for bad in (b"not json", b'{"type":"place_order"}', b'{"type":"nope","trace_id":"t"}', b"[]",
                codec.encode(msg).replace(b'"BUY"', b'"UP"')):
        with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)):
            codec.decode("account.commands", bad)
    with pytest.raises(ValueError):
        codec.decode("account.commands", b" " * (codec.MAX_MESSAGE_BYTES + 1))


def test_every_message_carries_trace_and_causation() -> None:
    for union in m.TOPIC_TYPES.values():
        for cls in getattr(union, "__args__", (union,)):
            fields = set(cls.__struct_fields__)
            assert {"trace_id", "causation_id"} <= fields, cls


def test_schemas_are_fresh() -> None:
    stale = schemas.stale()
    assert not stale, f"run `make schemas`: stale {stale}"


def test_topic_names_match_topics_yaml() -> None:
    doc = yaml.safe_load((REPO_ROOT / "redpanda" / "topics.yaml").read_text())
    assert set(doc["topics"]) == set(LOGICAL_TOPICS)
    assert set(m.TOPIC_TYPES) <= set(LOGICAL_TOPICS)
    for spec in doc["topics"].values():
        assert spec["partitions"] >= 1
    assert doc["defaults"]["configs"]["retention.ms"] == "-1"


def test_sequence_rule_drops_seen_and_flags_gaps() -> None:
    from perpline.contracts import sequence

    assert sequence.accept(0, 1) == sequence.Verdict(sequence.ACCEPT, 1)
    assert sequence.accept(5, 5).kind == sequence.DUPLICATE and not sequence.accept(5, 3).apply
    gap = sequence.accept(5, 8)
    assert gap.kind == sequence.GAP and gap.apply and gap.last_seq == 8
