"""``crypto-service keys``: what each command prints and changes, and that every bad input
(unknown or duplicate names, malformed names, limits and grace periods, no schema) is one
clear message and changes nothing."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service import key_commands
from service.cli import main
from service.database import create_engine
from service.key_format import fingerprint_of, is_well_formed
from service.key_store import KeyStore


@pytest.fixture
def database(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> str:
    url = f"sqlite:///{tmp_path}/keys.sqlite3"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("RATE_LIMIT", "120/minute")
    assert main(["db", "upgrade"]) == 0
    capsys.readouterr()
    return url


def listed(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    assert main(["keys", "list", "--json"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_create_prints_the_key_alone_once_and_list_never_shows_it(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "create", "--name", "ci", "--limit", "600/minute"]) == 0
    out, err = capsys.readouterr()
    key = out.strip()
    assert out == key + "\n" and is_well_formed(key)
    assert f"created key 'ci' ({fingerprint_of(key)}, limit 600/minute)" in err
    assert "not shown again" in err
    assert main(["keys", "list"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["NAME", "FINGERPRINT", "LIMIT"]
    assert "ci" in table and fingerprint_of(key) in table and key not in table
    (row,) = listed(capsys)
    assert row["name"] == "ci" and row["limit"] == "600/minute"
    assert (row["requests_24h"], row["last_used"], row["expires"]) == (0, "never", None)


def test_a_duplicate_or_unknown_name_is_one_line_and_changes_nothing(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "create", "--name", "ci"]) == 0
    capsys.readouterr()
    before = listed(capsys)
    assert main(["keys", "create", "--name", "ci"]) == 1
    assert capsys.readouterr() == (
        "",
        "crypto-service: a key named 'ci' exists already (rotate or revoke it)\n",
    )
    for command in (["keys", "revoke", "cd"], ["keys", "rotate", "cd"]):
        assert main(command) == 1
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("crypto-service: no key named 'cd'")
    assert listed(capsys) == before


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["keys", "create", "--name", ""], "--name"),
        (["keys", "create", "--name", "two words"], "--name"),
        (["keys", "create", "--name", "../etc"], "--name"),
        (["keys", "create", "--name", "x" * 65], "--name"),
        (["keys", "create", "--name", "ci", "--limit", "600/fortnight"], "--limit"),
        (["keys", "create", "--name", "ci", "--limit", "lots"], "--limit"),
        (["keys", "create", "--name", "ci", "--limit", "1/second;5/minute"], "--limit"),
        (["keys", "create"], "--name"),
        (["keys", "rotate", "ci", "--grace", "forever"], "--grace"),
        (["keys", "rotate", "ci", "--grace", "31d"], "--grace"),
        (["keys", "rotate", "ci", "--grace", "-1h"], "--grace"),
        (["keys", "revoke", "a b"], "NAME"),
        (["keys", "delete", "ci"], "ACTION"),
        (["keys"], "ACTION"),
    ],
)
def test_malformed_input_is_refused_by_name_and_changes_nothing(
    database: str, capsys: pytest.CaptureFixture[str], argv: list[str], named: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err
    assert listed(capsys) == []


def test_rotate_states_the_grace_and_revoke_stops_both_keys(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "create", "--name", "ci", "--limit", "5/second"]) == 0
    old = capsys.readouterr().out.strip()
    assert main(["keys", "rotate", "ci", "--grace", "2h"]) == 0
    out, err = capsys.readouterr()
    new = out.strip()
    assert is_well_formed(new) and new != old
    assert f"new {fingerprint_of(new)}; the old {fingerprint_of(old)} works until " in err
    assert err.rstrip().endswith("(grace 2h)")
    rows = listed(capsys)
    assert {row["fingerprint"] for row in rows} == {fingerprint_of(old), fingerprint_of(new)}
    assert all(row["limit"] == "5/second" for row in rows)
    assert main(["keys", "revoke", "ci"]) == 0
    out = capsys.readouterr().out
    assert fingerprint_of(old) in out and fingerprint_of(new) in out
    assert listed(capsys) == []
    engine = create_engine(database)
    assert KeyStore(engine).working()[1] == []
    engine.dispose()


def test_keys_on_a_database_without_the_schema_names_the_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/empty.sqlite3")
    assert main(["keys", "create", "--name", "ci"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "run `crypto-service db upgrade`" in err


@given(st.text(max_size=80))
def test_any_name_limit_or_grace_is_taken_or_refused_with_a_message(text: str) -> None:
    for parse in (key_commands._name, key_commands._limit, key_commands._grace):
        problems: list[str] = []
        try:
            parse(text)
        except argparse.ArgumentTypeError as refused:
            problems.append(str(refused))
        assert all(problems)  # a refusal always says why
