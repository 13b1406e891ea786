"""Demo traders: market makers quote around a seeded random walk pulled toward the index price,
takers cross the spread, and a gambler trades at 100x so liquidations happen within minutes.

They talk to the native REST API over HTTP like any bot, so the book, trades and the
ledger move as soon as the stack is up. Deterministic for a given seed; bounded rate.
"""

from __future__ import annotations

import argparse
import logging
import random
import signal
import time
from dataclasses import dataclass
from decimal import Decimal

import httpx

from perpline.contracts.instruments import Instrument, load_catalog
from perpline.obs import serve_metrics, setup_logging

log = logging.getLogger("perpline.demo")

START_PRICE_TICKS = {"BTCUSDT-PERP": 500_000, "ETHUSDT-PERP": 300_000}  # 50 000.0 and 3 000.00
DEPOSIT = "1000000"
GAMBLER = 9005
GAMBLER_DEPOSIT = "3000"
GAMBLER_LEVERAGE = 100
GAMBLER_REFILL_BELOW = Decimal("500")
GAMBLER_MAX_LOTS = 60  # x the minimum order: about 6,000 USDT of BTC, 60 USDT of margin at 100x
MAX_OPEN_PER_MAKER = 10


@dataclass
class Bot:
    account_id: int
    role: str  # "maker" or "taker"


