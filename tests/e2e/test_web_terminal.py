"""The web terminal in headless Chromium (Debian's chromium + chromedriver, installed by `make test`)
against the real stack: an anonymous visitor sees the live market (book, trades, ticker, chart, mark
and funding over public endpoints and the market stream) and is asked to log in only in the order
form's place and the account panels; USDT amounts in tables show 2 decimals with the exact value on
hover; sign up, deposit, a resting order in open orders and in the book, cancel it,
cross another account's order and see the position, a rejected order shows the server's message, an
API key created and revoked, dark mode survives a reload, log out and in again, no error in the
browser console; then the page with the demo traders running (book, trades and the chart's forming
candle move, nothing below them jumps, no console error), and at a phone's width (no sideways
scrolling, an order placed with the keyboard, cancel-all, close a position), the candle interval
switch, no polling on a hidden tab, 304s while idle. Screenshots of each page go to
artifacts/screenshots/."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from stackutil import Stack, running_stack

from perpline import REPO_ROOT

pytestmark = pytest.mark.e2e
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SHOTS = REPO_ROOT / "artifacts" / "screenshots"
SELLER = 7_500_009
BIDDER = 7_500_010
MAKER, TAKER = 7_500_011, 7_500_012  # the anonymous visit's market makers
SYMBOL = "BTCUSDT-PERP"
DEMO_S = 30  # how long the demo traders may run at most (they stop as soon as everything moved)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from running_stack(tmp_path_factory)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("Debian chromium and chromium-driver are not installed (make test installs them)")
    from selenium import webdriver  # noqa: PLC0415
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def until(check: Any, timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 (the page is still rendering)
            last = exc
        time.sleep(0.25)
    raise AssertionError(f"not seen in {timeout_s} s: {last}")


def text(driver: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    return str(driver.find_element(By.ID, element_id).text)


def fill(driver: Any, element_id: str, value: str) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    field = driver.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(value)


def click(driver: Any, element_id: str) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    driver.find_element(By.ID, element_id).click()


def shows(driver: Any, element_id: str, needle: str) -> bool:
    """For until(): true when the element shows `needle`; else the failure says what it shows."""
    seen = text(driver, element_id)
    assert needle in seen, f"#{element_id} shows {seen!r}"
    return True


def shot(driver: Any, name: str) -> None:
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def as_account(stack: Stack, account: int, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """A call by another trader (the stack trusts X-Account-Id): what makes the market the browser watches."""
    r = httpx.request(method, f"{stack.api}{path}", headers={"X-Account-Id": str(account)}, json=body, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def limit(stack: Stack, account: int, side: str, price: str, quantity: str) -> Any:
    return as_account(stack, account, "POST", "/api/v1/orders",
                      {"symbol": SYMBOL, "side": side, "type": "LIMIT", "price": price, "quantity": quantity})


def displayed(driver: Any, element_id: str) -> bool:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    return bool(driver.find_element(By.ID, element_id).is_displayed())


def test_an_anonymous_visitor_sees_the_live_market(stack: Stack, browser: Any) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    d = browser
    d.get(stack.api + "/")
    d.execute_script("localStorage.removeItem('access_token'); localStorage.removeItem('refresh_token')")
    d.refresh()
    for account in (MAKER, TAKER):
        as_account(stack, account, "POST", "/api/v1/wallet/deposits", {"asset": "USDT", "amount": "10000"})
    limit(stack, MAKER, "SELL", "50000", "0.004")
    limit(stack, TAKER, "BUY", "50000", "0.002")  # a trade at 50000; 0.002 left on the ask
    limit(stack, TAKER, "BUY", "49500", "0.003")  # and a bid
    try:
        count_fetches(d)
        # the market panels fill with live data, no login: the book, trades and mark pushed, ticker and candles polled
        until(lambda: shows(d, "trades", "50000.00") and shows(d, "asks", "50000.00") and shows(d, "bids", "49500.00"))
        until(lambda: shows(d, "t-last", "50000.00") and shows(d, "chart-legend", "trades)"))
        until(lambda: d.execute_script("return state.series.data().length") >= 1)
        until(lambda: text(d, "t-mark") not in ("", "-") and "%" in text(d, "t-funding") and ":" in text(d, "t-countdown"))
        assert d.execute_script("return [stream.live, stream.frames > 0, localStorage.access_token]") == [True, True, None]
        # the order form asks for a login: the login box in its place; the account panels ask too
        assert displayed(d, "view-trade") and displayed(d, "view-login") and not displayed(d, "order-form")
        assert d.execute_script("return document.getElementById('view-login').parentElement.classList.contains('grid')")
        assert displayed(d, "open-login") and not displayed(d, "logout") and not displayed(d, "cancel-all")
        assert "Log in to see your positions" in text(d, "positions")
        assert "Log in to see your open orders" in text(d, "open-orders")
        d.find_element(By.CSS_SELECTOR, "#positions button[data-login]").click()
        assert d.execute_script("return document.activeElement.id") == "login"
        shot(d, "0-anonymous")
        # only public data was asked for, and no login was refused (the book and trades come pushed: wait for
        # the page's next poll of the ticker and candles)
        until(lambda: d.execute_script("return window.__answers.length") > 0)
        answers = d.execute_script("return window.__answers")
        assert answers and not [a for a in answers if a[0] in (401, 403)], answers
        assert not [url for _, url in answers if "/account" in url or "/orders" in url], answers
        # a private page is the login box
        d.get(stack.api + "/#/account")
        until(lambda: displayed(d, "view-login") and not displayed(d, "view-account") and not displayed(d, "view-trade"))
        assert console_errors(d) == []
    finally:
        for account in (MAKER, TAKER):  # the later tests start from an empty book
            as_account(stack, account, "DELETE", f"/api/v1/orders?symbol={SYMBOL}")
    # logged in where asked, the visitor stays on the page and sees it
    fill(d, "login", "fay@example.com")
    fill(d, "password", "s3cret-enough")
    click(d, "do-signup")
    until(lambda: displayed(d, "view-account") and "account" in text(d, "who") and not displayed(d, "view-login"))
    d.get(stack.api + "/#/trade")
    until(lambda: displayed(d, "order-form") and not displayed(d, "view-login") and shows(d, "positions", "Symbol"))


def money_cells(driver: Any, table_id: str) -> list[tuple[str, str]]:
    """(shown, hover title) of each USDT amount in a table."""
    return [tuple(c) for c in driver.execute_script(
        f"return [...document.querySelectorAll('#{table_id} .money')].map((e) => [e.innerText, e.title])")]


def rounded(exact: str) -> str:
    return str(Decimal(exact).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def test_money_in_tables_has_2_decimals_and_the_exact_value_on_hover(stack: Stack, browser: Any) -> None:
    d = browser
    signed_in(d, stack)
    d.get(stack.api + "/#/wallet")
    fill(d, "w-amount", "1000.005")
    click(d, "w-deposit")
    until(lambda: shows(d, "wallet-msg", "deposited 1000.005"))
    d.get(stack.api + "/#/account")
    until(lambda: ("1000.01", "1000.00500000") in money_cells(d, "balances"))  # rounded half up, the exact on hover
    assert "1000.00500000" not in text(d, "balances")

    limit(stack, MAKER, "SELL", "50000", "0.003")
    d.get(stack.api + "/#/trade")
    fill(d, "o-price", "50000")
    fill(d, "o-qty", "0.003")
    click(d, "o-submit")
    until(lambda: shows(d, "positions", "0.003") and len(money_cells(d, "positions")) == 3)  # PnL, margin, realised
    shot(d, "0-money")
    cells = money_cells(d, "positions")
    d.get(stack.api + "/#/account")
    until(lambda: ("0.08", "0.07500000") in money_cells(d, "trade-history"))  # the taker fee: 0.05 % of 150
    assert "0.07500000" not in text(d, "trade-history")
    cells += money_cells(d, "balances") + money_cells(d, "trade-history")
    for shown, exact in cells:  # every amount: exact to 8 decimals on hover, shown rounded half up to 2
        assert len(exact.split(".")[1]) == 8 and shown == rounded(exact), (shown, exact)
    click(d, "logout")  # the next test starts as a visitor
    until(lambda: displayed(d, "view-login") and not d.execute_script("return localStorage.access_token"))


def test_a_trader_session_in_the_browser(stack: Stack, browser: Any) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415
    from selenium.webdriver.common.keys import Keys  # noqa: PLC0415

    d = browser
    d.get(stack.api + "/")
    until(lambda: d.find_element(By.ID, "view-login").is_displayed())
    shot(d, "1-login")
    fill(d, "login", "dora@example.com")
    fill(d, "password", "s3cret-enough")
    click(d, "do-signup")
    until(lambda: d.find_element(By.ID, "view-trade").is_displayed() and "account" in text(d, "who"))

    d.get(stack.api + "/#/wallet")
    until(lambda: d.find_element(By.ID, "view-wallet").is_displayed())
    fill(d, "w-amount", "10000")
    click(d, "w-deposit")
    until(lambda: "deposited 10000" in text(d, "wallet-msg"))
    shot(d, "2-wallet")

    d.get(stack.api + "/#/trade")
    fill(d, "o-price", "49000")
    fill(d, "o-qty", "0.010")
    click(d, "o-lev")  # leave the quantity field: the preview asks the server what it would cost
    until(lambda: "margin 24.50000000 + fee 0.24500000" in text(d, "o-cost"))  # 490 / 20, 0.05 % of 490
    click(d, "o-submit")
    until(lambda: "NEW" in text(d, "order-msg"))
    until(lambda: "49000.00" in text(d, "open-orders") and "49000.00" in text(d, "bids"))
    shot(d, "3-resting-order")
    # the table is redrawn every 2 s: find the button afresh on each try
    until(lambda: d.find_element(By.CSS_SELECTOR, "#open-orders button[data-cancel]").click() or True)
    until(lambda: "Cancel" not in text(d, "open-orders") and "49000.00" not in text(d, "bids"))

    sold = httpx.post(f"{stack.api}/api/v1/wallet/deposits", headers={"X-Account-Id": str(SELLER)}, timeout=30,
                      json={"asset": "USDT", "amount": "10000"})
    assert sold.status_code == 200, sold.text
    ask = httpx.post(f"{stack.api}/api/v1/orders", headers={"X-Account-Id": str(SELLER)}, timeout=30,
                     json={"symbol": "BTCUSDT-PERP", "side": "SELL", "type": "LIMIT", "price": "50000", "quantity": "0.010"})
    assert ask.status_code == 200, ask.text
    until(lambda: "50000.00" in text(d, "asks"))
    fill(d, "o-price", "50000")
    click(d, "o-submit")
    until(lambda: "order" in text(d, "order-msg"))  # accepted (the fill settles a moment later)
    until(lambda: "0.010" in text(d, "positions") and "50000.00" in text(d, "positions"))
    until(lambda: "47690.80" in text(d, "positions"))  # liquidation price: (500 - 25) / (0.01 x 0.996), rounded up
    shot(d, "4-position")

    fill(d, "o-price", "abc")
    click(d, "o-submit")
    until(lambda: "code" in text(d, "order-msg") and "price" in text(d, "order-msg").lower())

    d.get(stack.api + "/#/account")
    until(lambda: "9999.75" in text(d, "balances") and "FILLED" in text(d, "order-history"))  # 10000 - 0.25 fee
    shot(d, "5-account")
    d.get(stack.api + "/#/keys")
    click(d, "k-create")
    until(lambda: "shown once" in text(d, "key-secret"))
    shot(d, "6-keys")
    until(lambda: d.find_element(By.CSS_SELECTOR, "#keys button[data-revoke]").click() or True)
    until(lambda: shows(d, "keys", "yes") and not d.find_elements(By.CSS_SELECTOR, "#keys button[data-revoke]"))

    d.get(stack.api + "/#/trade")
    theme = d.execute_script("return document.documentElement.dataset.theme")
    click(d, "theme")
    d.refresh()
    flipped = until(lambda: d.execute_script("return document.documentElement.dataset.theme"))
    assert flipped != theme
    click(d, "theme")  # back to dark for the README's screenshot
    d.refresh()
    until(lambda: "50000.00" in text(d, "positions"))
    time.sleep(1)
    shot(d, "7-trade-dark")
    # script errors fail the test; answers like 400 (the refused order) or 503 (no mark price before the first
    # trade) are the API speaking, logged by the browser as network entries
    severe = [e for e in d.get_log("browser") if e.get("level") == "SEVERE" and e.get("source") != "network"]
    assert severe == [], severe
    assert Path(SHOTS / "7-trade-dark.png").stat().st_size > 10_000

    click(d, "logout")  # the session ends on the server too: log in again with the password
    until(lambda: d.find_element(By.ID, "view-login").is_displayed() and not d.execute_script("return localStorage.access_token"))
    fill(d, "login", "dora@example.com")
    fill(d, "password", "s3cret-enough")
    d.find_element(By.ID, "password").send_keys(Keys.ENTER)  # Enter in the form logs in
    until(lambda: d.find_element(By.ID, "view-trade").is_displayed() and "50000.00" in text(d, "positions"))


def console_errors(driver: Any) -> list[Any]:
    """Script errors since the last call; answers like 400 (a refused order) or 503 (no mark price
    before the first trade) are the API speaking, logged by the browser as network entries."""
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE" and e.get("source") != "network"]


def signed_in(driver: Any, stack: Stack) -> None:
    """On the trade page with a session (signs a new trader up when this test runs alone)."""
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    driver.get(stack.api + "/#/trade")
    until(lambda: driver.find_element(By.ID, "view-login").is_displayed() or driver.find_element(By.ID, "view-trade").is_displayed())
    if driver.find_element(By.ID, "view-login").is_displayed():
        fill(driver, "login", "erin@example.com")
        fill(driver, "password", "s3cret-enough")
        click(driver, "do-signup")
        until(lambda: driver.find_element(By.ID, "view-trade").is_displayed() and "account" in text(driver, "who"))


def market_sample(driver: Any) -> dict[str, Any]:
    """What the trader sees move: the book, the trades list, the forming candle (legend and the chart's
    own series), and where the blocks below the market view sit."""
    return driver.execute_script("""
        const t = (id) => document.getElementById(id).innerText;
        const last = state.series ? state.series.data().slice(-1)[0] : null;
        return { book: t("asks") + "|" + t("spread") + "|" + t("bids"), trades: t("trades"), legend: t("chart-legend"),
                 candle: last ? JSON.stringify(last) : "", bars: state.series ? state.series.data().length : 0,
                 tops: ["order-form", "positions", "open-orders"].map((id) => document.getElementById(id).getBoundingClientRect().top),
                 book_rows: document.querySelectorAll("#asks tr, #bids tr").length,
                 traded: [...document.querySelectorAll("#trades td:first-child")].filter((c) => c.innerText.trim()).length,
                 trade_rows: document.querySelectorAll("#trades tr").length };""")


def start_demo(stack: Stack, log_path: Path) -> subprocess.Popen[bytes]:
    """`perpline demo` against the stack's API; it carries the stack's marker so the module's teardown
    kills it even if the test's own stop does not."""
    env = {**os.environ, "PERPLINE_STACK_ID": stack.marker.split("=", 1)[1]}
    env.pop("PERPLINE_METRICS_PORT", None)
    with log_path.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "perpline.cli", "demo", "--api", stack.api, "--rate-hz", "2"],
                                stdout=out, stderr=subprocess.STDOUT, env=env)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # the demo finishes its tick and exits
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def test_the_page_moves_with_the_demo_traders(stack: Stack, browser: Any, tmp_path: Path) -> None:
    d = browser
    signed_in(d, stack)
    console_errors(d)  # drop what earlier pages logged: from here on, this test's page only
    demo = start_demo(stack, tmp_path / "demo.log")
    try:
        seen: dict[str, set[str]] = {"book": set(), "trades": set(), "legend": set(), "candle": set()}
        samples = []
        deadline = time.monotonic() + DEMO_S
        while time.monotonic() < deadline:
            assert demo.poll() is None, (tmp_path / "demo.log").read_text()[-3000:]
            sample = market_sample(d)
            samples.append(sample)
            if sample["traded"] >= 3:  # the demo's trades are on the page (the earlier session made one)
                for key in seen:
                    seen[key].add(sample[key])
            if all(len(v) >= 3 for v in seen.values()):  # each changed at least twice while watched
                break
            time.sleep(1)
        shot(d, "8-demo-running")
    finally:
        stop(demo)
    assert all(len(v) >= 3 for v in seen.values()), {k: len(v) for k, v in seen.items()}
    moving = [s for s in samples if s["traded"] >= 3]
    assert moving[-1]["bars"] >= 1 and "trades)" in moving[-1]["legend"], moving[-1]
    # fixed rows: 10 levels a side and 16 trades (and a header), blank-padded, whatever the book holds
    assert {(s["book_rows"], s["trade_rows"]) for s in samples} == {(20, 17)}, samples[-1]
    assert len({tuple(s["tops"]) for s in samples}) == 1, [s["tops"] for s in samples]  # nothing below moved
    assert console_errors(d) == []
    live, frames = d.execute_script("return [stream.live, stream.frames]")  # the book and trades came pushed
    assert live and frames >= 3, (live, frames)
    assert d.execute_script("return accountStream.live && accountStream.frames > 0")
    assert Path(SHOTS / "8-demo-running.png").stat().st_size > 10_000


