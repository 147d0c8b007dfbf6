"""Whether this process runs on gevent (gunicorn's gevent worker patches it before it
loads the app), and calls that would block its loop run off it."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def cooperative() -> bool:
    """Whether this process runs on gevent's monkey-patched sockets."""
    if "gevent" not in sys.modules:
        return False
    from gevent import monkey

    return bool(monkey.is_module_patched("socket"))


def off_the_loop(call: Callable[[], T]) -> T:
    """``call()`` in a real thread of gevent's pool when this process is cooperative, so
    that the loop, and every stream and poll on it, goes on meanwhile (for calls that
    block without yielding, such as sqlite3's, which releases the GIL while it works);
    else simply ``call()``."""
    if not cooperative():
        return call()
    from gevent import get_hub

    result: T = get_hub().threadpool.apply(call)
    return result