class Demo:
    def __init__(self, api: str, seed: int, rate_hz: float) -> None:
        self.http = httpx.Client(base_url=api, timeout=10)
        self.rng = random.Random(seed)
        self.rate_hz = rate_hz
        self.mid = dict(START_PRICE_TICKS)
        self.bots = [Bot(9001, "maker"), Bot(9002, "maker"), Bot(9003, "taker"), Bot(9004, "taker"),
                     Bot(GAMBLER, "gambler")]
        self.refills = 0
        self.gamble_side: dict[str, str] = {}
        self.stop = False

    def call(self, method: str, path: str, bot: Bot, **kw: object) -> httpx.Response:
        return self.http.request(method, path, headers={"X-Account-Id": str(bot.account_id)}, **kw)  # type: ignore[arg-type]

    def fund(self) -> None:
        for bot in self.bots:  # idempotent: a restarted demo does not deposit twice
            amount = GAMBLER_DEPOSIT if bot.role == "gambler" else DEPOSIT
            self.http.post("/api/v1/wallet/deposits", json={"asset": "USDT", "amount": amount},
                           headers={"X-Account-Id": str(bot.account_id), "Idempotency-Key": f"demo-fund-{bot.account_id}"})
            if bot.role == "gambler":
                for symbol in load_catalog().instruments:
                    self.call("POST", "/api/v1/leverage", bot, json={"symbol": symbol, "leverage": GAMBLER_LEVERAGE})

    def tick(self) -> None:
        catalog = load_catalog()
        for symbol, inst in catalog.instruments.items():
            self.mid[symbol] = max(inst.tick_units, self.mid[symbol] + self.rng.randint(-5, 5) + self._pull(inst))
            for bot in self.bots:
                if bot.role == "maker":
                    self.quote(bot, inst)
                elif bot.role == "gambler":
                    self.gamble(bot, inst)
                elif self.rng.random() < 0.3:
                    self.take(bot, inst)

    def _pull(self, inst: Instrument) -> int:
        """A tenth of the way toward the index each tick, so the book follows the index (and funding
        stays near the interest rate)."""
        resp = self.http.get("/api/v1/market/mark", params={"symbol": inst.symbol})
        if resp.status_code != 200 or resp.json().get("index_stale"):
            return 0
        return (inst.parse_price(resp.json()["index_price"]) - self.mid[inst.symbol]) // 10

    def gamble(self, bot: Bot, inst: Instrument) -> None:
        """Builds one large 100x position in a random direction (up to GAMBLER_MAX_LOTS x the minimum
        order), holds it until it closes (usually by liquidation), then starts over the other way;
        refilled from the faucet when liquidations ate its money."""
        positions = self.call("GET", "/api/v1/account/positions", bot).json()
        size = next((Decimal(p["size"]) for p in positions if p.get("symbol") == inst.symbol), Decimal(0)) if isinstance(
            positions, list) else Decimal(0)
        if size == 0:
            self.gamble_side[inst.symbol] = "SELL" if self.gamble_side.get(inst.symbol) == "BUY" else "BUY"
            balances = self.call("GET", "/api/v1/account/balances", bot).json()
            available = next((b["available"] for b in balances if b.get("asset") == "USDT"), "0") if isinstance(
                balances, list) else "0"
            if Decimal(str(available)) < GAMBLER_REFILL_BELOW:
                self.refills += 1
                self.http.post("/api/v1/wallet/deposits", json={"asset": "USDT", "amount": GAMBLER_DEPOSIT},
                               headers={"X-Account-Id": str(bot.account_id),
                                        "Idempotency-Key": f"demo-refill-{bot.account_id}-{self.refills}"})
        side = self.gamble_side.setdefault(inst.symbol, "BUY")
        min_lots = max(1, self._min_lots(inst, self.mid[inst.symbol]))
        if abs(size) >= Decimal(inst.format_qty(GAMBLER_MAX_LOTS * min_lots)):
            return
        reach = self.mid[inst.symbol] // 100  # 1 %: takes whatever the makers show
        price = self.mid[inst.symbol] + (reach if side == "BUY" else -reach)
        body = {"symbol": inst.symbol, "side": side, "type": "LIMIT", "time_in_force": "IOC",
                "price": inst.format_price(price), "quantity": inst.format_qty(20 * min_lots)}
        self.call("POST", "/api/v1/orders", bot, json=body)
    def quote(self, bot: Bot, inst: Instrument) -> None:
        opens = self.call("GET", "/api/v1/orders", bot, params={"symbol": inst.symbol}).json()
        if isinstance(opens, list) and len(opens) >= MAX_OPEN_PER_MAKER:
            oldest = min(opens, key=lambda o: o["created_ms"])
            self.call("DELETE", f"/api/v1/orders/{oldest['order_id']}", bot, params={"symbol": inst.symbol})
        side = self.rng.choice(["BUY", "SELL"])
        offset = self.rng.randint(1, 20)
        price = self.mid[inst.symbol] + (-offset if side == "BUY" else offset)
        self.place(bot, inst, side, price, "GTC")

    def take(self, bot: Bot, inst: Instrument) -> None:
        side = self.rng.choice(["BUY", "SELL"])
        price = self.mid[inst.symbol] + (30 if side == "BUY" else -30)
        self.place(bot, inst, side, price, "IOC")

    def place(self, bot: Bot, inst: Instrument, side: str, price_ticks: int, tif: str) -> None:
        lots = self.rng.randint(1, 20) * max(1, self._min_lots(inst, price_ticks))
        body = {"symbol": inst.symbol, "side": side, "type": "LIMIT", "time_in_force": tif,
                "price": inst.format_price(price_ticks), "quantity": inst.format_qty(lots)}
        resp = self.call("POST", "/api/v1/orders", bot, json=body)
        if resp.status_code >= 400:
            log.info("order refused", extra={"status": resp.status_code, "body": resp.text[:200]})

    @staticmethod
    def _min_lots(inst: Instrument, price_ticks: int) -> int:
        per_lot = inst.notional(price_ticks, 1)
        return -(-inst.min_notional // per_lot)

    def run(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stop", True))
        self.fund()
        log.info("demo traders running", extra={"accounts": [b.account_id for b in self.bots]})
        while not self.stop:
            started = time.monotonic()
            try:
                self.tick()
            except httpx.HTTPError as exc:
                log.warning("api call failed", extra={"error": str(exc)})
            time.sleep(max(0.0, 1.0 / self.rate_hz - (time.monotonic() - started)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="perpline demo")
    parser.add_argument("--api", default="http://127.0.0.1:8080")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rate-hz", type=float, default=2.0)
    args = parser.parse_args(argv)
    setup_logging("demo")
    serve_metrics(None)
    Demo(args.api, args.seed, args.rate_hz).run()


if __name__ == "__main__":
    main()

