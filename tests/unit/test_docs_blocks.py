"""Every code block of README.md and docs/*.md is checked somewhere, so a doc that drifts fails: bash and
python blocks run in tests/integration/test_docs_run.py (or name the test that runs them, or say why they
cannot run here), yaml blocks parse (and agree with the project file they name), excerpts are lines of
their files, links and anchors resolve. Markers: see tests/docblocks.py."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from openpt.model.build import template_spec, verbalizer_spec
from openpt.spec import parse_yaml

from ..docblocks import DOCS, LANGUAGES, ROOT, Block, all_blocks, commands

BLOCKS = all_blocks()


def ids(blocks: list[Block]) -> list[str]:
    return [b.where for b in blocks]


def test_blocks_are_found():
    assert len(BLOCKS) > 30 and any(b.doc == "README.md" for b in BLOCKS)


@pytest.mark.parametrize("block", BLOCKS, ids=ids(BLOCKS))
def test_each_block_has_a_language_and_a_way_to_be_checked(block: Block):
    assert block.language in LANGUAGES, f"{block.where}: fenced block without a language (one of {LANGUAGES})"
    kind, argument = block.marker or (None, "")
    if kind == "not-runnable":
        assert len(argument.split()) >= 3, f"{block.where}: say why the block cannot run here"
    if kind == "tested-by":
        path, _, name = argument.partition("::")
        assert f"def {name}(" in (ROOT / path).read_text(encoding="utf-8"), f"{block.where}: no test {argument}"
    if kind == "file":
        assert (ROOT / argument).read_text(encoding="utf-8") == block.text, f"{block.where}: differs from {argument}"
    if kind == "continues":
        assert block.language == "python"
    if block.runs_here and block.language == "bash":
        for words in commands(block):
            assert words[0] in ("openpt", "python"), f"{block.where}: {words[0]!r} does not run here; mark the block"
            if words[0] == "python":
                assert words[1].endswith(".py") and (ROOT / words[1]).is_file(), f"{block.where}: {words[1]} is not a project script"


YAML_BLOCKS = [b for b in BLOCKS if b.language == "yaml"]


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=ids(YAML_BLOCKS))
def test_yaml_blocks_load_and_agree_with_the_file_they_name(block: Block):
    if block.kind == "alternatives":
        values = [parse_yaml(line, block.where) for line in block.text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        assert len(values) >= 2 and all(isinstance(v, dict) for v in values)
        return
    value = parse_yaml(block.text, block.where)
    assert isinstance(value, dict) and value
    if "text" in value and "[MASK]" in str(value["text"]):  # a template: openpt builds it
        template_spec(dict(value))
    elif "labels" in value and "backbone" not in value and "sweep" not in value:  # a verbalizer
        verbalizer_spec(dict(value))
    named = re.match(r"# ([\w/.-]+\.yaml)\b(.*)", block.text)
    if named and "abridged" not in named.group(2):
        shipped = parse_yaml((ROOT / named.group(1)).read_text(encoding="utf-8"), named.group(1))
        for key in value.keys() & shipped.keys():
            assert value[key] == shipped[key], f"{block.where}: {key} differs from {named.group(1)}"


EXCERPTS = [b for b in BLOCKS if b.kind == "excerpt"]


@pytest.mark.parametrize("block", EXCERPTS, ids=ids(EXCERPTS))
def test_excerpts_are_lines_of_their_files(block: Block):
    lines = {line.strip() for line in (ROOT / block.marker[1]).read_text(encoding="utf-8").splitlines()}
    for line in block.text.splitlines():
        assert not line.strip() or line.strip() in lines, f"{block.where}: {line.strip()!r} is not in {block.marker[1]}"


def test_no_command_hides_in_an_indented_block():
    for doc in DOCS:
        fenced = False
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            fenced ^= line.startswith("```")
            assert fenced or not re.match(r"^ {4}(openpt|python) ", line), f"{doc.name}:{number}: put the command in a fenced block"


def anchor(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_and_anchors_resolve():
    pages = [*DOCS, ROOT / "benchmarks" / "README.md", *sorted((ROOT / "examples").rglob("README.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            file, _, fragment = target.partition("#")
            path = (page.parent / file) if file else page
            assert path.exists(), f"{page.relative_to(ROOT)}: broken link {target}"
            if fragment and path.suffix == ".md":
                text, headings, fenced = path.read_text(encoding="utf-8"), set(), False
                for line in text.splitlines():
                    fenced ^= line.startswith("```")
                    if not fenced and line.startswith("#"):
                        headings.add(anchor(line.lstrip("#")))
                assert fragment in headings, f"{page.relative_to(ROOT)}: no heading for #{fragment} in {file or page.name}"
