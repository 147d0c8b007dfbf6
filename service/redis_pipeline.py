"""One Redis Lua script, called by many greenlets, sent in one pipeline per turn of the
event loop (the auto-pipelining of ioredis and node-redis, on redis-py's public
``Pipeline``).

Under gunicorn's gevent worker every request runs in a greenlet and each rate-limit check
is one ``EVALSHA``. Sent one by one, each costs a write and a read on both sides of the
connection and a trip through gevent's hub: measured, the largest single cost of a
request in production shape, more than Flask's own work (``bench/NOTES.md``). Here a
greenlet's call joins a batch and waits; the batch is sent by a greenlet of its own once
every greenlet made runnable in the same turn of the loop has had its turn, as one
pipeline (one write, one read), and each caller gets its own answer or its own error.
The commands are the same, one per call, in the order called: counts stay exact.

Without gevent's cooperative sockets (the gthread worker, tests) there is no loop to wait
for, and :func:`script_caller` gives redis-py's own ``Script`` instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.exceptions import NoScriptError

from service.greenlets import cooperative

Command = tuple[Sequence[str], Sequence[str | int]]  # a script's keys and arguments
ScriptCaller = Callable[[Sequence[str], Sequence[str | int]], Any]


def script_caller(client: redis.Redis, script: bytes) -> ScriptCaller:
    """A callable ``(keys, args) -> reply`` running ``script``: pipelined across greenlets
    when this process is cooperative, else redis-py's ``Script``."""
    if cooperative():
        return PipelinedScript(client, script)
    return client.register_script(script)


class PipelinedScript:
    """``(keys, args) -> reply`` for one Lua script, batching concurrent greenlets' calls
    into one pipeline. A connection failure reaches every caller of its batch; an error of
    one command (a key of the wrong type) reaches only its caller. A Redis that lost the
    script (restarted, ``SCRIPT FLUSH``) gets it loaded again and the calls it refused
    retried once."""

    def __init__(self, client: redis.Redis, script: bytes) -> None:
        self._client = client
        self._script = client.register_script(script)
        self._pending: list[tuple[Command, Any]] = []

    def __call__(self, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        import gevent
        from gevent.event import AsyncResult

        answer: AsyncResult = AsyncResult()
        if not self._pending:
            # Starts once the running greenlet waits and every greenlet made runnable in
            # the same turn of the loop has run (and joined the batch).
            gevent.spawn(self._send_batch)
        self._pending.append(((keys, args), answer))
        return answer.get()

    def _send_batch(self) -> None:
        batch, self._pending = self._pending, []
        try:
            replies = self._run([command for command, _ in batch])
        except BaseException as exc:  # the connection failed, or this greenlet was killed
            for _, answer in batch:
                answer.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return  # each caller raises it; the hub need not print it too
        for (_, answer), reply in zip(batch, replies, strict=True):
            if isinstance(reply, Exception):
                answer.set_exception(reply)
            else:
                answer.set(reply)

    def _run(self, commands: list[Command]) -> list[Any]:
        replies = self._pipeline(commands)
        refused = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if refused:
            self._client.script_load(self._script.script)
            retried = self._pipeline([commands[i] for i in refused])
            for i, reply in zip(refused, retried, strict=True):
                replies[i] = reply
        return replies

    def _pipeline(self, commands: list[Command]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for keys, args in commands:
            pipe.evalsha(self._script.sha, len(keys), *keys, *args)
        return pipe.execute(raise_on_error=False)
