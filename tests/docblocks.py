"""The code blocks of README.md and docs/*.md, with the marker that says how each one is checked.

A fenced block's language is ``bash``, ``python``, ``yaml`` or ``text`` (not code). The HTML comment on
the line just before the fence (invisible when rendered) says how a block is checked:

* none: a ``bash`` block runs (every command is ``openpt ...`` or ``python SCRIPT ...``), a ``python``
  block runs, a ``yaml`` block parses with openpt's YAML loader and, when its first line is a
  ``# path.yaml`` comment of a file in the project (not "abridged"), equals that file;
* ``<!-- continues -->``: a python block run after the python blocks before it, in one namespace;
* ``<!-- file: PATH -->``: the block is the file PATH of the project, as it is, and runs as above;
* ``<!-- excerpt: PATH -->``: every line of the block is a line of PATH (not run);
* ``<!-- alternatives -->``: a yaml block whose lines are alternatives, each parsed alone;
* ``<!-- tested-by: tests/...py::test_name -->``: that test runs it;
* ``<!-- not-runnable: REASON -->``: not run here, for the reason given.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LANGUAGES = ("bash", "python", "yaml", "text")
MARKER = re.compile(r"^<!-- (continues|file|excerpt|alternatives|tested-by|not-runnable)(?:: (.+?))? -->$")


@dataclass
class Block:
    """One fenced block: where it is, its language, its text and its marker (kind, argument)."""

    doc: str
    line: int
    language: str
    text: str
    marker: tuple[str, str] | None

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def kind(self) -> str | None:
        return self.marker[0] if self.marker else None

    @property
    def runs_here(self) -> bool:
        """Whether the docs test runs it (bash and python blocks without a not-run marker)."""
        return self.language in ("bash", "python") and self.kind in (None, "continues", "file")


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of ``path``, in order."""
    lines = path.read_text(encoding="utf-8").split("\n")
    found, i = [], 0
    while i < len(lines):
        fence = re.match(r"^```(\S*)\s*$", lines[i])
        if fence:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            marker = MARKER.match(lines[i - 1].strip()) if i else None
            found.append(Block(str(path.relative_to(ROOT)), i + 1, fence.group(1), "\n".join(lines[i + 1:end]) + "\n",
                               (marker.group(1), marker.group(2) or "") if marker else None))
            i = end
        i += 1
    return found


def all_blocks() -> list[Block]:
    return [b for doc in DOCS for b in blocks(doc)]


def commands(block: Block) -> list[list[str]]:
    """The commands of a bash block: continuation lines joined, comments and blank lines dropped."""
    text = re.sub(r"\\\n\s*", " ", block.text)
    out = []
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            out.append(words)
    return out
