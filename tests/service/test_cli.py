"""``crypto-service``'s own options: --check-config, and one line for a bad variable."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from service.cli import main
from service.database import create_engine, head_revision
from service.history_store import HistoryStore


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


def test_db_check_names_the_command_then_upgrade_fixes_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], database_url: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert main(["db", "check"]) == 1
    assert "run `crypto-service db upgrade`" in capsys.readouterr().err
    assert main(["db", "upgrade"]) == 0
    assert capsys.readouterr().out == f"history schema: none -> {head_revision()}\n"
    assert main(["db", "check"]) == 0


def test_backfill_stores_every_tick_of_the_period_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/history.sqlite3"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("PRICE_TICK_SECONDS", "60")
    assert main(["backfill", "--days", "1"]) == 1  # no schema yet: said, nothing written
    assert "crypto-service db upgrade" in capsys.readouterr().err
    assert main(["db", "upgrade"]) == 0
    assert main(["backfill", "--days", "1"]) == 0
    assert "backfill: 5,764 quotes stored" in capsys.readouterr().out  # 1,441 ticks of 4
    assert main(["backfill", "--days", "1"]) == 0  # again: nothing new, nothing doubled
    out = capsys.readouterr().out
    assert "backfill: 0 quotes stored" in out or "backfill: 4 quotes stored" in out
    engine = create_engine(url)
    store = HistoryStore(engine)
    starts = [tick.start_ms for tick in store.ticks("BTC", 0, 2**62, 10_000)]
    assert len(starts) in (1441, 1442) and len(set(starts)) == len(starts)
    assert all(b - a == 60_000 for a, b in itertools.pairwise(starts))
    engine.dispose()


@pytest.mark.parametrize("days", ["0", "-1", "abc", "3651", "nan"])
def test_a_bad_backfill_period_is_refused_by_name(
    capsys: pytest.CaptureFixture[str], days: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["backfill", "--days", days])
    assert exited.value.code == 2
    assert "argument --days" in capsys.readouterr().err


def test_a_database_that_does_not_answer_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://prices:hunter2@127.0.0.1:1/prices")
    assert main(["db", "upgrade"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("crypto-service: DATABASE_URL: cannot use the database:")
    assert err.count("\n") == 1 and "hunter2" not in err


def test_an_init_container_upgrade_lets_a_pod_start_while_the_database_is_down(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://prices:hunter2@127.0.0.1:1/prices")
    assert main(["db", "upgrade", "--if-reachable"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("crypto-service: DATABASE_URL: not upgraded now:")
    assert err.count("\n") == 1 and "hunter2" not in err
    assert main(["db", "check", "--if-reachable"]) == 1  # only an upgrade may pass so


def test_an_init_container_upgrade_of_a_database_that_answers_upgrades_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/h.sqlite3")
    assert main(["db", "upgrade", "--if-reachable"]) == 0
    assert main(["db", "check"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("history schema: ")
