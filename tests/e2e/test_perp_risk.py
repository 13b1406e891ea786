"""Mark price, funding and liquidation on the real stack (funding every 6 s, the index written by the test).

alice buys 0.1 BTC at 50000 from bob (20x: 250 USDT margin each). With no premium, each funding round
charges the interest rate, 0.01 %: alice pays 0.5 USDT, bob receives 0.5. Then carol bids 47600 and the
index drops to 47000: the mark follows, crosses alice's liquidation price (47690.8), her orders are
cancelled and a reduce-only IOC at her bankruptcy price (47500) sells to carol at 47600; the 10 USDT
left of her margin goes to the insurance fund. Every journal sums to zero.
"""

from __future__ import annotations

import hashlib
import hmac
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from confluent_kafka import Producer
from stackutil import Stack, admin, running_stack

from perpline.audit import Audit
from perpline.ch.client import get_client
from perpline.config import producer_config, topic_map
from perpline.contracts import codec
from perpline.contracts import messages as m

pytestmark = pytest.mark.e2e
SYM = "BTCUSDT-PERP"
ALICE, BOB, CAROL = 7_300_001, 7_300_002, 7_300_003


class IndexWriter:
    """Writes the index price for BTC every 200 ms until stopped; `price` can be changed at any time."""

    def __init__(self, bootstrap: str) -> None:
        self.price = "50000.0"
        self.producer = Producer(producer_config(bootstrap))
        self.topic = topic_map()["prices.index"]
        self.stopped = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            msg = m.IndexPrice(trace_id="", causation_id="test", ts_ms=int(time.time() * 1000), symbol=SYM,
                               price=self.price, source="test")
            self.producer.produce(self.topic, key=SYM.encode(), value=codec.encode(msg))
            self.producer.flush(5)
            time.sleep(0.2)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from running_stack(tmp_path_factory, {"PERPLINE_FUNDING_INTERVAL_S": "6", "PERPLINE_MARK_TICK_MS": "250"})


def call(stack: Stack, method: str, path: str, acct: int, **kw: Any) -> Any:
    headers = {"X-Account-Id": str(acct), **kw.pop("headers", {})}
    response = httpx.request(method, stack.api + path, headers=headers, timeout=30, **kw)
    assert response.status_code == 200, (path, response.text)
    return response.json()


def until(check: Any, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.25)
    raise AssertionError("condition not met in time")


def _latest_mark(stack: Stack, after_index: bool = False) -> Any:
    """The API's latest mark, or None while there is none (or, after_index, while it predates the index)."""
    found = httpx.get(f"{stack.api}/api/v1/market/mark", params={"symbol": SYM}, timeout=10)
    if found.status_code != 200 or (after_index and found.json()["index_stale"]):
        return None
    return found.json()


def order(stack: Stack, acct: int, side: str, price: str, qty: str) -> Any:
    return call(stack, "POST", "/api/v1/orders", acct, json={"symbol": SYM, "side": side, "type": "LIMIT",
                                                             "price": price, "quantity": qty})


