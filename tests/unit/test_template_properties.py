"""Property tests of the template parser: total on any text, and format/parse round-trips."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from openpt.errors import SpecError
from openpt.template.parser import format_template, merge_segments, parse_template
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


def normalise(segments: list) -> tuple:
    """Merge adjacent texts and make every named soft run match its first occurrence."""
    first: dict[str, Soft] = {}
    out = []
    for seg in segments:
        if isinstance(seg, Soft) and seg.name is not None:
            seg = first.setdefault(seg.name, seg)
        out.append(seg)
    return merge_segments(out)


def check_total(text: str) -> None:
    try:
        segments = parse_template(text)
    except SpecError as exc:
        assert exc.line is not None and exc.line >= 1 and exc.column is not None and exc.column >= 1
        return
    assert segments and all(isinstance(s, (Text, Placeholder, Mask, Soft)) for s in segments)
    assert merge_segments(segments) == segments
    assert parse_template(format_template(segments)) == segments


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
    segments = normalise(segments)
    assert parse_template(format_template(segments)) == segments


@FAST
@given(st.text(min_size=1).filter(lambda t: not set(t) & set("[{\\")))
def test_plain_text_is_one_text(text):
    assert parse_template(text) == (Text(text),)
