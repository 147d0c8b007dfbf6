"""Configuration: defaults that work, and one clear line naming the variable otherwise."""

from __future__ import annotations

from dataclasses import fields

import pytest

from service.config import ConfigError, Settings


def test_no_configuration_at_all_gives_working_defaults() -> None:
    settings = Settings.from_env({})
    assert (settings.host, settings.port) == ("0.0.0.0", 5000)
    assert settings.workers == 1 and settings.threads > 1
    assert settings.rate_limit_storage_uri == "memory://"
    assert settings.default_symbol == "BTC" and settings.symbols["BTC"] == 100.0
    assert len(settings.symbols) >= 4


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("PORT", "http", "expected an integer"),
        ("PORT", "70000", "between 1 and 65535"),
        ("WORKERS", "0", "between 1 and 64"),
        ("THREADS", "-3", "between 1 and 256"),
        ("PRICE_TICK_SECONDS", "nan", "between"),
        ("PRICE_TICK_SECONDS", "0", "between"),
        ("RATE_LIMIT", "lots", "expected one rate"),
        ("RATE_LIMIT", "1/second;5/minute", "expected one rate"),
        ("RATE_LIMIT_STORAGE_URI", "mongodb://db", "expected memory:// or redis://"),
        ("RATE_LIMIT_STRATEGY", "token-bucket", "must be one of"),
        ("RATE_LIMIT_FAIL_OPEN", "maybe", "true or false"),
        ("SYMBOLS", "BTC", "SYMBOL:BASE_PRICE"),
        ("SYMBOLS", "BTC:1,BTC:2", "listed twice"),
        ("SYMBOLS", "BTC:-1", "between 0.01"),
        ("SYMBOLS", "B/C:1", "SYMBOL:BASE_PRICE"),
        ("LOG_FORMAT", "xml", "json, console"),
        ("LOG_LEVEL", "loud", "must be one of"),
        ("LOG_FLUSH_SECONDS", "soon", "expected a number"),
        ("LOG_FLUSH_SECONDS", "60", "between 0 and 10"),
        ("TRUSTED_PROXIES", "many", "expected an integer"),
        ("FAULT_ERROR_RATE", "2", "between 0 and 1"),
        ("API_KEYS", "short", "key #1 must be 16-256"),
        ("MAX_HELD_CONNECTIONS", "12000", "leaving none for probes"),
        ("MAX_HELD_CONNECTIONS", "lots", "expected an integer"),
        ("ALLOWED_ORIGINS", "example.com", "expected origins"),
        ("ALLOWED_ORIGINS", "https://a.example/page", "expected origins"),
        ("DATABASE_URL", "mysql://db/prices", "expected sqlite:///"),
        ("DATABASE_URL", "/var/lib/prices.sqlite3", "got scheme 'none'"),
        ("DATABASE_URL", "sqlite://", "needs a file path"),
        ("HISTORY_RETENTION", "7", "expected a duration"),
        ("HISTORY_RETENTION", "7w", "expected a duration"),
        ("HISTORY_RETENTION", "59m", "between 1h and 3650d"),
        ("HISTORY_RETENTION", "9" * 40 + "d", "between 1h and 3650d"),
    ],
)
def test_bad_value_names_the_variable(variable: str, value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})
    assert caught.value.variable.startswith(variable)
    message = str(caught.value)
    assert message.startswith(variable) and fragment in message
    assert "\n" not in message


def test_many_workers_with_per_process_storage_are_refused() -> None:
    with pytest.raises(ConfigError, match="multiply RATE_LIMIT") as caught:
        Settings.from_env({"WORKERS": "3"})
    assert caught.value.variable == "WORKERS"
    shared = Settings.from_env({"WORKERS": "3", "RATE_LIMIT_STORAGE_URI": "redis://127.0.0.1:1"})
    assert shared.workers == 3


def test_recycled_workers_with_per_process_storage_are_refused() -> None:
    # Each recycled worker would start counting from zero: 10/minute let 31 of 60 through.
    with pytest.raises(ConfigError, match="RATE_LIMIT_STORAGE_URI=memory://") as caught:
        Settings.from_env({"MAX_REQUESTS": "20", "RATE_LIMIT": "10/minute"})
    assert caught.value.variable == "MAX_REQUESTS"
    assert "\n" not in str(caught.value)
    shared = Settings.from_env({"MAX_REQUESTS": "20", "RATE_LIMIT_STORAGE_URI": "redis://h:1"})
    assert shared.max_requests == 20


def test_api_keys_carry_their_own_limits_and_never_show_in_the_description() -> None:
    secret = "k" * 20
    settings = Settings.from_env(
        {
            "API_KEYS": f"{secret}=600/minute, {'z' * 16}",
            "RATE_LIMIT": "7/minute",
            "RATE_LIMIT_STORAGE_URI": "redis://:hunter2@redis:6379/0",
            "DATABASE_URL": "postgresql://prices:hunter2@db/prices",
        }
    )
    assert [settings.limit_of(k) for k in settings.api_keys] == ["600/minute", "7/minute"]
    described = repr(settings.describe()) + repr(settings)
    assert secret not in described and "z" * 16 not in described
    assert "hunter2" not in described and "***" in described


def test_a_bad_per_key_limit_does_not_echo_the_key() -> None:
    secret = "s" * 24
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"API_KEYS": f"{secret}=often"})
    assert secret not in str(caught.value) and "key #1" in str(caught.value)


def test_every_setting_is_read_from_its_variable_and_described() -> None:
    # One declaration per setting: a field that from_env or describe forgot would fail here.
    defaults = Settings()
    described = defaults.describe()
    assert set(described) == {spec.name for spec in fields(Settings)}
    env = {"PORT": "6001", "THREADS": "3", "LOG_FLUSH_SECONDS": "0", "FAULT_LATENCY_MS": "5"}
    changed = Settings.from_env(env)
    assert (changed.port, changed.threads, changed.log_flush_seconds) == (6001, 3, 0.0)
    assert changed.fault_latency_ms == 5 and changed.host == defaults.host
    assert Settings.from_env({"PROMETHEUS_MULTIPROC_DIR": "/m"}).metrics_dir == "/m"


def test_held_connections_leave_a_tenth_of_a_workers_slots_free_by_default() -> None:
    assert Settings.from_env({}).held_cap == 10_800  # of WORKER_CONNECTIONS=12000
    assert Settings.from_env({"WORKER_CONNECTIONS": "40"}).held_cap == 36
    assert Settings.from_env({"WORKER_CLASS": "gthread", "THREADS": "8"}).held_cap == 7
    assert Settings.from_env({"MAX_HELD_CONNECTIONS": "5"}).held_cap == 5
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"WORKER_CLASS": "gthread", "MAX_HELD_CONNECTIONS": "8"})
    assert caught.value.variable == "MAX_HELD_CONNECTIONS" and "THREADS" in str(caught.value)


def test_allowed_origins_are_normalised() -> None:
    settings = Settings.from_env({"ALLOWED_ORIGINS": "https://App.Example/, http://b.example:8080"})
    assert settings.allowed_origins == ("https://app.example", "http://b.example:8080")
