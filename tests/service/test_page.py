"""The page at / and its files: headers, caching, the vendored chart library, and that
none of it is counted against the price budget."""

from __future__ import annotations

import flask

from service.page import UPLOT_VERSION
from tests.conftest import AppFactory


def test_the_page_lists_every_symbol_and_the_chosen_transport(
    client: flask.testing.FlaskClient,
) -> None:
    page = client.get("/?transport=sse")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert 'data-transport="sse"' in html and 'data-symbols="BTC,ETH,SOL,XRP"' in html
    assert 'aria-live="polite"' in html
    assert 'data-transport="poll"' in client.get("/?transport=carrier-pigeon").get_data(
        as_text=True
    )


def test_headers_forbid_inline_code_and_framing(client: flask.testing.FlaskClient) -> None:
    page = client.get("/")
    policy = page.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "frame-ancestors 'none'" in policy and "default-src 'self'" in policy
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert "<script>" not in page.get_data(as_text=True)  # scripts are files only


def test_static_files_revalidate_and_the_vendored_library_is_cached_long(
    client: flask.testing.FlaskClient,
) -> None:
    script = client.get("/static/page.js")
    assert script.status_code == 200 and script.headers["Cache-Control"] == "no-cache"
    etag = script.headers["ETag"]
    assert client.get("/static/page.js", headers={"If-None-Match": etag}).status_code == 304
    vendored = client.get("/static/vendor/uplot/uPlot.iife.min.js")
    assert "immutable" in vendored.headers["Cache-Control"]
    assert vendored.get_data(as_text=True).startswith(
        f"/*! https://github.com/leeoniya/uPlot (v{UPLOT_VERSION}) */"
    )
    assert client.get("/static/vendor/uplot/LICENSE").status_code == 200
    assert client.get("/favicon.ico").mimetype == "image/svg+xml"


def test_the_page_and_its_files_cost_no_price_budget(make_app: AppFactory) -> None:
    client = make_app(RATE_LIMIT="1/minute").test_client()
    for path in ("/", "/static/page.js", "/static/page.css", "/favicon.ico") * 3:
        assert client.get(path).status_code == 200, path
        client.get(path).close()
    assert client.get("/crypto-price").status_code == 200  # the budget is still whole
    assert client.get("/crypto-price").status_code == 429
