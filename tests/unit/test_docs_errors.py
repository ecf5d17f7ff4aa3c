"""docs/errors.md stays true: rows numbered in order from 1, every "entry N" reference elsewhere in the docs
points at the row it means, and every test a row names exists."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ERRORS = ROOT / "docs" / "errors.md"
ROW = re.compile(r"^\| (\d+) \|(.*)$", re.M)
# every "entry N" reference in the docs, with a word its row must hold: a renumbering that forgets one fails here
REFERENCES = {("docs/errors.md", 8): "python/object", ("docs/errors.md", 57): "pickle",
              ("docs/fault_tolerance.md", 63): "different run", ("docs/errors.md", 36): "missing field 'text'",
              ("docs/errors.md", 86): "missing field 'question'"}


def rows() -> dict[int, str]:
    return {int(m.group(1)): m.group(2) for m in ROW.finditer(ERRORS.read_text(encoding="utf-8"))}


def test_error_rows_are_numbered_in_order_from_one():
    numbers = [int(m.group(1)) for m in ROW.finditer(ERRORS.read_text(encoding="utf-8"))]
    assert numbers[0] == 1 and all(a < b for a, b in zip(numbers, numbers[1:])), "rows out of order or repeated"


def test_entry_references_point_at_the_row_they_mean():
    found = set()
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for m in re.finditer(r"\bentry (\d+)\b", path.read_text(encoding="utf-8")):
            found.add((str(path.relative_to(ROOT)), int(m.group(1))))
    assert found == set(REFERENCES)
    table = rows()
    for (_, number), word in REFERENCES.items():
        assert word in table[number], (number, table[number])


def test_every_test_a_row_names_exists():
    catalogue = (ROOT / "tests" / "unit" / "test_error_catalogue.py").read_text(encoding="utf-8")
    cli = (ROOT / "tests" / "unit" / "test_cli_errors.py").read_text(encoding="utf-8")
    for number, row in rows().items():
        test = row.rsplit("|", 2)[-2]
        for case in re.findall(r"\bE `([^`]+)`", test):
            assert f'"{case}"' in catalogue, (number, case)
        for name in re.findall(r"\bCLI `([^`]+)`", test):
            assert f"def {name}(" in cli, (number, name)
        for path, name in re.findall(r"`(tests/[\w/]+\.py)::(\w+)", test):
            assert f"def {name}(" in (ROOT / path).read_text(encoding="utf-8"), (number, path, name)
