"""The live price page in a real headless Chromium (Debian's chromium and chromium-driver,
driven by selenium through the system driver; nothing is downloaded): a clean console,
nothing from another origin, live prices and chart, the transports' request patterns read
from the browser's own resource timing, and an outage shown and recovered from.

PAGE_SCREENSHOT=path writes the page as the browser drew it (the README's screenshot).
"""

from __future__ import annotations

import decimal
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select

from tests.integration.conftest import (
    ServiceFactory,
    free_port,
    nginx_in_front_of,
    recorded_database,
    require_binary,
    wait_until,
)

TICK = "1"


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    chromium = require_binary("chromium")
    driver_binary = require_binary("chromedriver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1100,900",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=DriverService(driver_binary), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def state(driver: webdriver.Chrome) -> dict[str, Any]:
    """What the page shows: each symbol's tick and chart points, the notice."""
    cards = driver.find_elements(By.CSS_SELECTOR, ".quote")
    notice = driver.find_element(By.ID, "notice")
    return {
        "ticks": [
            card.find_element(By.CSS_SELECTOR, ".price").get_attribute("data-tick")
            for card in cards
        ],
        "points": [
            int(card.find_element(By.CSS_SELECTOR, ".chart").get_attribute("data-points") or 0)
            for card in cards
        ],
        "prices": [card.find_element(By.CSS_SELECTOR, ".price").text for card in cards],
        "notice": notice.text if notice.is_displayed() else "",
    }


def resources(driver: webdriver.Chrome) -> list[str]:
    names: list[str] = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    return names


def errors_in_console(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    logs: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return [entry for entry in logs if entry["level"] == "SEVERE"]


def test_the_page_shows_live_prices_with_a_clean_console_and_nothing_foreign(
    start_service: ServiceFactory, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    history = recorded_database(tmp_path, 0.001, PRICE_TICK_SECONDS=TICK)  # 86 ticks
    service = start_service(PRICE_TICK_SECONDS=TICK, DATABASE_URL=history)
    browser.get(f"{service.url}/")
    wait_until(lambda: all(t for t in state(browser)["ticks"]), 10, "prices on the page")
    first = state(browser)
    assert all(price.startswith("$") for price in first["prices"])
    assert all(points >= 60 for points in first["points"])  # the stored history, charted
    wait_until(
        lambda: all(
            int(now) > int(then)
            for now, then in zip(state(browser)["ticks"], first["ticks"], strict=True)
        ),
        2 * float(TICK) + 1.5,
        "every price to advance within two ticks",
    )
    later = state(browser)
    assert all(b > a or a >= 60 for a, b in zip(first["points"], later["points"], strict=True))
    assert errors_in_console(browser) == []
    foreign = [name for name in resources(browser) if not name.startswith(service.url)]
    assert foreign == []
    if target := os.environ.get("PAGE_SCREENSHOT"):
        time.sleep(2.5)  # a few more ticks on the chart
        browser.save_screenshot(str(Path(target)))


@pytest.mark.parametrize(
    ("transport", "most_polls"), [("poll", None), ("sse", 0), ("websocket", 0)]
)
def test_poll_asks_about_once_a_tick_and_sse_holds_one_stream(
    start_service: ServiceFactory, browser: webdriver.Chrome, transport: str, most_polls: int | None
) -> None:
    service = start_service(PRICE_TICK_SECONDS=TICK)
    browser.get(f"{service.url}/?transport={transport}")
    wait_until(lambda: all(t for t in state(browser)["ticks"]), 10, "prices on the page")
    started = int(state(browser)["ticks"][0])
    wait_until(lambda: int(state(browser)["ticks"][0]) >= started + 4, 10, "four more ticks")
    polls = [name for name in resources(browser) if "/v1/prices?" in name]
    if most_polls is None:
        assert 3 <= len(polls) <= 7, polls  # about one a tick over four or five ticks
    else:
        assert len(polls) == most_polls  # the prices came over the one open stream
        requests_counter = browser.find_element(By.ID, "requests").text
        assert requests_counter == "1"
    assert errors_in_console(browser) == []


def test_an_outage_is_shown_and_the_page_recovers_by_itself(
    start_service: ServiceFactory, browser: webdriver.Chrome
) -> None:
    port = str(free_port())
    service = start_service(PORT=port, PRICE_TICK_SECONDS=TICK)
    browser.get(f"{service.url}/?transport=poll")
    wait_until(lambda: all(t for t in state(browser)["ticks"]), 10, "prices on the page")
    assert service.stop() == 0
    wait_until(lambda: "unreachable" in state(browser)["notice"], 15, "the outage notice")
    stalled = int(state(browser)["ticks"][0])
    start_service(PORT=port, PRICE_TICK_SECONDS=TICK)
    wait_until(
        lambda: state(browser)["notice"] == "" and int(state(browser)["ticks"][0]) > stalled,
        40,
        "the page to recover by itself",
    )


def test_the_page_fits_a_small_phone_and_moves_nothing_when_motion_is_reduced(
    start_service: ServiceFactory, browser: webdriver.Chrome
) -> None:
    service = start_service(PRICE_TICK_SECONDS=TICK)
    browser.set_window_size(375, 800)
    browser.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-reduced-motion", "value": "reduce"}]},
    )
    browser.get(f"{service.url}/")
    wait_until(lambda: all(t for t in state(browser)["ticks"]), 10, "prices on the page")
    width = browser.execute_script("return [document.documentElement.scrollWidth, innerWidth]")
    assert width[0] <= width[1], width  # no sideways scrolling at 375 px
    assert browser.execute_script("return matchMedia('(prefers-reduced-motion: reduce)').matches")
    assert browser.execute_script("return document.getAnimations().length") == 0
    assert errors_in_console(browser) == []


def test_a_hidden_tab_stops_polling_and_a_visible_one_resumes(
    start_service: ServiceFactory, browser: webdriver.Chrome
) -> None:
    service = start_service(PRICE_TICK_SECONDS=TICK)
    browser.get(f"{service.url}/?transport=poll")
    wait_until(lambda: all(t for t in state(browser)["ticks"]), 10, "prices on the page")
    browser.execute_script(
        "window.changes = [];"
        "document.addEventListener('visibilitychange',"
        " () => changes.push([performance.now(), document.visibilityState]));"
    )
    page = browser.current_window_handle
    browser.switch_to.new_window("tab")  # the page's tab goes to the background
    time.sleep(4 * float(TICK))
    browser.switch_to.window(page)  # and comes back
    wait_until(
        lambda: len(browser.execute_script("return changes")) >= 2, 5, "hidden, then visible"
    )
    (hidden_at, first), (visible_at, second) = browser.execute_script("return changes")[:2]
    assert (first, second) == ("hidden", "visible")
    polls_at: list[float] = browser.execute_script(
        "return performance.getEntriesByType('resource')"
        ".filter(e => e.name.includes('/v1/prices?')).map(e => e.startTime)"
    )
    while_hidden = [t for t in polls_at if hidden_at + 300 < t < visible_at]
    assert while_hidden == [], (hidden_at, visible_at, polls_at)
    wait_until(
        lambda: len([n for n in resources(browser) if "/v1/prices?" in n]) >= len(polls_at) + 2,
        10,
        "polling to resume once the tab is visible",
    )


def wait_for_prices_after(
    browser: webdriver.Chrome, tick: int, timeout: float, what: str
) -> list[str]:
    """Wait until every price is past ``tick`` and the notice is gone; every notice the
    page showed meanwhile."""
    notices: list[str] = []

    def advanced() -> bool:
        shown = state(browser)
        if shown["notice"] and shown["notice"] not in notices:
            notices.append(shown["notice"])
        return not shown["notice"] and all(t and int(t) > tick for t in shown["ticks"])

    wait_until(advanced, timeout, what)
    return notices


def mark_the_page(browser: webdriver.Chrome) -> None:
    """A mark that a reload would wipe: the page must come back without one."""
    browser.execute_script("window.notReloaded = true")


def not_reloaded(browser: webdriver.Chrome) -> bool:
    return bool(browser.execute_script("return window.notReloaded === true"))


def test_the_page_on_sse_comes_back_by_itself_after_a_429(
    start_service: ServiceFactory, browser: webdriver.Chrome
) -> None:
    service = start_service(PRICE_TICK_SECONDS=TICK, RATE_LIMIT="12 per 6 seconds")
    for _ in range(12):  # the browser's budget (same address) spent before it opens
        requests.get(f"{service.url}/crypto-price", timeout=5)
    browser.get(f"{service.url}/?transport=sse")
    mark_the_page(browser)
    notices = wait_for_prices_after(browser, 0, 40, "the stream to come back after its 429")
    assert any("refused the stream (HTTP 429 rate_limited)" in n for n in notices), notices
    assert not_reloaded(browser)
    service.stop()
    statuses = [served.status for served in service.served("/v1/prices/stream")]
    assert statuses[:2] == [429, 200], statuses  # refused once, then back after the wait


@pytest.mark.parametrize("transport", ["sse", "websocket"])
def test_the_page_comes_back_by_itself_after_a_restart(
    start_service: ServiceFactory, browser: webdriver.Chrome, transport: str
) -> None:
    port = str(free_port())
    service = start_service(PORT=port, PRICE_TICK_SECONDS=TICK)
    browser.get(f"{service.url}/?transport={transport}")
    wait_until(lambda: all(t for t in state(browser)["ticks"]), 10, "prices on the page")
    mark_the_page(browser)
    assert service.stop() == 0
    stalled = max(int(t) for t in state(browser)["ticks"])
    time.sleep(2 * float(TICK))  # the browser finds nobody there, or a draining worker
    start_service(PORT=port, PRICE_TICK_SECONDS=TICK)
    wait_for_prices_after(browser, stalled, 40, "the page to come back by itself")
    assert not_reloaded(browser)


@pytest.mark.parametrize("transport", ["sse", "websocket"])
def test_the_page_comes_back_after_a_restart_behind_nginx(
    start_service: ServiceFactory, browser: webdriver.Chrome, tmp_path: Path, transport: str
) -> None:
    port = free_port()
    service = start_service(PORT=str(port), PRICE_TICK_SECONDS=TICK, TRUSTED_PROXIES="1")
    with nginx_in_front_of(port, tmp_path) as url:
        browser.get(f"{url}/?transport={transport}")
        wait_until(lambda: all(t for t in state(browser)["ticks"]), 10, "prices on the page")
        mark_the_page(browser)
        assert service.stop() == 0
        stalled = max(int(t) for t in state(browser)["ticks"])
        said = "upstream_unavailable" if transport == "sse" else "WebSocket closed"
        wait_until(
            lambda: said in state(browser)["notice"], 20, "the page to say nginx found no service"
        )
        start_service(PORT=str(port), PRICE_TICK_SECONDS=TICK, TRUSTED_PROXIES="1")
        wait_for_prices_after(browser, stalled, 40, "the page to come back through nginx")
        assert not_reloaded(browser)


def reference_median_ms(delays: list[float]) -> str:
    """The page's median as sorting every delay would give it: the upper middle one, in
    whole ms rounded half up, none below 0, 'Infinity' over DelayMedian.LIMIT_MS."""
    rounded = sorted(max(0, math.floor(d * 1000) + (d * 1000 % 1 >= 0.5)) for d in delays)
    middle = rounded[len(rounded) // 2]
    return "Infinity" if middle > DELAY_LIMIT_MS else str(middle)


DELAY_LIMIT_MS = 10000


def test_the_median_delay_is_exact_and_costs_the_same_per_quote_however_long_the_page_is_open(
    start_service: ServiceFactory, browser: webdriver.Chrome
) -> None:
    service = start_service(PRICE_TICK_SECONDS=TICK)
    browser.get(f"{service.url}/")
    assert browser.execute_script("return DelayMedian.LIMIT_MS") == DELAY_LIMIT_MS
    median_of = "const m = new DelayMedian(); arguments[0].forEach(d => m.add(d));"

    @settings(max_examples=300, deadline=None, database=None)
    @given(
        st.lists(
            st.one_of(
                st.floats(-2, 12, allow_nan=False),
                st.integers(-5, 10_005).map(lambda ms: ms / 1000),
                st.integers(-5, 10_005).map(lambda ms: (ms + 0.5) / 1000),
            ),
            min_size=1,
            max_size=40,
        )
    )
    def median_is_exact(delays: list[float]) -> None:
        shown = browser.execute_script(f"{median_of} return String(m.median());", delays)
        assert shown == reference_median_ms(delays)

    median_is_exact()
    # Per quote (one delay added, the median read): as many quotes as a page sees in
    # minutes, then in days (3 s ticks, four symbols), timed in the same browser.
    per_quote = browser.execute_script(
        "const cost = (quotes) => { const m = new DelayMedian(); const t = performance.now();"
        " for (let i = 0; i < quotes; i++) { m.add(Math.random() * 2); m.median(); }"
        " return (performance.now() - t) / quotes; };"
        " cost(2000); return [cost(2000), cost(100000)];"
    )
    assert per_quote[1] < 3 * per_quote[0], per_quote


def test_a_page_polling_for_long_keeps_nothing_per_poll_and_shows_the_served_median_delay(
    start_service: ServiceFactory, browser: webdriver.Chrome
) -> None:
    tick = 0.2
    service = start_service(PRICE_TICK_SECONDS=str(tick))
    browser.get(f"{service.url}/?transport=poll")
    wait_until(lambda: all(t for t in state(browser)["ticks"]), 10, "prices on the page")
    pending = []
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        pending.append(int(browser.execute_script("return document.body.dataset.pending")))
        time.sleep(0.1)
    shown = browser.find_element(By.ID, "delay").text
    service.stop()
    polls = [served for served in service.served("/v1/prices") if served.status == 200]
    assert len(polls) >= 25, len(polls)
    assert max(pending) <= 2, pending  # a sleep or a fetch pending, never one per poll
    # The server's side of each fresh poll: how far into its tick it was answered.
    into_tick = sorted(round((p.started_at - p.tick(tick) * tick) * 1000) for p in polls[1:])
    served_median = into_tick[len(into_tick) // 2]
    match = re.fullmatch(r"(\d+) ms \(median\)", shown)
    assert match, shown
    assert abs(int(match.group(1)) - served_median) <= 25, (shown, into_tick)


def to_fixed(value: float, digits: int) -> str:
    """JavaScript's Number.prototype.toFixed: the float's exact value, a tie rounded away
    from zero (Python's format rounds a tie such as 20.625 to even: 20.62, not 20.63)."""
    exact = decimal.Decimal(value).quantize(
        decimal.Decimal(1).scaleb(-digits), rounding=decimal.ROUND_HALF_UP
    )
    return f"{exact:f}"


def percent(value: float) -> str:
    """As the page writes a change."""
    return f"{'+' if value >= 0 else '-'}{to_fixed(abs(value), 2)} %"


def money(value: float) -> str:
    return f"${to_fixed(value, 2)}"


def shown_range(browser: webdriver.Chrome) -> dict[str, Any]:
    """The comparison chart's range and points, its legend, and the statistics tables."""
    shown: dict[str, Any] = browser.execute_script(
        """
        const chart = document.getElementById("comparison");
        const cells = (row) => [...row.querySelectorAll("td")].map((c) => c.textContent);
        const rows = (id) => Object.fromEntries(
          [...document.querySelectorAll(`#${id} tbody tr`)]
            .map((r) => [r.dataset.symbol, cells(r)]));
        const notice = document.getElementById("history-notice");
        return {
          range: chart.dataset.range, points: Number(chart.dataset.points),
          legend: Object.fromEntries([...document.querySelectorAll("#comparison-legend li")]
            .map((item) => [item.dataset.symbol, item.textContent.split(" ").slice(1).join(" ")])),
          window: document.getElementById("stats").dataset.window,
          stats: rows("stats"), correlation: rows("correlation"),
          notice: notice.hidden ? "" : notice.textContent,
        };
        """
    )
    return shown


def asked(browser: webdriver.Chrome, fragment: str) -> list[str]:
    """The URLs the page fetched that hold ``fragment``, in order."""
    return [name for name in resources(browser) if fragment in name]


def expected_stats_rows(stats: dict[str, Any]) -> dict[str, list[str]]:
    rows = {}
    for symbol, s in stats["symbols"].items():
        rows[symbol] = [
            money(s["first"]), money(s["last"]), percent(s["change_pct"]), money(s["min"]),
            money(s["max"]), money(s["mean"]), f"{to_fixed(s['volatility'] * 100, 3)} %",
            str(s["ticks"]),
        ]  # fmt: skip
    return rows


def test_each_range_charts_every_symbols_change_and_shows_its_statistics(
    start_service: ServiceFactory, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    # A week and a bit of 5-minute ticks: every range has candles to chart.
    history = recorded_database(tmp_path, 7.1, PRICE_TICK_SECONDS="300")
    service = start_service(PRICE_TICK_SECONDS="300", DATABASE_URL=history)
    browser.get(f"{service.url}/")
    wait_until(lambda: shown_range(browser)["window"] == "1h", 10, "the live range's statistics")
    for name, window in [("1h", "1h"), ("24h", "24h"), ("7d", "7d")]:
        Select(browser.find_element(By.ID, "range")).select_by_value(name)
        wanted = {"range": name, "window": window}
        wait_until(
            lambda: {k: shown_range(browser)[k] for k in wanted} == wanted,  # noqa: B023
            10,
            f"the {name} range",
        )
        shown = shown_range(browser)
        assert shown["notice"] == "" and f"range={name}" in browser.current_url
        # What the page shows against what the service answers to the same requests.
        candles = {}
        for symbol in service_symbols(service):
            (url,) = asked(browser, f"/v1/prices/{symbol}/candles?interval")[-1:]
            candles[symbol] = requests.get(url, timeout=5).json()["candles"]
        starts = {c["start"] for found in candles.values() for c in found}
        assert shown["points"] == len(starts) > 10
        for symbol, found in candles.items():
            change = (found[-1]["close"] / found[0]["open"] - 1) * 100
            assert shown["legend"][symbol] == percent(change), symbol
        stats = requests.get(asked(browser, "/v1/stats?")[-1], timeout=5).json()
        assert stats["window"] == window
        assert shown["stats"] == expected_stats_rows(stats)
        matrix = stats["correlation"]
        assert shown["correlation"] == {
            x: [to_fixed(matrix[x][y], 2) for y in matrix] for x in matrix
        }
        # And the statistics say what the minutes of their window say.
        minutes = [
            candle
            for start in range(int(stats["from"]), int(stats["to"]), 86_400)
            for candle in requests.get(
                f"{service.url}/v1/prices/BTC/candles?interval=1m&from={start}"
                f"&to={min(start + 86_400, stats['to'])}",
                timeout=5,
            ).json()["candles"]
        ]
        btc = stats["symbols"]["BTC"]
        assert (btc["first"], btc["last"]) == (minutes[0]["open"], minutes[-1]["close"])
        assert (btc["min"], btc["max"]) == (
            min(c["low"] for c in minutes),
            max(c["high"] for c in minutes),
        )
        assert btc["ticks"] == sum(c["ticks"] for c in minutes)
    assert errors_in_console(browser) == []


def service_symbols(service: Any) -> list[str]:
    return [
        quote["symbol"]
        for quote in requests.get(f"{service.url}/v1/prices", timeout=5).json()["prices"]
    ]


def test_the_live_range_compares_the_ticks_the_page_receives(
    start_service: ServiceFactory, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    history = recorded_database(tmp_path, 0.001, PRICE_TICK_SECONDS=TICK)  # 86 ticks
    service = start_service(PRICE_TICK_SECONDS=TICK, DATABASE_URL=history)
    browser.get(f"{service.url}/?range=live")
    wait_until(lambda: shown_range(browser)["points"] >= 60, 10, "the stored ticks compared")
    ticks = int(state(browser)["ticks"][0])
    wait_until(lambda: int(state(browser)["ticks"][0]) >= ticks + 2, 10, "two more ticks")
    # The legend and the prices, read at one moment: each symbol's change since the first
    # tick charted, against the service's own history of that tick.
    first, shown, prices = browser.execute_script(
        """return [Number(document.getElementById("comparison").dataset.from),
           Object.fromEntries([...document.querySelectorAll("#comparison-legend li")]
             .map((i) => [i.dataset.symbol, i.textContent.split(" ").slice(1).join(" ")])),
           Object.fromEntries([...document.querySelectorAll(".quote")]
             .map((c) => [c.dataset.symbol, c.querySelector(".price").textContent]))]"""
    )
    assert shown_range(browser)["points"] == 60  # the last 60 ticks, moving on
    for symbol, text in prices.items():
        (base,) = requests.get(
            f"{service.url}/v1/prices/{symbol}/history?from={first}&limit=1", timeout=5
        ).json()["prices"]
        assert base["updated_at"] == first
        assert shown[symbol] == percent((float(text[1:]) / base["price"] - 1) * 100), symbol
    assert shown_range(browser)["window"] == "1h" and errors_in_console(browser) == []


def test_a_history_database_that_does_not_answer_is_a_notice_and_prices_go_on(
    start_service: ServiceFactory, browser: webdriver.Chrome
) -> None:
    nobody = f"postgresql://crypto@127.0.0.1:{free_port()}/history"  # refused at once
    service = start_service(PRICE_TICK_SECONDS=TICK, DATABASE_URL=nobody)
    browser.get(f"{service.url}/?range=24h")
    wait_until(lambda: shown_range(browser)["notice"] != "", 10, "the history's notice")
    assert "not answering" in shown_range(browser)["notice"]
    ticks = state(browser)["ticks"][0]
    wait_until(lambda: state(browser)["ticks"][0] != ticks, 5, "live prices all the same")
    assert state(browser)["notice"] == ""
    # The browser logs each 503 it was given; nothing else (no script error).
    assert all("503" in entry["message"] for entry in errors_in_console(browser))


def operator_keys(url: str, *args: str) -> str:
    """``crypto-service keys *args`` on DATABASE_URL ``url``; its stdout."""
    command = str(Path(sys.executable).parent / "crypto-service")
    env = {"PATH": os.environ.get("PATH", ""), "DATABASE_URL": url, "LOG_LEVEL": "warning"}
    done = subprocess.run(
        [command, "keys", *args], env=env, check=True, capture_output=True, text=True, timeout=60
    )
    return done.stdout.strip()


def record_notices(browser: webdriver.Chrome) -> None:
    """Keep every text the page's notice shows, however briefly (window.notices)."""
    browser.execute_script(
        """window.notices = [];
        new MutationObserver(() => {
          const text = document.getElementById("notice").textContent;
          if (text) window.notices.push(text);
        }).observe(document.getElementById("notice"),
                   {childList: true, characterData: true, subtree: true});"""
    )


def notices(browser: webdriver.Chrome) -> list[str]:
    found: list[str] = browser.execute_script("return window.notices")
    return found


def test_a_key_entered_on_the_page_opens_its_streams_by_token_and_an_expired_token_is_said(
    start_service: ServiceFactory, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    history = recorded_database(tmp_path, 0.001, PRICE_TICK_SECONDS=TICK)
    key = operator_keys(history, "create", "--name", "page", "--limit", "600/minute")
    fingerprint = operator_keys(history, "list", "--json").split('"fingerprint": "')[1][:16]
    service = start_service(
        PRICE_TICK_SECONDS=TICK,
        DATABASE_URL=history,
        RATE_LIMIT="1/minute",  # without the key, the browser's address is soon refused
        TOKEN_TTL="10s",
        STREAM_LIFETIME_MINUTES="0.25",  # a stream ends after 15 s: the browser comes back
    )
    browser.get(f"{service.url}/?transport=sse")
    record_notices(browser)
    browser.find_element(By.ID, "api-key").send_keys(key)
    browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
    wait_until(lambda: fingerprint in browser.find_element(By.ID, "key-status").text, 10, "a token")
    tick = max(int(t or 0) for t in state(browser)["ticks"])
    wait_for_prices_after(browser, tick, 10, "prices from the keyed stream")
    # The stream ends at 15 s; EventSource comes back with the same URL, whose token
    # expired at 10 s: refused, said, and a new token opens the next stream.
    wait_until(lambda: any("token_expired" in text for text in notices(browser)), 40, "the refusal")
    shown = next(text for text in notices(browser) if "token_expired" in text)
    assert "refused the stream's token (HTTP 401 token_expired): The token expired at" in shown
    tick = max(int(t or 0) for t in state(browser)["ticks"])
    wait_for_prices_after(browser, tick, 15, "prices after a new token")
    Select(browser.find_element(By.ID, "transport")).select_by_value("websocket")
    tick = max(int(t or 0) for t in state(browser)["ticks"])
    wait_for_prices_after(browser, tick, 15, "prices from the keyed WebSocket")
    # Revoked: the next stream's token is refused, and the page says so.
    operator_keys(history, "revoke", "page")
    time.sleep(2.5)
    Select(browser.find_element(By.ID, "transport")).select_by_value("sse")
    wait_until(
        lambda: any(
            "The API key was refused (HTTP 401 unauthorized)" in n for n in notices(browser)
        ),
        15,
        "the revoked key's refusal on the page",
    )
    # The refusals this test causes (the page's first requests, anonymous, are 429s;
    # the revoked key's are 401s) are the only console errors.
    unexpected = [
        entry
        for entry in errors_in_console(browser)
        if not re.search(r"status of (401|429)", entry["message"])
    ]
    assert unexpected == []
    service.stop()
    streams = {
        route: [s for s in service.served(route) if s.client == fingerprint]
        for route in ("/v1/prices/stream", "/v1/prices/ws")
    }
    assert [s.status for s in streams["/v1/prices/stream"]][:2] == [200, 200]
    assert 200 in [s.status for s in streams["/v1/prices/stream"]]
    assert [s.status for s in streams["/v1/prices/ws"]][:1] == [101]
    # The expired token's refusal was the key's 401 (counted as a 401 in the log).
    refused = [s for s in service.served("/v1/prices/stream") if s.status == 401]
    assert refused and all(s.client == "invalid-token" for s in refused)
    assert key not in service.logs()