def test_mark_funding_and_a_liquidation_into_the_insurance_fund(stack: Stack) -> None:
    index = IndexWriter(stack.value("kafka"))
    try:
        for acct in (ALICE, BOB, CAROL):
            call(stack, "POST", "/api/v1/wallet/deposits", acct, json={"asset": "USDT", "amount": "10000"},
                 headers={"Idempotency-Key": f"d{acct}"})
        rested = order(stack, BOB, "SELL", "50000", "0.100")["order"]
        assert (rested["status"], rested["filled"]) == ("NEW", "0.000")  # answered as matching left it
        post_only = call(stack, "POST", "/api/v1/orders", ALICE, json={
            "symbol": SYM, "side": "BUY", "type": "LIMIT", "time_in_force": "GTX", "price": "50000", "quantity": "0.010"})
        assert (post_only["order"]["status"], post_only["code"], post_only["msg"]) == ("REJECTED", 3005, "POST_ONLY_WOULD_TAKE")
        taken = order(stack, ALICE, "BUY", "50000", "0.100")["order"]
        assert (taken["status"], taken["filled"], taken["avg_price"]) == ("FILLED", "0.100", "50000.00")
        assert [o["status"] for o in call(stack, "GET", "/api/v1/orders", BOB, params={"status": "all"})] == ["FILLED"]
        until(lambda: [p for p in call(stack, "GET", "/api/v1/account/positions", ALICE) if p["size"] == "0.100"])
        mark = until(lambda: _latest_mark(stack, after_index=True))  # the risk process reads the index in the
        # background (200 ms fetch wait): a mark ticked before the first index arrived is stale by design
        assert mark["index_price"] == "50000.00" and not mark["index_stale"]

        paid = until(lambda: call(stack, "GET", "/api/v1/account/funding", ALICE), 30)
        got = until(lambda: call(stack, "GET", "/api/v1/account/funding", BOB), 30)
        assert (paid[0]["rate"], paid[0]["amount"], got[0]["amount"]) == ("0.00010000", "0.50000000", "-0.50000000")
        assert paid[0]["funding_time_ms"] % 6000 == 0 and paid[0]["funding_time_ms"] == got[0]["funding_time_ms"]
        rounds = httpx.get(f"{stack.api}/api/v1/market/funding", params={"symbol": SYM}, timeout=10).json()
        charged = next(r for r in rounds if r["funding_time_ms"] == paid[0]["funding_time_ms"])  # (earlier rounds: empty)
        assert charged["positions"] == 2 and charged["paid"] == charged["received"] == "0.50000000"
        premium = httpx.get(f"{stack.api}/fapi/v1/premiumIndex", params={"symbol": "BTCUSDT"}, timeout=10).json()
        assert premium["indexPrice"] == "50000.00" and premium["lastFundingRate"] == "0.00010000"
        history = httpx.get(f"{stack.api}/fapi/v1/fundingRate", params={"symbol": "BTCUSDT"}, timeout=10).json()
        assert history and history[0]["fundingRate"] == "0.00010000"
        assert_funding_income(stack, paid[0]["funding_time_ms"])

        order(stack, ALICE, "BUY", "48000", "0.010")  # an open order the liquidation must cancel
        order(stack, CAROL, "BUY", "47600", "0.100")
        index.price = "47000.0"
        until(lambda: [p for p in call(stack, "GET", "/api/v1/account/positions", ALICE) if p["size"] == "0.000"], 60)
        assert call(stack, "GET", "/api/v1/orders", ALICE) == []
        carol = [p for p in call(stack, "GET", "/api/v1/account/positions", CAROL) if p["symbol"] == SYM]
        assert carol[0]["size"] == "0.100" and carol[0]["entry_price"] == "47600.00"
        funding_paid = sum(Decimal(f["amount"]) for f in call(stack, "GET", "/api/v1/account/funding", ALICE))
        wallet = Decimal(call(stack, "GET", "/api/v1/account/balances", ALICE)[0]["wallet"])
        assert wallet == Decimal("10000") - Decimal("2.5") - Decimal("250") - funding_paid  # lost exactly her margin

        client = get_client(stack.clickhouse())

        def ledger_settled() -> bool:
            fund = client.query("SELECT sum(amount) FROM ledger_postings FINAL "
                                "WHERE ledger_account = 'platform:INSURANCE_FUND'").result_rows[0][0]
            return Decimal(fund) == Decimal("-10")  # a credit balance: the fund holds 10 USDT

        until(ledger_settled, 30)
        unbalanced = client.query("SELECT count() FROM (SELECT journal_id, sum(amount) s FROM ledger_postings FINAL "
                                  "GROUP BY journal_id HAVING s != 0)").result_rows[0][0]
        assert unbalanced == 0
        assert client.query("SELECT sum(amount) FROM ledger_postings FINAL").result_rows[0][0] == 0
        first = f"funding:{SYM}:{charged['funding_time_ms']}:%"  # both sides of the first charged round, no residue
        until(lambda: client.query("SELECT count(), sum(amount) FROM ledger_postings FINAL WHERE ref_type = 'FUNDING' "
                                   "AND ledger_account = 'platform:FUNDING_CLEARING' AND ref_id LIKE {p:String}",
                                   parameters={"p": first}).result_rows[0] == (2, 0), 30)
        assert_candles_match_clickhouse(stack, client)
        assert_audit_views(stack, client, funding_paid)

        # Auto-deleveraging: carol (long 0.1 at 47600, 238 margin) is crossed at 44000 and nobody bids:
        # three liquidation orders expire unfilled, then ADL trades her position with bob's short (the only
        # one) at her bankruptcy price, 45220.0. The insurance fund pays nothing more.
        index.price = "44000.0"
        until(lambda: [p for p in call(stack, "GET", "/api/v1/account/positions", CAROL) if p["size"] == "0.000"], 60)
        until(lambda: [p for p in call(stack, "GET", "/api/v1/account/positions", BOB) if p["size"] == "0.000"], 30)
        carol_wallet = Decimal(call(stack, "GET", "/api/v1/account/balances", CAROL)[0]["wallet"])
        carol_funding = sum(Decimal(f["amount"]) for f in call(stack, "GET", "/api/v1/account/funding", CAROL))
        assert carol_wallet == Decimal("10000") - Decimal("0.952") - Decimal("238") - carol_funding
        until(lambda: client.query("SELECT count() FROM ledger_postings FINAL WHERE ref_type = 'ADL'").result_rows[0][0] >= 2,
              30)
        until(ledger_settled, 30)  # still 10: ADL at the bankruptcy price leaves nothing for the fund
        assert client.query("SELECT sum(amount) FROM ledger_postings FINAL").result_rows[0][0] == 0
        # alice, liquidated before, was not touched again (an ADL decided while her fill was on its way would
        # have opened her a short)
        assert [p["size"] for p in call(stack, "GET", "/api/v1/account/positions", ALICE) if p["symbol"] == SYM] == ["0.000"]
    except BaseException:
        dump_for_diagnosis(stack)
        raise
    finally:
        index.stopped.set()


