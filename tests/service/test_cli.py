"""``crypto-service``'s own options: --check-config, and one line for a bad variable."""

from __future__ import annotations

import pytest

from service.cli import main


def test_check_config_prints_the_effective_configuration_with_secrets_masked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PRICE_SEED", "very-secret-seed")
    monkeypatch.setenv("THREADS", "4")
    assert main(["--check-config"]) == 0
    out = capsys.readouterr().out
    assert "threads=4\n" in out and "price_seed=***\n" in out
    assert "very-secret-seed" not in out


def test_a_bad_variable_is_one_line_and_exit_status_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("THREADS", "many")
    assert main(["--check-config"]) == 2
    err = capsys.readouterr().err
    assert err == "crypto-service: configuration error: THREADS: expected an integer, got 'many'\n"
