"""Folding a dead worker's metric files into the archive: sums, maxima, latest values."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.mmap_dict import MmapedDict

from service.metrics_archive import ArchiveAwareCollector, archive_dead_worker


def key(metric: str, **labels: str) -> str:
    return json.dumps([metric, metric, labels, "help"], sort_keys=True)


def write(path: Path, values: dict[str, tuple[float, float]]) -> None:
    mmap = MmapedDict(str(path))
    for name, (value, timestamp) in values.items():
        mmap.write_value(name, value, timestamp)
    mmap.close()


def collected(directory: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    ArchiveAwareCollector(registry, str(directory))
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in registry.collect()
        for sample in family.samples
    }


def test_dead_workers_fold_into_the_archive_without_changing_any_total(tmp_path: Path) -> None:
    hits = key("hits", route="/a")
    write(tmp_path / "counter_11.db", {hits: (3.0, 0.0)})
    write(tmp_path / "counter_12.db", {hits: (4.0, 0.0)})
    write(tmp_path / "gauge_max_11.db", {key("tick"): (7.0, 0.0)})
    write(tmp_path / "gauge_max_12.db", {key("tick"): (9.0, 0.0)})
    write(tmp_path / "gauge_mostrecent_11.db", {key("price"): (1.5, 100.0)})
    write(tmp_path / "gauge_mostrecent_12.db", {key("price"): (2.5, 50.0)})
    write(tmp_path / "gauge_livesum_11.db", {key("in_flight"): (2.0, 0.0)})
    before = collected(tmp_path)

    assert archive_dead_worker(tmp_path, 11) == 4
    assert archive_dead_worker(tmp_path, 12) == 3
    after = collected(tmp_path)

    assert after[("hits", (("route", "/a"),))] == 7.0
    assert after[("hits", (("route", "/a"),))] == before[("hits", (("route", "/a"),))]
    assert after[("tick", ())] == 9.0
    assert after[("price", ())] == 1.5  # the most recent write wins, not the last merged
    assert ("in_flight", ()) not in after  # live gauges die with their process
    assert sorted(p.name for p in tmp_path.glob("*.db")) == [
        "counter_archive.db",
        "gauge_max_archive.db",
        "gauge_mostrecent_archive.db",
    ]


def test_archiving_an_unknown_pid_changes_nothing(tmp_path: Path) -> None:
    write(tmp_path / "counter_5.db", {key("hits"): (1.0, 0.0)})
    assert archive_dead_worker(tmp_path, 6) == 0
    assert collected(tmp_path)[("hits", ())] == 1.0


def test_the_private_prometheus_client_api_the_archive_uses_has_not_changed(
    tmp_path: Path,
) -> None:
    """service/metrics_archive.py merges files through prometheus-client's MmapedDict, which
    is not public API (nothing public merges a dead worker's files). pyproject.toml pins
    prometheus-client to the versions this passed with; if it fails after an upgrade, read
    prometheus_client/mmap_dict.py and adapt the archive before widening the pin."""
    path = tmp_path / "counter_1.db"
    mmap = MmapedDict(str(path))
    mmap.write_value("k", 2.5, 7.0)
    assert list(mmap.read_all_values()) == [("k", 2.5, 7.0)], (
        "MmapedDict.read_all_values no longer yields (key, value, timestamp)"
    )
    mmap.close()
    rows = list(MmapedDict.read_all_values_from_file(str(path)))
    assert [row[:3] for row in rows] == [("k", 2.5, 7.0)] and len(rows[0]) == 4, (
        "MmapedDict.read_all_values_from_file no longer yields (key, value, timestamp, pos)"
    )
