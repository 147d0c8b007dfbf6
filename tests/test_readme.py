"""The README's claims → tests table names tests that exist: renaming or deleting a test
breaks the table, and this says where; and its comparison and scale figures are those of
the committed runs (bench/compare.json, bench/scale.json)."""

from __future__ import annotations

import json
import re

from bench import compare_report, deflate, keycost, report, workercpu
from bench.scale import goals_table, readme_table
from tests.conftest import TESTS

README = TESTS.parent / "README.md"
PREFIXES = {"c/": "tests/client/", "s/": "tests/service/", "i/": "tests/integration/"}
REFERENCE = re.compile(r"`((?:[csi]/|tests/)[\w/]+\.py|…)(?:::(\w+))?`")


def table_references() -> list[tuple[str, str | None]]:
    text = README.read_text()
    table = text[text.index("**Claims → tests.**") : text.index("**The suite waits on")]
    references: list[tuple[str, str | None]] = []
    last_file = ""
    for path, name in REFERENCE.findall(table):
        if path == "…":
            path = last_file
        for short, full in PREFIXES.items():
            if path.startswith(short):
                path = full + path.removeprefix(short)
        last_file = path
        references.append((path, name or None))
    return references


def test_every_test_the_readme_names_exists() -> None:
    references = table_references()
    assert len(references) > 30
    for path, name in references:
        source = TESTS.parent / path
        assert source.exists(), f"README names {path}, which does not exist"
        if name is not None:
            assert f"def {name}(" in source.read_text(), f"README names {path}::{name}"


def test_the_readmes_scale_figures_are_the_committed_runs() -> None:
    report = json.loads((TESTS.parent / "bench" / "scale.json").read_text())
    text = README.read_text()
    assert readme_table(report) in text, "README's scale table != bench/scale.json"
    assert goals_table(report) in text, "README's goals table != bench/scale.json"


def test_the_readmes_comparison_figures_are_the_committed_run() -> None:
    results = json.loads((TESTS.parent / "bench" / "compare.json").read_text())
    text = README.read_text()
    assert compare_report.readme_table(results) in text, "README's table != bench/compare.json"
    assert compare_report.readme_findings(results) in text, "README's figures != compare.json"


def test_the_readmes_compression_figures_are_the_committed_run() -> None:
    report = json.loads((TESTS.parent / "bench" / "deflate.json").read_text())
    assert deflate.readme_line(report) in README.read_text(), "README != bench/deflate.json"


def test_the_readmes_key_cost_is_the_committed_run() -> None:
    report = json.loads((TESTS.parent / "bench" / "keys.json").read_text())
    assert keycost.readme_line(report) in README.read_text(), "README != bench/keys.json"


def test_the_readmes_bench_and_soak_figures_are_the_committed_runs() -> None:
    text = README.read_text()
    results = json.loads((TESTS.parent / "bench" / "results.json").read_text())
    soak = json.loads((TESTS.parent / "bench" / "soak.json").read_text())
    assert report.readme_bench(results) in text, "README != bench/results.json"
    assert report.readme_soak(soak) in text, "README != bench/soak.json"


def test_the_readmes_old_against_new_figures_are_the_committed_runs() -> None:
    text = README.read_text()
    for name in ("workercpu_embedded.json", "workercpu_production.json"):
        record = json.loads((TESTS.parent / "bench" / name).read_text())
        assert workercpu.readme_line(record) in text, f"README != bench/{name}"