def test_a_phone_width_and_idle_polling(stack: Stack, browser: Any) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415
    from selenium.webdriver.common.keys import Keys  # noqa: PLC0415
    from selenium.webdriver.support.ui import Select  # noqa: PLC0415

    d = browser
    signed_in(d, stack)
    console_errors(d)
    d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})
    try:
        d.refresh()
        until(lambda: d.find_element(By.ID, "view-trade").is_displayed() and "account" in text(d, "who"))
        width = d.execute_script("return [window.innerWidth, document.documentElement.scrollWidth, document.body.scrollWidth]")
        assert width[0] == 390 and max(width[1:]) <= 390, width  # nothing scrolls the page sideways
        form = d.execute_script("const r = document.getElementById('order-form').getBoundingClientRect(); return [r.left, r.right]")
        assert form[0] >= 0 and form[1] <= 390, form
        until(lambda: shows(d, "chart-legend", "trades)"))
        shot(d, "9-phone")

        # the order form with the keyboard alone: type, Enter submits
        httpx.post(f"{stack.api}/api/v1/wallet/deposits", headers={"X-Account-Id": str(BIDDER)}, timeout=30,
                   json={"asset": "USDT", "amount": "10000"}).raise_for_status()
        d.find_element(By.ID, "o-qty").clear()
        d.find_element(By.ID, "o-qty").send_keys("0.010")
        price = d.find_element(By.ID, "o-price")
        price.clear()
        price.send_keys("48000", Keys.ENTER)  # 4 % under the market: inside the 5 % price band, resting
        until(lambda: shows(d, "order-msg", "NEW"))
        until(lambda: shows(d, "open-orders", "48000.00"))
        d.execute_script("document.getElementById('order-form').scrollIntoView()")
        shot(d, "10-phone-order")
        click(d, "cancel-all")
        until(lambda: "Cancel" not in text(d, "open-orders"))

        # close the position with its button: a market sell, reduce-only, against a bid that is surely there
        held = text(d, "positions")
        if "BTCUSDT-PERP" in held:
            bid = httpx.post(f"{stack.api}/api/v1/orders", headers={"X-Account-Id": str(BIDDER)}, timeout=30,
                             json={"symbol": "BTCUSDT-PERP", "side": "BUY", "type": "LIMIT", "price": "49900", "quantity": "1.000"})
            assert bid.status_code == 200, bid.text
            until(lambda: d.find_element(By.CSS_SELECTOR, "#positions button[data-close]").click() or True)
            until(lambda: "BTCUSDT-PERP" not in text(d, "positions"))
    finally:
        d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    # the interval switch asks for that interval's candles and redraws
    count_fetches(d)
    Select(d.find_element(By.ID, "interval")).select_by_visible_text("5m")
    until(lambda: any("interval=5m" in url and status == 200 for status, url in d.execute_script("return window.__answers")))
    until(lambda: d.execute_script("return state.interval === '5m' && state.series.data().length > 0"))
    Select(d.find_element(By.ID, "interval")).select_by_visible_text("1m")

    # a hidden tab polls nothing; shown again, it refreshes at once
    count_fetches(d)
    d.execute_script("""
        Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
        Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "hidden" });""")
    time.sleep(1.5)  # a refresh begun before the tab was hidden may still finish
    d.execute_script("window.__answers.length = 0")
    time.sleep(4.5)  # two polling periods
    assert d.execute_script("return window.__answers") == []
    d.execute_script("""delete document.hidden; delete document.visibilityState;
                        document.dispatchEvent(new Event("visibilitychange"));""")
    until(lambda: d.execute_script("return window.__answers.length") > 0, timeout_s=3)
    assert console_errors(d) == []


