"""A SQLite query under gevent, run off the loop, leaves the loop's other greenlets going;
run on it, it stops them for as long as it takes (checked both ways, in a process of its
own that gevent has patched, as gunicorn's gevent worker is); the history store's SQLite
reads run so."""

from __future__ import annotations

import json
import subprocess
import sys

from service.greenlets import cooperative, off_the_loop

PROGRAM = """
from gevent import monkey
monkey.patch_all()
import json, sqlite3, sys, time
import gevent
from service.greenlets import cooperative, off_the_loop

connection = sqlite3.connect(":memory:", check_same_thread=False)
SLOW = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000)"
        " SELECT count(*) FROM c")
beats = []

def heart():
    while True:
        beats.append(time.monotonic())
        gevent.sleep(0.01)

def longest_pause(run):
    beats.clear()
    beating = gevent.spawn(heart)
    gevent.sleep(0.05)
    started = time.monotonic()
    answer = run(lambda: connection.execute(SLOW).fetchone()[0])
    took = time.monotonic() - started
    gevent.sleep(0.05)
    beating.kill()
    gaps = [b - a for a, b in zip(beats, beats[1:])]
    return {"answer": answer, "took": took, "longest_pause": max(gaps)}

import tempfile, threading
import sqlalchemy as sa
from service.database import create_engine, upgrade
from service.history_store import HistoryStore

engine = create_engine(f"sqlite:///{tempfile.mkdtemp()}/history.sqlite3")
upgrade(engine)
readers = set()
sa.event.listen(engine, "before_cursor_execute",
                lambda *args: readers.add(threading.get_native_id()))
readers.clear()
HistoryStore(engine).candles("BTC", 60, 0, 2**62)

print(json.dumps({
    "history_read_in_the_loop_thread": threading.get_native_id() in readers,
    "history_reads": len(readers),
    "cooperative": cooperative(),
    "on_the_loop": longest_pause(lambda call: call()),
    "off_the_loop": longest_pause(off_the_loop),
}))
"""


def test_a_blocking_query_off_the_loop_leaves_the_other_greenlets_going() -> None:
    found = json.loads(
        subprocess.run(
            [sys.executable, "-c", PROGRAM], capture_output=True, text=True, check=True, timeout=60
        ).stdout
    )
    assert found["cooperative"] is True
    # The history store's SQLite reads are such calls: in a thread of gevent's pool.
    assert found["history_reads"] == 1 and not found["history_read_in_the_loop_thread"]
    on, off = found["on_the_loop"], found["off_the_loop"]
    assert on["answer"] == off["answer"] == 2_000_000
    assert on["took"] > 0.2  # long enough to tell: the loop stood still that long
    assert on["longest_pause"] >= 0.9 * on["took"]
    assert off["longest_pause"] < 0.2 * off["took"], found  # heartbeats went on


def test_without_gevent_it_is_a_plain_call() -> None:
    assert not cooperative()
    assert off_the_loop(lambda: 42) == 42