def signed_get(stack: Stack, keys: Any, path: str, params: dict[str, Any]) -> Any:
    text = urlencode({**params, "timestamp": int(time.time() * 1000)})
    text += "&signature=" + hmac.new(keys["api_secret"].encode(), text.encode(), hashlib.sha256).hexdigest()
    answer = httpx.get(f"{stack.api}{path}?{text}", headers={"X-MBX-APIKEY": keys["api_key"]}, timeout=10)
    return answer.json() if answer.status_code == 200 else []  # (a new key: not on the replica yet)


def assert_funding_income(stack: Stack, funding_time_ms: int) -> None:
    """Binance's income history (what ccxt's fetch_funding_history reads) has the FUNDING_FEE rows of a
    settled round: alice (long) paid 0.5, bob (short) received it."""
    for acct, income in ((ALICE, "-0.50000000"), (BOB, "0.50000000")):
        keys = admin(stack, "create-key", "--user", str(acct), "--permissions", "read")

        def rows(keys: Any = keys) -> Any:
            found = signed_get(stack, keys, "/fapi/v1/income", {"incomeType": "FUNDING_FEE", "symbol": "BTCUSDT"})
            return [r for r in found if r["time"] == funding_time_ms]

        (row,) = until(rows, 15)  # the key reaches the API replica within moments
        assert (row["symbol"], row["incomeType"], row["income"], row["asset"]) == (
            "BTCUSDT", "FUNDING_FEE", income, "USDT")


def dump_for_diagnosis(stack: Stack) -> None:
    """On a failure: the risk and accounts log lines, and what the API shows of each account and the book."""
    for line in stack.lines:
        if any(w in line for w in ("liquidat", "Traceback", "rror", "deleverag", "risk", "accounts")):
            print(line[:400], file=sys.stderr)
    for who in (ALICE, CAROL, BOB):
        for path, params in (("/api/v1/account/positions", {}), ("/api/v1/account/trades", {}),
                             ("/api/v1/orders", {"status": "all"})):
            answer = httpx.get(stack.api + path, params=params, headers={"X-Account-Id": str(who)}, timeout=10)
            print(who, path, answer.text[:3000], file=sys.stderr)
    print(httpx.get(stack.api + "/api/v1/market/depth", params={"symbol": SYM}, timeout=10).text, file=sys.stderr)


