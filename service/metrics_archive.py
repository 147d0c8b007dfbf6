"""Keep the multiprocess metrics directory flat while workers come and go.

prometheus-client's multiprocess mode keeps one file per dead worker forever, so every
worker recycle (``MAX_REQUESTS``) or crash makes ``/metrics`` slower (its issues #204,
#275, #367). Instead, when gunicorn reports a worker gone (``child_exit``, in the master),
its counters and histograms are added into ``*_archive.db`` files that only the master
writes, and its files are deleted. Totals never go down and the number of files stays
at (live workers + 1) per metric type.

Merging and scraping take a file lock (exclusive and shared): a scrape sees a dead
worker's samples either in its own file or in the archive, never both, never neither.
"""

from __future__ import annotations

import fcntl
import math
import os
import struct
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector

ARCHIVE = "archive"
LOCK_FILE = "archive.lock"
READ_ATTEMPTS = 5
# How a dead worker's samples combine with the archive, by file prefix.
MERGE_SUM = ("counter", "histogram", "summary", "gauge_sum")
MERGE_MAX = ("gauge_max",)
MERGE_MIN = ("gauge_min",)
MERGE_LATEST = ("gauge_mostrecent",)
# Live gauges describe live processes only, and "all" gauges are per process: dropped.


@contextmanager
def _locked(directory: Path, operation: int) -> Iterator[None]:
    with (directory / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle, operation)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _prefix_and_pid(path: Path) -> tuple[str, str]:
    """``counter_123.db`` -> ("counter", "123"); ``gauge_max_123.db`` -> ("gauge_max", "123")."""
    prefix, _, pid = path.stem.rpartition("_")
    return prefix, pid


def archive_dead_worker(directory: str | os.PathLike[str], pid: int) -> int:
    """Fold worker ``pid``'s samples into the archive and delete its files; returns the
    number of files removed."""
    root = Path(directory)
    removed = 0
    with _locked(root, fcntl.LOCK_EX):
        for path in sorted(root.glob(f"*_{pid}.db")):
            prefix, _ = _prefix_and_pid(path)
            if prefix.startswith(MERGE_SUM + MERGE_MAX + MERGE_MIN + MERGE_LATEST):
                _merge(path, root / f"{prefix}_{ARCHIVE}.db", prefix)
            path.unlink()
            removed += 1
    return removed


def _merge(source: Path, archive_path: Path, prefix: str) -> None:
    archive = MmapedDict(str(archive_path))
    try:
        existing = {key: (value, ts) for key, value, ts in archive.read_all_values()}
        for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(str(source)):
            if math.isnan(value):
                continue
            if key not in existing:
                merged, merged_timestamp = value, timestamp
            else:
                current, current_timestamp = existing[key]
                merged_timestamp = max(timestamp, current_timestamp)
                if prefix in MERGE_MAX:
                    merged = max(current, value)
                elif prefix in MERGE_MIN:
                    merged = min(current, value)
                elif prefix in MERGE_LATEST:
                    merged = value if timestamp >= current_timestamp else current
                else:
                    merged = current + value
            archive.write_value(key, merged, merged_timestamp)
    finally:
        archive.close()


class ArchiveAwareCollector(MultiProcessCollector):
    """prometheus-client's multiprocess collector, reading under the archive's shared lock."""

    def __init__(self, registry: CollectorRegistry | None, path: str) -> None:
        super().__init__(registry, path)
        self._root = Path(path)

    def collect(self) -> Sequence[Any]:
        for attempt in range(READ_ATTEMPTS):
            with _locked(self._root, fcntl.LOCK_SH):
                try:
                    return list(super().collect())
                except (struct.error, OSError):
                    # A worker booting right now may have created its file but not yet
                    # sized it; it holds no samples yet, so reading again shortly is right.
                    if attempt == READ_ATTEMPTS - 1:
                        raise
            time.sleep(0.005)
        raise AssertionError("unreachable")
