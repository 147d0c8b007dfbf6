"""service/redis_pipeline.py against a real redis-server: calls made by concurrent
greenlets reach Redis as one pipeline, and each caller gets its own answer or its own
error. Counted from Redis's side (its INFO stats), not from the caller's."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import gevent
import pytest
import redis

from service.greenlets import cooperative
from service.limiting import INCR_EXPIRE_PTTL
from service.redis_pipeline import PipelinedScript, script_caller
from tests.integration.conftest import HOST, RedisServer, free_port, redis_reads

WINDOW = 60


def outcome(script: PipelinedScript, key: str) -> Any:
    """The reply, or the Redis error the caller was given (a greenlet that raised would be
    printed by gevent's hub, which would hide whether the sender printed anything)."""
    try:
        return script([key], [WINDOW, 1])
    except redis.RedisError as exc:
        return exc


def run_together(script: PipelinedScript, keys: list[str]) -> list[Any]:
    greenlets = [gevent.spawn(outcome, script, key) for key in keys]
    gevent.joinall(greenlets, timeout=10, raise_error=True)
    assert all(g.ready() for g in greenlets), "a caller never got its answer"
    return [g.value for g in greenlets]


def test_concurrent_calls_reach_redis_as_one_pipeline_with_exact_counts(
    redis_storage: RedisServer,
) -> None:
    observer = redis.Redis(host=HOST, port=redis_storage.port)
    script = PipelinedScript(redis.Redis(host=HOST, port=redis_storage.port), INCR_EXPIRE_PTTL)
    run_together(script, ["warm-up"])  # connects and loads the script
    before = redis_reads(observer)
    replies = run_together(script, ["counter"] * 50)
    reads = redis_reads(observer) - before
    assert sorted(count for count, _ in replies) == list(range(1, 51))
    assert all(0 < left_ms <= WINDOW * 1000 for _, left_ms in replies)
    assert observer.get("counter") == b"50"
    # One pipeline: one read of the 50 commands (two if the kernel split the write), and
    # the observer's own INFO. Called one by one, they would be 50 reads.
    assert reads <= 3, reads


def test_one_commands_error_reaches_only_its_caller(redis_storage: RedisServer) -> None:
    observer = redis.Redis(host=HOST, port=redis_storage.port)
    observer.set("corrupted", "not a number")
    script = PipelinedScript(redis.Redis(host=HOST, port=redis_storage.port), INCR_EXPIRE_PTTL)
    replies = run_together(script, ["good", "good", "corrupted", "good"])
    assert isinstance(replies[2], redis.ResponseError)
    assert [replies[i][0] for i in (0, 1, 3)] == [1, 2, 3]


def test_a_dead_redis_fails_every_caller_and_prints_nothing(
    capfd: pytest.CaptureFixture[str],
) -> None:
    dead = redis.Redis(host=HOST, port=free_port(), socket_connect_timeout=0.5)
    script = PipelinedScript(dead, INCR_EXPIRE_PTTL)
    replies = run_together(script, ["a", "b", "c"])
    assert all(isinstance(reply, redis.ConnectionError) for reply in replies), replies
    # The callers raise it (the limiter then fails open or closed); the greenlet that sent
    # the batch does not raise it again into gevent's hub, which would print a traceback
    # per batch to the service's log while Redis is down.
    assert capfd.readouterr().err == ""


def test_a_script_redis_lost_is_loaded_again(redis_storage: RedisServer) -> None:
    observer = redis.Redis(host=HOST, port=redis_storage.port)
    script = PipelinedScript(redis.Redis(host=HOST, port=redis_storage.port), INCR_EXPIRE_PTTL)
    assert [r[0] for r in run_together(script, ["k", "k"])] == [1, 2]
    observer.script_flush()  # as after a Redis restart
    assert [r[0] for r in run_together(script, ["k", "k"])] == [3, 4]


def test_pipelining_is_chosen_only_on_gevents_cooperative_sockets() -> None:
    client = redis.Redis(host=HOST, port=free_port())
    assert not cooperative()
    assert isinstance(script_caller(client, INCR_EXPIRE_PTTL), redis.commands.core.Script)
    # As in gunicorn's gevent worker: sockets patched before the app is built.
    patched = subprocess.run(
        [
            sys.executable,
            "-c",
            "from gevent import monkey; monkey.patch_all()\n"
            "import redis\n"
            "from service.redis_pipeline import script_caller\n"
            "print(type(script_caller(redis.Redis(), b'return 1')).__name__)",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert patched.stdout.strip() == "PipelinedScript"