def assert_candles_match_clickhouse(stack: Stack, client: Any) -> None:
    """The API's 1m candles (built from the trades it streamed) equal candles recomputed in SQL from the
    trades the sink stored in ClickHouse: open, high, low, close, volume, quote volume, count."""
    sql = """
        SELECT intDiv(ts_ms, 60000) * 60000 AS t,
               argMin(p, seq), max(p), min(p), argMax(p, seq), sum(q), sum(p * q), count()
        FROM (SELECT seq, ts_ms, toDecimal64(JSONExtractString(payload, 'price'), 2) AS p,
                     toDecimal64(JSONExtractString(payload, 'quantity'), 3) AS q
              FROM matcher_events FINAL WHERE symbol = 'BTCUSDT-PERP' AND type = 'trade')
        GROUP BY t ORDER BY t"""
    want = until(lambda: client.query(sql).result_rows, 30)
    got = httpx.get(f"{stack.api}/fapi/v1/klines", params={"symbol": "BTCUSDT", "interval": "1m"}, timeout=10).json()
    assert len(got) == len(want) >= 1
    native = httpx.get(f"{stack.api}/api/v1/market/candles", params={"symbol": SYM, "interval": "1m"}, timeout=10).json()
    assert [[c["open_time"], c["open"], c["high"], c["low"], c["close"], c["volume"]] for c in native] == [
        row[:6] for row in got]
    ticker = httpx.get(f"{stack.api}/api/v1/market/ticker", params={"symbol": SYM}, timeout=10).json()
    assert (ticker["high"], ticker["low"], ticker["trades"]) == (max((r[2] for r in got), key=Decimal),
                                                                  min((r[3] for r in got), key=Decimal),
                                                                  sum(r[8] for r in got))
    for row, (t, o, h, lo, c, v, qv, n) in zip(got, want, strict=True):
        assert (row[0], Decimal(row[1]), Decimal(row[2]), Decimal(row[3]), Decimal(row[4]), Decimal(row[5]),
                Decimal(row[7]), row[8]) == (t, o, h, lo, c, v, qv, n), (row, (t, o, h, lo, c, v, qv, n))


def assert_audit_views(stack: Stack, client: Any, funding_paid: Decimal) -> None:
    """The audit module's balance sheet (now and at a past instant), alice's ledger view and statement,
    and a trace by client order id, against what the test knows happened."""
    audit = Audit(client)
    sheet = audit.balance_sheet()["USDT"]
    assert sheet["balanced"] and sheet["assets"]["total"] == Decimal("30000")  # three deposits, no withdrawal
    assert sheet["equity"]["lines"]["platform:INSURANCE_FUND"] == Decimal("10")
    first_ms = client.query("SELECT min(ts_ms) FROM ledger_postings FINAL WHERE ref_type = 'DEPOSIT'").result_rows[0][0]
    early = audit.balance_sheet(at_ms=first_ms)["USDT"]
    assert early["balanced"] and early["assets"]["total"] == early["liabilities"]["total"] == Decimal("10000")
    view = call(stack, "GET", "/api/v1/account/ledger-view", ALICE)["USDT"]
    assert (Decimal(view["fees_paid"]), Decimal(view["liquidation_losses"]), -Decimal(view["funding"])) == (
        Decimal("2.5"), Decimal("10"), funding_paid)
    assert Decimal(view["realized_pnl"]) == Decimal("-240") and Decimal(view["deposits"]) == Decimal("10000")
    wallet = Decimal(call(stack, "GET", "/api/v1/account/balances", ALICE)[0]["wallet"])
    assert Decimal(view["wallet"]) == wallet
    statement = call(stack, "GET", "/api/v1/account/statement", ALICE)
    assert statement["agrees_with_ledger"] and Decimal(statement["opening"]) == 0
    assert Decimal(statement["closing"]) == wallet and statement["lines"][0]["ref_type"] == "DEPOSIT"
    full = call(stack, "GET", "/api/v1/account/view", CAROL)
    (pos,) = full["positions"]
    assert (pos["size"], pos["entry_price"], pos["mark_price"]) == ("0.100", "47600.00", "47600.00")
    assert Decimal(pos["unrealized_pnl"]) == 0 and pos["liquidation_price"] == "45401.70"  # (4760 - 238) / (0.1 x 0.996)
    assert Decimal(full["ledger"]["USDT"]["fees_paid"]) == Decimal("0.952")  # maker 0.02 % of 4760
    order = call(stack, "GET", "/api/v1/orders", ALICE, params={"status": "all"})[0]
    steps = call(stack, "GET", f"/api/v1/account/trace/{order['client_order_id']}", ALICE)
    assert {s["type"] for s in steps} >= {"ORDER_MARGIN_FROZEN", "order"}


