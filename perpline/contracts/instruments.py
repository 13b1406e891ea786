"""Instruments: loaded once from instruments.yaml into integer-unit value objects.

Every filter (tick, lot, min/max quantity, min notional, leverage, fees, brackets)
lives here, so the API, the accounts processor and the matcher runner apply the
same rule.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from perpline.contracts.codes import Code
from perpline.contracts.units import (
    AMOUNT_DECIMALS,
    AMOUNT_SCALE,
    UnitError,
    format_fixed,
    parse_amount,
    parse_fixed,
    parse_rate,
)

INSTRUMENTS_FILE = Path(__file__).with_name("instruments.yaml")
PPM = 1_000_000
MARKET_PROTECTION_PPM = 50_000  # a MARKET order fills at most 5% beyond the best price at arrival


def _decimals_of(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


@dataclass(frozen=True)
class Bracket:
    notional_cap: int  # amount units
    max_leverage: int
    maint_margin_e8: int
    maint_amount: int  # amount units


@dataclass(frozen=True)
class Instrument:
    symbol: str
    binance_symbol: str
    base_asset: str
    quote_asset: str
    margin_asset: str
    price_decimals: int
    tick_units: int  # tick size in 10^-price_decimals
    qty_decimals: int
    lot_units: int  # lot size in 10^-qty_decimals
    min_qty_lots: int
    max_qty_lots: int
    market_max_qty_lots: int
    min_notional: int  # amount units
    max_leverage: int
    default_leverage: int
    maker_fee_e8: int
    taker_fee_e8: int
    price_band_e8: int
    max_open_orders: int
    brackets: tuple[Bracket, ...]
    interest_e8: int = 10_000  # per funding interval
    funding_clamp_e8: int = 50_000
    funding_cap_e8: int = 750_000
    index_start_ticks: int = 0  # the demo random walk's start

    # --- conversions --------------------------------------------------------------
    def parse_price(self, text: str) -> int:
        """Decimal price string -> integer ticks; refuses prices off the tick grid."""
        units = parse_fixed(text, self.price_decimals, what="price")
        if units <= 0:
            raise UnitError(Code.NOT_POSITIVE, "price must be greater than zero")
        if units % self.tick_units:
            raise UnitError(Code.PRICE_NOT_ON_TICK, f"price {text} is not a multiple of the tick size {self.tick_size}")
        return units // self.tick_units

    def format_price(self, price_ticks: int) -> str:
        return format_fixed(price_ticks * self.tick_units, self.price_decimals)

    def parse_qty(self, text: str, *, allow_zero: bool = False) -> int:
        """Decimal quantity string -> integer lots; refuses quantities off the lot grid."""
        units = parse_fixed(text, self.qty_decimals, what="quantity")
        if units < 0 or (units == 0 and not allow_zero):
            raise UnitError(Code.NOT_POSITIVE, "quantity must be greater than zero")
        if units % self.lot_units:
            raise UnitError(Code.QTY_NOT_ON_LOT, f"quantity {text} is not a multiple of the lot size {self.lot_size}")
        return units // self.lot_units

    def parse_signed_qty(self, text: str) -> int:
        """A position size ("-0.010": short) -> signed lots."""
        lots = self.parse_qty(text.removeprefix("-"), allow_zero=True)
        return -lots if text.startswith("-") else lots

    def format_qty(self, qty_lots: int) -> str:
        return format_fixed(qty_lots * self.lot_units, self.qty_decimals)

    @property
    def tick_size(self) -> str:
        return format_fixed(self.tick_units, self.price_decimals)

    @property
    def lot_size(self) -> str:
        return format_fixed(self.lot_units, self.qty_decimals)

    @property
    def amount_per_tick_lot(self) -> int:
        """Amount units (1e-8 of the margin asset) of one lot at a price of one tick."""
        exponent = AMOUNT_DECIMALS - self.price_decimals - self.qty_decimals
        assert exponent >= 0, "instrument precision exceeds the amount scale"
        scale: int = 10**exponent
        return self.tick_units * self.lot_units * scale

    def notional(self, price_ticks: int, qty_lots: int) -> int:
        """Notional value in amount units; exact (no rounding needed by construction)."""
        return price_ticks * qty_lots * self.amount_per_tick_lot

    def check_filters(self, price_ticks: int, qty_lots: int) -> Code:
        """The static order filters; returns Code.OK or the first violated rule."""
        if qty_lots < self.min_qty_lots:
            return Code.QTY_TOO_SMALL
        if qty_lots > self.max_qty_lots:
            return Code.QTY_TOO_LARGE
        if price_ticks > 0 and self.notional(price_ticks, qty_lots) < self.min_notional:
            return Code.NOTIONAL_TOO_SMALL
        return Code.OK

    def band_ticks(self, reference_ticks: int) -> tuple[int, int]:
        """(lowest, highest) LIMIT price allowed around a reference price: the price band, inclusive
        (low rounded up, high rounded down to the tick)."""
        assert reference_ticks > 0
        low = -((-reference_ticks * (AMOUNT_SCALE - self.price_band_e8)) // AMOUNT_SCALE)
        high = reference_ticks * (AMOUNT_SCALE + self.price_band_e8) // AMOUNT_SCALE
        return low, high

    def market_bound_ticks(self, side: str, best_opposite_ticks: int) -> int:
        """The worst price a MARKET order may fill at: MARKET_PROTECTION_PPM beyond the best opposite
        price at arrival (buy rounded down, sell rounded up, at least one tick) -- the matcher core's
        rule for its own MARKET type."""
        assert best_opposite_ticks > 0
        if side == "BUY":
            return best_opposite_ticks * (PPM + MARKET_PROTECTION_PPM) // PPM
        return max(1, -((-best_opposite_ticks * (PPM - MARKET_PROTECTION_PPM)) // PPM))

    def bracket_for(self, notional: int) -> Bracket:
        for bracket in self.brackets:
            if notional <= bracket.notional_cap:
                return bracket
        return self.brackets[-1]

    def max_notional_at(self, leverage: int) -> int:
        """The largest position notional (amount units) a leverage may carry: the cap of the last
        bracket whose max leverage is still >= `leverage` (Binance's initialLeverage / notionalCap:
        at 125x BTC only the first bracket's 50,000 USDT). 0: no bracket allows that leverage."""
        return max((b.notional_cap for b in self.brackets if b.max_leverage >= leverage), default=0)


def _bracket(raw: dict[str, Any]) -> Bracket:
    return Bracket(
        notional_cap=parse_amount(str(raw["notional_cap"])),
        max_leverage=int(raw["max_leverage"]),
        maint_margin_e8=parse_rate(str(raw["maint_margin_rate"])),
        maint_amount=parse_amount(str(raw["maint_amount"])),
    )


def _instrument(symbol: str, raw: dict[str, Any]) -> Instrument:
    tick, lot = str(raw["tick_size"]), str(raw["lot_size"])
    price_decimals, qty_decimals = _decimals_of(tick), _decimals_of(lot)

    def lots(text: object) -> int:
        return parse_fixed(str(text), qty_decimals) // parse_fixed(lot, qty_decimals)

    inst = Instrument(
        symbol=symbol,
        binance_symbol=str(raw["binance_symbol"]),
        base_asset=str(raw["base_asset"]),
        quote_asset=str(raw["quote_asset"]),
        margin_asset=str(raw["margin_asset"]),
        price_decimals=price_decimals,
        tick_units=parse_fixed(tick, price_decimals),
        qty_decimals=qty_decimals,
        lot_units=parse_fixed(lot, qty_decimals),
        min_qty_lots=lots(raw["min_qty"]),
        max_qty_lots=lots(raw["max_qty"]),
        market_max_qty_lots=lots(raw["market_max_qty"]),
        min_notional=parse_amount(str(raw["min_notional"])),
        max_leverage=int(raw["max_leverage"]),
        default_leverage=int(raw["default_leverage"]),
        maker_fee_e8=parse_rate(str(raw["maker_fee_rate"])),
        taker_fee_e8=parse_rate(str(raw["taker_fee_rate"])),
        price_band_e8=parse_rate(str(raw["price_band_rate"])),
        max_open_orders=int(raw["max_open_orders"]),
        brackets=tuple(_bracket(b) for b in raw["brackets"]),
        interest_e8=parse_rate(str(raw.get("interest_rate", "0.0001"))),
        funding_clamp_e8=parse_rate(str(raw.get("funding_clamp", "0.0005"))),
        funding_cap_e8=parse_rate(str(raw.get("funding_cap", "0.0075"))),
        index_start_ticks=parse_fixed(str(raw.get("index_start", "0")), price_decimals) // parse_fixed(tick, price_decimals),
    )
    assert inst.amount_per_tick_lot > 0
    assert 1 <= inst.default_leverage <= inst.max_leverage
    assert inst.max_notional_at(inst.max_leverage) > 0, "every allowed leverage has a bracket"
    return inst


@dataclass(frozen=True)
class Catalog:
    assets: dict[str, int]
    instruments: dict[str, Instrument]
    by_binance: dict[str, Instrument]

    def get(self, symbol: str) -> Instrument | None:
        return self.instruments.get(symbol) or self.by_binance.get(symbol)


@lru_cache(maxsize=4)
def load_catalog(path: str | None = None) -> Catalog:
    file = Path(path or os.environ.get("PERPLINE_INSTRUMENTS_FILE") or INSTRUMENTS_FILE)
    raw = yaml.safe_load(file.read_text())
    instruments = {sym: _instrument(sym, spec) for sym, spec in raw["instruments"].items()}
    assets = {name: int(spec["decimals"]) for name, spec in raw["assets"].items()}
    assert all(dec == AMOUNT_DECIMALS for dec in assets.values()), "all assets use the 1e-8 amount scale"
    return Catalog(assets, instruments, {i.binance_symbol: i for i in instruments.values()})


def instrument(symbol: str) -> Instrument:
    found = load_catalog().get(symbol)
    if found is None:
        raise UnitError(Code.UNKNOWN_SYMBOL, f"unknown symbol {symbol!r}")
    return found


__all__ = ["AMOUNT_SCALE", "Bracket", "Catalog", "Instrument", "instrument", "load_catalog"]
