"""Property tests of the template parser: total on any text, and format/parse round-trips."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from openpt.template.parser import parse_template
from openpt.template.segments import Mask, Placeholder, Soft, Text

FAST = settings(max_examples=200, deadline=None)
NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True)
TAGGY = st.text(alphabet="[]{}\\SOFTMASK*#:!0123456789\"', \nptx_", max_size=30)

texts = st.builds(Text, st.text(min_size=1))
placeholders = st.builds(Placeholder, NAMES.filter(lambda n: n != "text_a"), st.booleans())
softs = st.builds(
    Soft,
    st.one_of(st.none(), st.integers(1, 4096)),
    st.one_of(st.none(), st.text(min_size=1, max_size=12)),
    st.one_of(st.none(), st.sampled_from(["p", "q", "op1"])),
).filter(lambda s: s.length is not None or s.init_text is not None)
segment_lists = st.lists(st.one_of(texts, placeholders, softs, st.just(Mask())), min_size=1, max_size=12)


def load_fuzz_script():
    """benchmarks/fuzz_template.py: its property checks are the ones the long fuzz run uses."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "fuzz_template.py"
    spec = importlib.util.spec_from_file_location("fuzz_template", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FUZZ = load_fuzz_script()


def check_total(text: str) -> None:
    assert FUZZ.check_text(text) in ("parsed", "spec_error")


@FAST
@given(st.text())
def test_any_text_parses_or_fails_cleanly(text):
    check_total(text)


@FAST
@given(TAGGY)
def test_tag_like_text_parses_or_fails_cleanly(text):
    check_total(text)


@FAST
@given(segment_lists)
def test_format_round_trips(segments):
    assert FUZZ.check_segments(segments) == "round_trip"


@FAST
@given(st.text(min_size=1).filter(lambda t: not set(t) & set("[{\\")))
def test_plain_text_is_one_text(text):
    assert parse_template(text) == (Text(text),)