def count_fetches(driver: Any) -> None:
    """From now on window.__answers lists [status, url] of every fetch the page makes."""
    driver.execute_script("""
        if (!window.__answers) {
          const f = window.fetch.bind(window);
          window.fetch = async (...args) => { const r = await f(...args); window.__answers.push([r.status, String(args[0])]); return r; };
        }
        window.__answers = [];""")


def test_an_idle_page_is_answered_304(stack: Stack, browser: Any) -> None:
    d = browser
    signed_in(d, stack)
    until(lambda: shows(d, "positions", "Symbol"))  # the page has polled once
    count_fetches(d)
    time.sleep(4.5)  # two polling periods on a market nobody trades: the page already holds every answer
    answers = d.execute_script("return window.__answers")
    unchanged = {url for status, url in answers if status == 304}
    # book, trades and mark, positions and open orders come over the websockets: not polled
    assert d.execute_script("return [stream.live, accountStream.live]") == [True, True]
    pushed = ("/market/depth", "/market/trades", "/account/positions", "/api/v1/orders?symbol")
    assert not [url for _, url in answers if any(p in url for p in pushed)], answers
    assert "/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=300" in unchanged, answers
    # the streams down (and kept down): polling takes over, answered 304 while idle
    d.execute_script("connectStream = () => {}; closeStream(); connectAccountStream = () => {}; closeAccountStream();")
    time.sleep(2.5)
    count_fetches(d)
    time.sleep(4.5)
    answers = d.execute_script("return window.__answers")
    unchanged = {url for status, url in answers if status == 304}
    assert {"/api/v1/market/depth?symbol=BTCUSDT-PERP&limit=10", "/api/v1/market/trades?symbol=BTCUSDT-PERP&limit=16",
            "/api/v1/account/positions"} <= unchanged, answers