def test_the_notebooks_run_on_this_exchanges_books(stack: Stack, monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Any) -> None:
    """audit.ipynb and market.ipynb, executed top to bottom by a Jupyter kernel against this stack's
    ClickHouse (after the scenario above): every cell runs, and their own checks (trial balance zero,
    balance sheets balanced, the statement agreeing with the ledger) hold."""
    import nbclient  # noqa: PLC0415
    import nbformat  # noqa: PLC0415

    from perpline import REPO_ROOT  # noqa: PLC0415

    monkeypatch.setenv("PERPLINE_CLICKHOUSE_URL", stack.clickhouse())
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend turns figures into outputs
    for name in ("audit.ipynb", "market.ipynb"):
        nb = nbformat.read(REPO_ROOT / "notebooks" / name, as_version=4)
        nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
                                ).execute()
        outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
        assert not [o for o in outputs if o.get("output_type") == "error"], name
        assert any(o.get("output_type") == "display_data" for o in outputs), f"{name} drew no plot"
        nbformat.write(nb, tmp_path / name)  # the executed notebook, kept with the test's files


def test_every_metric_of_the_dashboards_and_alerts_is_scraped(stack: Stack) -> None:
    """Every component's /metrics, scraped after the scenario above (tests/e2e/metrics_scrape.py): each series a
    Grafana panel or an alert rule reads is there, with the labels it groups or filters by; the processes' own
    consumer lag drains to 0; the insurance fund's gauge holds the scenario's 10 USDT; `perpline topics` sees
    the records and the processors' committed offsets."""
    import json  # noqa: PLC0415
    import os  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    import metrics_scrape as ms  # noqa: PLC0415

    scrapes = ms.scrape_all(stack)
    assert set(scrapes) == {"api", "broker", "clickhouse", "matcher", "accounts", "ledger-sink",
                            "index-feed", "risk", "recon"}
    bare = {name for name, samples in scrapes.items() if not any(n.startswith("perpline_") for n in samples)}
    assert bare == {"index-feed"}  # it answers, with the runtime's metrics only: it declares none of its own yet
    assert ms.missing_for_dashboards_and_alerts(ms.merged(scrapes)) == []
    groups = {"perpline-matcher", "perpline-accounts", "perpline-ledger-sink"}
    readers = {"perpline-risk", "perpline-api-readmodel"}  # they read prices every second: lag moves, is exported

    def settled() -> Any:
        samples = ms.merged(ms.scrape_all(stack))
        lagging = {labels["group"] for labels, _ in samples.get("perpline_consumer_lag_messages", [])}
        drained = all(ms.value(samples, "perpline_consumer_lag_messages", group=g) == 0 for g in groups)
        done = (lagging >= groups | readers and drained
                and ms.value(samples, "perpline_insurance_fund_balance", asset="USDT") == 10)
        return samples if done else None

    try:
        samples = until(settled, 30)
    except AssertionError:
        last = ms.merged(ms.scrape_all(stack))
        raise AssertionError(f"not settled: lag {last.get('perpline_consumer_lag_messages')}, fund "
                             f"{last.get('perpline_insurance_fund_balance')}") from None
    assert {labels["topic"] for labels, _ in samples["perpline_consumer_lag_messages"]} >= {"orders", "account.commands",
                                                                                           "matcher.events"}
    assert ms.value(samples, "perpline_matcher_inputs_total") >= 6 and ms.value(samples, "perpline_api_requests_total") > 0
    assert ms.value(samples, "perpline_processor_messages_total", group="perpline-accounts") > 0
    assert ms.value(samples, "perpline_ledger_sink_rows_total", table="ledger_postings") > 0
    assert ms.value(samples, "perpline_risk_liquidations_sent_total", symbol=SYM) >= 1
    breaks = [labels for labels, v in samples.get("perpline_recon_breaks", []) if v]
    assert breaks == [] and ms.value(samples, "perpline_dead_letters_total") == 0, breaks
    assert time.time() - ms.value(samples, "perpline_recon_last_run_timestamp_seconds") < 30
    # the writers pushed their final records to the API (perpline.push) and it applied them; none differed from
    # the topic's record at its offset
    assert ms.value(samples, "perpline_api_pushed_applied_total", topic="account.events") > 0
    assert ms.value(samples, "perpline_api_pushed_applied_total", topic="matcher.events") > 0
    assert ms.value(samples, "perpline_api_pushed_applied_total", topic="funding.rounds") > 0
    assert ms.value(samples, "perpline_api_pushed_mismatch_total") == 0

    env = {**os.environ, "PERPLINE_KAFKA_BOOTSTRAP": stack.value("kafka")}
    done = subprocess.run([sys.executable, "-m", "perpline.cli", "topics", "--json"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    described = {t["logical"]: t for t in json.loads(done.stdout)}
    assert described["orders"]["records"] >= 6 and described["ledger.entries"]["records"] > 0
    for logical, group in (("account.commands", "perpline-accounts"), ("matcher.events", "perpline-ledger-sink"),
                           ("ledger.entries", "perpline-ledger-sink")):
        rows = [p for p in described[logical]["partitions"] if group in p["groups"]]
        assert rows and all(p["groups"][group]["committed"] <= p["high"] for p in rows), (logical, group)


def test_a_leverage_carries_at_most_its_brackets_notional_on_fapi(stack: Stack) -> None:
    """Leverage brackets enforced end to end (docs/risk.md, "Leverage brackets"), in ETH: no index or trade
    there, so no price band whatever ran before. At 100x ETH may carry 10,000 USDT, at 75x 100,000: an
    order beyond the cap (open orders counted) and a leverage the orders exceed answer -2027, and change
    nothing. Runs last: its deposit is not part of the balance sheet asserted above."""
    keys: Any = admin(stack, "create-user", "--deposit", "USDT=10000")
    user = int(keys["user_id"])

    def signed(method: str, path: str, params: dict[str, Any]) -> httpx.Response:
        text = urlencode({"symbol": "ETHUSDT", **params, "timestamp": int(time.time() * 1000)})
        text += "&signature=" + hmac.new(keys["api_secret"].encode(), text.encode(), hashlib.sha256).hexdigest()
        headers = {"X-MBX-APIKEY": keys["api_key"], "Content-Type": "application/x-www-form-urlencoded"}
        if method == "GET":
            return httpx.get(f"{stack.api}{path}?{text}", headers=headers, timeout=30)
        return httpx.post(stack.api + path, content=text, headers=headers, timeout=30)

    def post(path: str, params: dict[str, Any]) -> httpx.Response:
        return signed("POST", path, params)

    def buy(qty: str) -> httpx.Response:
        return post("/fapi/v1/order", {"side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "price": "3000",
                                       "quantity": qty})

    def refused_2027(response: httpx.Response) -> None:
        assert (response.status_code, response.json()["code"]) == (400, -2027), response.text

    def available() -> Decimal:
        return Decimal(call(stack, "GET", "/api/v1/account/balances", user)[0]["available"])

    lever = post("/fapi/v1/leverage", {"leverage": 100})
    assert lever.status_code == 200 and lever.json()["maxNotionalValue"] == "10000", lever.text
    refused_2027(buy("4.000"))  # 12,000 USDT
    assert available() == Decimal("10000")
    assert buy("3.000").json()["status"] == "NEW"  # 9,000: 90 margin + 4.5 fee
    refused_2027(buy("0.400"))  # 9,000 open + 1,200
    assert post("/fapi/v1/leverage", {"leverage": 75}).json()["maxNotionalValue"] == "100000"
    assert buy("20.000").json()["status"] == "NEW"  # 69,000 in all: 800 margin + 30 fee
    refused_2027(post("/fapi/v1/leverage", {"leverage": 100}))
    assert buy("10.000").json()["status"] == "NEW"  # still 75x: 99,000 <= 100,000 (at 100x it would be refused)
    refused_2027(buy("0.334"))  # 100,002
    assert available() == Decimal("10000") - Decimal("94.5") - Decimal("830") - Decimal("415")
    opened = signed("GET", "/fapi/v1/openOrders", {}).json()
    assert sorted(o["origQty"] for o in opened) == ["10.000", "20.000", "3.000"]
