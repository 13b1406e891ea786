"""Demo traders: market makers quote around a seeded random walk, takers cross the spread.

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

import httpx

from perpline.contracts.instruments import Instrument, load_catalog
from perpline.obs import serve_metrics, setup_logging

log = logging.getLogger("perpline.demo")

START_PRICE_TICKS = {"BTCUSDT-PERP": 500_000, "ETHUSDT-PERP": 300_000}  # 50 000.0 and 3 000.00
DEPOSIT = "1000000"
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
        self.bots = [Bot(9001, "maker"), Bot(9002, "maker"), Bot(9003, "taker"), Bot(9004, "taker")]
        self.stop = False

    def call(self, method: str, path: str, bot: Bot, **kw: object) -> httpx.Response:
        return self.http.request(method, path, headers={"X-Account-Id": str(bot.account_id)}, **kw)  # type: ignore[arg-type]

    def fund(self) -> None:
        for bot in self.bots:  # idempotent: a restarted demo does not deposit twice
            self.http.post("/api/v1/wallet/deposits", json={"asset": "USDT", "amount": DEPOSIT},
                           headers={"X-Account-Id": str(bot.account_id), "Idempotency-Key": f"demo-fund-{bot.account_id}"})

    def tick(self) -> None:
        catalog = load_catalog()
        for symbol, inst in catalog.instruments.items():
            self.mid[symbol] = max(inst.tick_units, self.mid[symbol] + self.rng.randint(-5, 5))
            for bot in self.bots:
                if bot.role == "maker":
                    self.quote(bot, inst)
                elif self.rng.random() < 0.3:
                    self.take(bot, inst)

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
