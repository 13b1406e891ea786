"""The valuation formulas (perpline.risk.formulas) with hand-computed values: BTCUSDT-PERP has a tick of
0.10 and a lot of 0.001, so one lot at one tick is 10,000 amount units (1e-4 USDT)."""

from __future__ import annotations

from perpline.contracts.instruments import instrument
from perpline.contracts.units import format_amount, format_exact
from perpline.risk import formulas as f

BTC = instrument("BTCUSDT-PERP")
USDT = 10**8


def test_the_average_price_is_exact_to_8_decimals() -> None:
    # 0.009 at 49923.5 and 0.003 at 49923.4: (449311.5 + 149770.2) / 12 = 49923.475
    value = 9 * 499_235 + 3 * 499_234
    assert f.average_price_e8(BTC, value, 12) == 4_992_347_500_000
    assert format_exact(f.average_price_e8(BTC, value, 12), 8, BTC.price_decimals) == "49923.475"
    # 0.001 at 50000.0 and 0.002 at 49999.9: 149999.8 / 3 = 49999.9333..., rounded down at 8 decimals
    assert f.average_price_e8(BTC, 500_000 + 2 * 499_999, 3) == 4_999_993_333_333
    assert format_exact(f.average_price_e8(BTC, 500_000 * 10, 10), 8, BTC.price_decimals) == "50000.00"
    assert f.average_price_e8(BTC, 0, 0) == 0


def test_unrealised_pnl_comes_from_the_exact_entry_value() -> None:
    cost = 1000 * USDT  # 0.020 bought for 1,000 USDT; mark 51,000: value 1,020
    assert f.unrealized_pnl(BTC, 20, cost, 510_000) == 20 * USDT
    assert f.unrealized_pnl(BTC, -20, cost, 510_000) == -20 * USDT
    assert f.unrealized_pnl(BTC, 0, 0, 510_000) == 0
    # 0.001 at 50000.0 + 0.002 at 49999.9: cost 149.9998; at 50,000 the PnL is 0.0002 USDT exactly
    # (the entry price rounded to the tick, 49999.93, would make it 0.00021)
    assert format_amount(f.unrealized_pnl(BTC, 3, 14_999_980_000, 500_000)) == "0.00020000"


def test_maintenance_margin_uses_the_bracket_of_the_entry_value() -> None:
    # first bracket (up to 50,000 USDT): 0.4 %, nothing deducted; 1,020 x 0.4 % = 4.08
    assert f.maint_margin(BTC, 20, 1000 * USDT, 510_000) == 408_000_000
    assert f.maint_margin(BTC, -20, 1000 * USDT, 510_000) == 408_000_000
    # 1.200 for 60,000 USDT: second bracket, 0.5 % less 50: 60,000 x 0.5 % - 50 = 250
    assert f.maint_margin(BTC, 1200, 60_000 * USDT, 500_000) == 250 * USDT
    # ... and after a crash to 1,000: 1,200 x 0.5 % - 50 < 0, so 0
    assert f.maint_margin(BTC, 1200, 60_000 * USDT, 10_000) == 0
    assert f.maint_margin(BTC, 0, 0, 500_000) == 0


def test_the_adl_indicator_is_the_fifth_of_its_side_ranking() -> None:
    from fractions import Fraction

    from perpline.risk import adl

    scores = [Fraction(n) for n in range(10)]
    assert [adl.quantile(s, scores) for s in scores] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert adl.quantile(Fraction(1), [Fraction(1)]) == 4  # alone on its side: first in line
    assert adl.quantile(adl.LAST, [adl.LAST, Fraction(1)]) == 0
