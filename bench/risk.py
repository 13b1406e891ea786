"""Risk benchmark: a mark tick against 1k, 100k and 1M open positions, and a funding run over 1M.

    python -m bench.risk [--sizes 1000,100000,1000000] [--crossed 10]

For each size: positions with random liquidation prices go into the liquidation book
(perpline.risk.liquidations); a mark tick that crosses exactly `--crossed` of them is timed (median
of many) next to the baseline measured in the same run, a scan of every position with the same
`crossed` rule. The book's time must stay flat as the count grows; the scan's grows with it.
Funding: the payment of 1M positions (perpline.risk.formulas.funding_payment) and the FundingCharge
messages the risk process would send, encoded. Prints one JSON object; nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

from perpline.contracts import codec
from perpline.contracts import messages as m
from perpline.contracts.instruments import instrument
from perpline.contracts.units import format_amount, format_rate
from perpline.risk import formulas as f
from perpline.risk.liquidations import LiquidationBook

SYMBOL = "BTCUSDT-PERP"


def positions(n: int, seed: int) -> list[tuple[int, int, int]]:
    """(account, signed size lots, liquidation ticks): half long (liq below 50000), half short (above)."""
    rng = random.Random(seed)
    out = []
    for account in range(n):
        if account % 2:
            out.append((account, rng.randint(1, 100), rng.randint(300_000, 490_000)))
        else:
            out.append((account, -rng.randint(1, 100), rng.randint(510_000, 700_000)))
    return out


def _median_s(fn: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def tick(n: int, crossed: int) -> dict[str, object]:
    rows = positions(n, seed=n)
    book = LiquidationBook()
    started = time.perf_counter()
    for account, size, liq in rows:
        book.upsert(account, size, liq, version=1)
    build_s = time.perf_counter() - started
    longs = sorted(liq for _, size, liq in rows if size > 0)
    mark = longs[-crossed]  # the mark falls to the `crossed`-th highest long liquidation price
    crossed = sum(1 for liq in longs if liq >= mark)  # ties at the mark cross too
    assert len(book.crossed(mark)) == crossed
    book_s = _median_s(lambda: book.crossed(mark), repeat=200)
    scan_s = _median_s(lambda: [a for a, size, liq in rows if f.crossed(size, liq, mark)], repeat=3 if n >= 100_000 else 20)
    return {"positions": n, "crossed": crossed, "tick_us": round(book_s * 1e6, 2), "scan_us": round(scan_s * 1e6, 1),
            "scan_vs_book": round(scan_s / book_s, 1), "upsert_us": round(build_s / n * 1e6, 2)}


def funding(n: int) -> dict[str, object]:
    inst = instrument(SYMBOL)
    rng = random.Random(1)
    sizes = []
    for _ in range(n // 2):  # longs and shorts in pairs: open interest nets to zero, as in a real round
        lots = rng.randint(1, 1000)
        sizes += [lots, -lots]
    mark, rate = 500_003, 12_345
    started = time.perf_counter()
    amounts = [f.funding_payment(inst, size, mark, rate) for size in sizes]
    compute_s = time.perf_counter() - started
    started = time.perf_counter()
    for account, (size, amount) in enumerate(zip(sizes, amounts, strict=True)):
        codec.encode(m.FundingCharge(trace_id="", causation_id="bench", ts_ms=0, request_id=f"funding:{SYMBOL}:0:{account}",
                                     account_id=account, symbol=SYMBOL, funding_time_ms=0, rate=format_rate(rate),
                                     mark_price="50000.0", size=inst.format_qty(abs(size)), amount=format_amount(amount)))
    encode_s = time.perf_counter() - started
    return {"positions": n, "payments_s": round(compute_s, 3), "messages_s": round(encode_s, 3),
            "total_s": round(compute_s + encode_s, 3),
            "rounding_residue": format_amount(sum(amounts))}  # what FUNDING_CLEARING keeps: payers round up


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,100000,1000000")
    parser.add_argument("--crossed", type=int, default=10)
    parser.add_argument("--funding", type=int, default=1_000_000)
    args = parser.parse_args()
    ticks = [tick(int(n), args.crossed) for n in args.sizes.split(",")]
    growth = ticks[-1]["tick_us"] / ticks[0]["tick_us"]  # type: ignore[operator]
    print(json.dumps({"mark_tick": ticks, "tick_growth_smallest_to_largest": round(growth, 2),
                      "funding": funding(args.funding)}))


if __name__ == "__main__":
    main()
