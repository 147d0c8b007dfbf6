"""The README's claims → tests table names tests that exist: renaming or deleting a test
breaks the table, and this says where."""

from __future__ import annotations

import re

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
