"""Writes notebooks/audit.ipynb and notebooks/market.ipynb from the cells below (the notebooks are
committed; rerun this after editing a cell: `python notebooks/build.py`)."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent

SETUP = '''import os
from decimal import Decimal

import matplotlib.pyplot as plt
import polars as pl

from perpline.audit import Audit
from perpline.ch.users import redacted

# the read-only URL `perpline up` prints (http://auditor:PASSWORD@127.0.0.1:18123), or your ClickHouse's
CLICKHOUSE = os.environ.get("PERPLINE_CLICKHOUSE_URL", "http://127.0.0.1:18123")
audit = Audit.connect(CLICKHOUSE)
ch = audit.client
print("ledger at", redacted(CLICKHOUSE))'''

AUDIT = [
    new_markdown_cell("# Audit: the exchange's books\n\nEverything below is read from the double-entry ledger in "
                      "ClickHouse (`ledger_postings`), and from the reconciler's results (`recon_runs`, `recon_breaks`). "
                      "Amounts are exact decimals. Sign convention (docs/ledger.md): debit positive; users' balances, "
                      "fee revenue and the insurance fund are credit balances, shown here as positive numbers.\n\n"
                      "Set `PERPLINE_CLICKHOUSE_URL` to the exchange's ClickHouse: for the local stack, the read-only URL "
                      "`perpline up` prints (user `auditor`, with its generated password)."),
    new_code_cell(SETUP),
    new_markdown_cell("## Trial balance\n\nEvery ledger account's balance per asset. The column sums to zero: every "
                      "debit has its credit."),
    new_code_cell('''tb = audit.trial_balance()
rows = [{"asset": a, "ledger account": k, "balance": str(v)} for a, accounts in tb.items() for k, v in accounts.items()]
trial = pl.DataFrame(rows, schema={"asset": pl.Utf8, "ledger account": pl.Utf8, "balance": pl.Utf8})
for asset, accounts in tb.items():
    print(asset, "sum of all balances:", sum(accounts.values(), Decimal(0)))
    assert sum(accounts.values(), Decimal(0)) == 0
trial.filter(~pl.col("ledger account").str.starts_with("user:")).head(20)'''),
    new_markdown_cell("## Balance sheet, now and at a past instant\n\nAssets (coins held in the hot wallet) equal "
                      "liabilities (what users hold: free, frozen for orders, margin of positions) plus equity (fee "
                      "revenue, insurance fund, funding and PnL clearing)."),
    new_code_cell('''def sheet_table(sheet):
    out = []
    for asset, s in sheet.items():
        out.append({"asset": asset, "assets": str(s["assets"]["total"]), "liabilities": str(s["liabilities"]["total"]),
                    "equity": str(s["equity"]["total"]), "balanced": s["balanced"]})
    return pl.DataFrame(out)

now = audit.balance_sheet()
first_ms, last_ms = ch.query("SELECT min(ts_ms), max(ts_ms) FROM ledger_postings FINAL").result_rows[0]
midpoint_ms = (first_ms + last_ms) // 2
then = audit.balance_sheet(at_ms=midpoint_ms)
assert all(s["balanced"] for s in now.values()) and all(s["balanced"] for s in then.values())
print("now")
print(sheet_table(now))
print("at", midpoint_ms)
print(sheet_table(then))
{asset: {k: str(v) for k, v in s["liabilities"]["by_kind"].items()} for asset, s in now.items()}'''),
    new_markdown_cell("## Reconciliation history\n\nEach run of the reconciler and what it found; a clean exchange "
                      "shows runs with zero breaks."),
    new_code_cell('''runs = pl.DataFrame(audit.recon_runs(500), schema=["run_id", "mode", "started_ms", "finished_ms", "breaks"],
                    orient="row")
breaks = pl.DataFrame(audit.recon_breaks(1000),
                      schema=["found_ms", "rule", "severity", "asset", "account_id", "symbol", "journal_id", "detail"],
                      orient="row")
print(len(runs), "runs,", len(breaks), "breaks")
if len(runs):
    fig, ax = plt.subplots(figsize=(8, 2.5))
    ax.bar(range(len(runs)), runs.reverse()["breaks"].to_list())
    ax.set_title("breaks per reconciliation run (oldest left)")
    ax.set_xlabel("run")
    ax.set_ylabel("breaks")
    plt.show()
breaks.group_by("rule").len().sort("len", descending=True) if len(breaks) else breaks'''),
    new_markdown_cell("## Repairs\n\nEvery repair of a break (docs/reconciliation.md): which break and rule, the "
                      "action and its policy, by whom, when, the RECON_REPAIR journals it posted (or the journals it "
                      "restored), those it voided, and the re-check that confirmed the break gone."),
    new_code_cell('''repairs = pl.DataFrame([{k: (", ".join(v) if isinstance(v, list) else str(v)) for k, v in r.items()}
                        for r in audit.repairs()])
print(len(repairs), "repairs")
repairs.select("rule", "action", "policy", "status", "actor", "journal_ids", "voided", "recheck") if len(repairs) else repairs'''),
    new_markdown_cell("## An account's statement\n\nThe most active account: opening balance, every journal with its "
                      "running balance, closing balance; the closing balance is checked against the ledger."),
    new_code_cell('''account = ch.query("SELECT account_id FROM ledger_postings FINAL WHERE ledger_account LIKE 'user:%' "
                   "GROUP BY account_id ORDER BY count() DESC LIMIT 1").result_rows[0][0]
st = audit.statement(account, 0, 2**62)
assert st["agrees_with_ledger"]
lines = pl.DataFrame([{**line, "change": str(line["change"]), "balance": str(line["balance"])} for line in st["lines"]])
print("account", account, "opening", st["opening"], "closing", st["closing"], "lines", len(lines))
fig, ax = plt.subplots(figsize=(8, 2.5))
ax.step([line["ts_ms"] for line in st["lines"]], [float(line["balance"]) for line in st["lines"]], where="post")  # plotting only
ax.set_title(f"account {account}: wallet balance")
ax.set_xlabel("time (ms)")
plt.show()
lines.select("ts_ms", "ref_type", "ref_id", "change", "balance").head(15)'''),
    new_markdown_cell("## Top fee payers"),
    new_code_cell('''fees = pl.DataFrame(ch.query(
    "SELECT account_id, sum(amount) AS fees FROM ledger_postings FINAL WHERE ref_type = 'TRADE_FEE' "
    "AND ledger_account LIKE 'user:%' GROUP BY account_id ORDER BY fees DESC LIMIT 10").result_rows,
    schema=["account_id", "fees"], orient="row")
if len(fees):
    fig, ax = plt.subplots(figsize=(8, 2.5))
    ax.bar([str(a) for a in fees["account_id"].to_list()], [float(f) for f in fees["fees"].to_list()])
    ax.set_title("fees paid (USDT)")
    plt.show()
fees.with_columns(pl.col("fees").cast(pl.Utf8))'''),
    new_markdown_cell("## Funding flows\n\nPer funding round: paid by one side, received by the other; "
                      "`FUNDING_CLEARING` keeps only the rounding residue."),
    new_code_cell('''rounds = pl.DataFrame(ch.query(
    "SELECT arrayStringConcat(arraySlice(splitByChar(':', ref_id), 2, 2), ':') AS round, "
    "sumIf(amount, amount > 0 AND ledger_account LIKE 'user:%') AS received, "
    "-sumIf(amount, amount < 0 AND ledger_account LIKE 'user:%') AS paid, "
    "-sumIf(amount, ledger_account = 'platform:FUNDING_CLEARING') AS residue "
    "FROM ledger_postings FINAL WHERE ref_type = 'FUNDING' GROUP BY round ORDER BY round").result_rows,
    schema=["round", "received", "paid", "residue"], orient="row")
if len(rounds):
    fig, ax = plt.subplots(figsize=(8, 2.5))
    ax.plot([float(v) for v in rounds["paid"].to_list()], label="paid")
    ax.plot([float(v) for v in rounds["received"].to_list()], label="received")
    ax.set_title("funding per round (USDT)")
    ax.legend()
    plt.show()
rounds.with_columns(pl.all().exclude("round").cast(pl.Utf8)).tail(10)'''),
]

MARKET = [
    new_markdown_cell("# Market: candles, volume, depth and liquidations\n\nFrom the matcher's events and the "
                      "ledger in ClickHouse. Set `PERPLINE_CLICKHOUSE_URL`: for the local stack, the read-only "
                      "URL `perpline up` prints."),
    new_code_cell(SETUP),
    new_markdown_cell("## 1-minute candles and volume (BTCUSDT-PERP)"),
    new_code_cell('''SYMBOL = "BTCUSDT-PERP"
candles = pl.DataFrame(ch.query("""
    SELECT intDiv(ts_ms, 60000) * 60000 AS t, argMin(p, seq) AS open, max(p) AS high, min(p) AS low,
           argMax(p, seq) AS close, sum(q) AS volume, count() AS trades
    FROM (SELECT seq, ts_ms, toDecimal64(JSONExtractString(payload, 'price'), 2) AS p,
                 toDecimal64(JSONExtractString(payload, 'quantity'), 3) AS q
          FROM matcher_events FINAL WHERE symbol = {s:String} AND type = 'trade')
    GROUP BY t ORDER BY t""", parameters={"s": SYMBOL}).result_rows,
    schema=["t", "open", "high", "low", "close", "volume", "trades"], orient="row")
if len(candles):
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 4), sharex=True, height_ratios=[3, 1])
    for i, row in enumerate(candles.iter_rows(named=True)):
        colour = "tab:green" if row["close"] >= row["open"] else "tab:red"
        top.vlines(i, float(row["low"]), float(row["high"]), color=colour)
        top.vlines(i, float(min(row["open"], row["close"])), float(max(row["open"], row["close"])), color=colour, lw=6)
        bottom.bar(i, float(row["volume"]), color=colour)
    top.set_title(f"{SYMBOL} 1m")
    bottom.set_ylabel("volume")
    plt.show()
candles.with_columns(pl.all().exclude("t", "trades").cast(pl.Utf8)).tail(10)'''),
    new_markdown_cell("## Resting depth now\n\nRebuilt from the matcher's events: every rested order less what "
                      "traded, cancelled or expired."),
    new_code_cell('''import json

events = ch.query("SELECT type, payload FROM matcher_events FINAL WHERE symbol = {s:String} ORDER BY seq",
                  parameters={"s": SYMBOL}).result_rows
resting = {}
for kind, payload in events:
    e = json.loads(payload)
    if kind == "rested":
        resting[e["order_id"]] = (e["side"], Decimal(e["price"]), Decimal(e["leaves"]))
    elif kind == "trade" and e["maker_order_id"] in resting:
        side, price, _ = resting[e["maker_order_id"]]
        resting[e["maker_order_id"]] = (side, price, Decimal(e["maker_leaves"]))
    elif kind in ("cancelled", "expired"):
        resting.pop(e["order_id"], None)
    elif kind == "amended" and e["order_id"] in resting:
        resting.pop(e["order_id"])
levels = {}
for side, price, qty in resting.values():
    if qty:
        levels[(side, price)] = levels.get((side, price), Decimal(0)) + qty
bids = sorted(((p, q) for (s, p), q in levels.items() if s == "BUY"), reverse=True)[:20]
asks = sorted((p, q) for (s, p), q in levels.items() if s == "SELL")[:20]
if bids or asks:
    fig, ax = plt.subplots(figsize=(8, 2.5))
    ax.barh([float(p) for p, _ in bids], [float(q) for _, q in bids], height=0.08, color="tab:green", label="bids")
    ax.barh([float(p) for p, _ in asks], [float(q) for _, q in asks], height=0.08, color="tab:red", label="asks")
    ax.set_title("depth")
    ax.legend()
    plt.show()
print("best bid", bids[0] if bids else None, "best ask", asks[0] if asks else None)'''),
    new_markdown_cell("## Liquidations over time\n\nEach liquidation fill, and what it did to the insurance fund "
                      "(positive: the fund received what was left of the margin; negative: it paid a deficit)."),
    new_code_cell('''liq = pl.DataFrame(ch.query(
    "SELECT min(ts_ms) AS ts_ms, any(account_id) AS account_id, any(symbol) AS symbol, "
    "-sumIf(amount, ledger_account = 'platform:INSURANCE_FUND') AS fund "
    "FROM ledger_postings FINAL WHERE ref_type = 'LIQUIDATION' GROUP BY journal_id ORDER BY ts_ms").result_rows,
    schema=["ts_ms", "account_id", "symbol", "fund"], orient="row")
print(len(liq), "liquidation fills, insurance fund from liquidations:", sum(liq["fund"].to_list(), Decimal(0)))
if len(liq):
    fig, ax = plt.subplots(figsize=(8, 2.5))
    total, xs, ys = Decimal(0), [], []
    for row in liq.iter_rows(named=True):
        total += row["fund"]
        xs.append(row["ts_ms"])
        ys.append(float(total))
    ax.step(xs, ys, where="post")
    ax.set_title("insurance fund (USDT) from liquidations")
    plt.show()
liq.with_columns(pl.col("fund").cast(pl.Utf8))'''),
]


def write(name: str, cells: list) -> None:
    nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                            "language": "python"}})
    nbformat.write(nb, HERE / name)


if __name__ == "__main__":
    write("audit.ipynb", AUDIT)
    write("market.ipynb", MARKET)
