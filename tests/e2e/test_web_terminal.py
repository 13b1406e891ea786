"""The web terminal in headless Chromium (Debian's chromium + chromedriver, installed by `make test`)
against the real stack: sign up, deposit, a resting order in open orders and in the book, cancel it,
cross another account's order and see the position, a rejected order shows the server's message,
dark mode survives a reload, no error in the browser console. Screenshots of each page go to
artifacts/screenshots/."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
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


def shot(driver: Any, name: str) -> None:
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def test_a_trader_session_in_the_browser(stack: Stack, browser: Any) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

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
