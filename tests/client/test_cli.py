"""crypto-poll's options: flags and CRYPTO_POLL_* variables, and clear usage errors."""

from __future__ import annotations

from click.testing import CliRunner

from client.cli import main
from tests.scripted_server import Answer, ScriptedServer, quote_body

JSON = {"Content-Type": "application/json"}


def test_environment_variables_set_options() -> None:
    body = {
        "prices": [{k: v for k, v in quote_body().items() if k != "timestamp"}] * 2,
        "timestamp": 1692789123.456,
    }
    with ScriptedServer([Answer(200, body, JSON)]) as server:
        result = CliRunner().invoke(
            main,
            [],
            env={
                "CRYPTO_POLL_URL": server.url,
                "CRYPTO_POLL_COUNT": "1",
                "CRYPTO_POLL_SYMBOL": "btc eth",
                "CRYPTO_POLL_OUTPUT": "text",
            },
        )
        assert server.requests[0]["path"] == "/v1/prices?symbols=BTC%2CETH"
    assert result.exit_code == 0, result.output
    assert "Price: $100.00 | Time: 1692789123.46 | BTC | change: n/a" in result.stdout


def test_bad_values_are_usage_errors_naming_the_option_or_variable() -> None:
    runner = CliRunner()
    bad_flag = runner.invoke(main, ["--interval", "soon"])
    assert bad_flag.exit_code == 2 and "--interval" in bad_flag.stderr
    bad_env = runner.invoke(main, [], env={"CRYPTO_POLL_MAX_ATTEMPTS": "0"})
    assert bad_env.exit_code == 2 and "CRYPTO_POLL_MAX_ATTEMPTS" in bad_env.stderr
    bad_url = runner.invoke(main, ["--url", "localhost:5000"])
    assert bad_url.exit_code == 2 and "http(s)://" in bad_url.stderr
    bad_symbol = runner.invoke(main, ["--symbol", "B/C"])
    assert bad_symbol.exit_code == 2 and "not a symbol" in bad_symbol.stderr
