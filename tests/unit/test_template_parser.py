"""Template language: inline and OpenPrompt syntax, rendering, YAML template files."""
from __future__ import annotations

from pathlib import Path

import pytest

from openpt.errors import SpecError
from openpt.spec import parse_yaml
from openpt.template.parser import format_template, parse_openprompt_template, parse_template
from openpt.template.segments import Mask, Placeholder, Soft, Text
from openpt.template.spec import TemplateSpec, load_template_spec, template_spec_from_mapping, template_spec_from_text

REPO = Path(__file__).resolve().parents[2]
T, P, M, S = Text, Placeholder, Mask, Soft

INLINE = [
    ("{text} It was [MASK].", (P("text"), T(" It was "), M(), T("."))),
    ("{text_a} {text_b}", (P("text"), T(" "), P("text_b"))),
    ("{text!full}[MASK]", (P("text", shortenable=False), M())),
    ("[SOFT] [SOFT*20]", (S(1), T(" "), S(20))),
    ("[SOFT:It was][MASK]", (S(None, "It was"), M())),
    ("[SOFT*20:It was][MASK]", (S(20, "It was"), M())),
    ("[SOFT#p]", (S(1, None, "p"),)),
    ("[SOFT#p*4] x [SOFT#p]", (S(4, None, "p"), T(" x "), S(4, None, "p"))),
    ("[SOFT#p*4:It was][SOFT#p][SOFT#p*4:It was]", (S(4, "It was", "p"),) * 3),
    ("[SOFT#p:It was][SOFT#q]", (S(None, "It was", "p"), S(1, None, "q"))),
    ("  two  spaces\n and a newline ", (T("  two  spaces\n and a newline "),)),
    (r"\{text\} \[MASK] a\\b", (T(r"{text} [MASK] a\b"),)),
    (r"[SOFT:a\]b\\c [x]]", (S(None, r"a]b\c [x"), T("]"))),
    ("a]b}c", (T("a]b}c"),)),
    (r"\{" + '"not openprompt"}', (T('{"not openprompt"}'),)),
    ("[SOFT*4096]", (S(4096),)),
]


@pytest.mark.parametrize("text,expected", INLINE)
def test_inline(text, expected):
    assert parse_template(text) == expected
    assert parse_template(format_template(expected)) == expected


OPENPROMPT = [
    ('{"placeholder":"text_a"} It was {"mask"}.', (P("text"), T(" It was "), M(), T("."))),
    ("{'placeholder': 'text_b', 'shortenable': False}", (P("text_b", shortenable=False),)),
    ('{"meta": "entity"} is {"meta": "x", "shortenable": true}', (P("entity", False), T(" is "), P("x"))),
    ('{"soft"}{"soft": "It was"}{"soft": None, "duplicate": 20}', (S(1), S(None, "It was"), S(20))),
    ('{"soft": "a b", "duplicate": 3}', (S(3, "a b"),)),
    ('{"soft": None, "duplicate": 3, "same": True}', (S(1, None, "op_same1"),) * 3),
    ('{"soft":null,"duplicate":2,"same":true} {"soft":null,"duplicate":2,"same":true}',
     (S(1, None, "op_same1"),) * 2 + (T(" "),) + (S(1, None, "op_same2"),) * 2),
    ('{"soft": "x", "soft_id": 1} {"soft_id": 1} {"soft_id": 2}',
     (S(None, "x", "op1"), T(" "), S(None, "x", "op1"), T(" "), S(1, None, "op2"))),
    ('{"soft": None, "duplicate": 2, "same": True, "soft_id": 3}{"soft_id": 3}', (S(1, None, "op3"),) * 4),
    ('{"text": "It \\"was\\" {[x]}"} [MASK]', (T('It "was" {[x]} [MASK]'),)),
    ('{ "mask" , }', (M(),)),
]


@pytest.mark.parametrize("text,expected", OPENPROMPT)
def test_openprompt(text, expected):
    assert parse_template(text) == expected
    assert parse_openprompt_template(text) == expected
    assert parse_template(format_template(expected)) == expected


ERRORS = [
    ("x [MAKS]", "line 1:3: unknown tag '[MAKS]'; expected [MASK], [SOFT], [SOFT*N], [SOFT:text] or "
     "[SOFT#name...]; write \\[ for a literal bracket"),
    ("{text It was", "line 1:1: unclosed placeholder '{text It was'; expected {name}; write \\{ for a literal brace"),
    ("ab\n  [SOFT*0]", "line 2:9: soft length must be a whole number 1..4096, got '0' in '[SOFT*0]'"),
    ("[SOFT*4097]", "line 1:7: soft length must be a whole number 1..4096, got '4097' in '[SOFT*4097]'"),
    ("[SOFT*abc]", "line 1:7: soft length must be a whole number 1..4096, got 'abc' in '[SOFT*abc]'"),
    ("a {}", "line 1:3: empty placeholder '{}'; expected {name}; write \\{ for a literal brace"),
    ("{1x}", "line 1:2: invalid field name '1x' in '{1x}'; use letters, digits and _"),
    ("{text!keep}", "line 1:6: unknown modifier '!keep' in '{text!keep}'; only !full (never shorten) is supported"),
    ("[SOFT#a-b]", "line 1:7: invalid soft name 'a-b' in '[SOFT#a-b]'; use letters, digits and _"),
    ("[SOFT:]", "line 1:1: empty init text in '[SOFT:]'; write [SOFT] for one soft token"),
    ("[SOFT:abc", "line 1:1: unclosed tag '[SOFT:abc'; a [SOFT:...] tag ends at the first unescaped ]"),
    ("[SOFT*2", "line 1:1: unclosed tag '[SOFT*2'; expected [MASK], [SOFT], [SOFT*N], [SOFT:text] or "
     "[SOFT#name...]; write \\[ for a literal bracket"),
    ("[SOFT#p*2] [SOFT#p*3]", "line 1:12: soft run #p is [SOFT#p*3] here but was first declared as [SOFT#p*2]; "
     "later uses must match or be just [SOFT#p] (at '[SOFT#p*3]')"),
    ("[SOFT#p] [SOFT#p:x]", "line 1:10: soft run #p is [SOFT#p:x] here but was first declared as [SOFT#p]; "
     "later uses must match or be just [SOFT#p] (at '[SOFT#p:x]')"),
    ("a\\n", "line 1:2: unknown escape '\\n'; only \\{ \\[ \\] \\} and \\\\ are escapes"),
    ("a\\", "line 1:2: unknown escape '\\'; only \\{ \\[ \\] \\} and \\\\ are escapes"),
    ("", "line 1:1: empty template"),
    ('{"mask", "post_processing": lambda x: x}', "line 1:10: unsupported key 'post_processing' in OpenPrompt dict; "
     "supported: placeholder, meta, shortenable, mask, soft, duplicate, same, soft_id, text"),
    ('{"placeholder": "text_a"} {text}', "line 1:28: expected a quoted key in OpenPrompt dict, found 'text}' "
     '(in OpenPrompt syntax every { starts a dict such as {"placeholder":"text_a"})'),
    ('{"mask"', "line 1:1: unclosed OpenPrompt dict '{\"mask\"'; expected }"),
    ('{"mask"}\n {"soft": None, "duplicate": 0}', "line 2:30: 'duplicate' must be 1..4096, got 0"),
    ('{"soft": None, "duplicate": 2.5}', "line 1:29: 'duplicate' expects a whole number 1..4096"),
    ('{"placeholder": "text_a", "soft": "x"}', "line 1:1: an OpenPrompt dict needs exactly one of placeholder, "
     "meta, mask, soft, soft_id, text"),
    ('{"mask", "shortenable": False}', "line 1:10: key 'shortenable' cannot be combined with 'mask'"),
    ('{"mask"} {}', "line 1:10: empty dict '{}' in OpenPrompt syntax; expected e.g. {\"mask\"}"),
    ('{"soft": "a", "soft_id": 1} {"soft": "b", "soft_id": 1}', "line 1:29: soft_id 1 was first used for a "
     'different soft run; later uses must match or be {"soft_id": 1}'),
    ('{"text": "abc}', "line 1:10: unterminated string '\"abc}'"),
]


@pytest.mark.parametrize("text,message", ERRORS)
def test_errors(text, message):
    with pytest.raises(SpecError) as info:
        parse_template(text)
    assert str(info.value) == message


def test_error_offsets_into_file():
    with pytest.raises(SpecError) as info:
        parse_template("{text} [MAKS]", source="t.yaml", line=4, column=10)
    assert str(info.value).startswith("t.yaml:4:17: unknown tag '[MAKS]'")
    assert (info.value.line, info.value.column) == (4, 17)
    with pytest.raises(SpecError) as info:  # later template lines: the column counts within the line
        parse_template("{text}\n [MAKS]", source="t.yaml", line=4, column=10)
    assert (info.value.line, info.value.column) == (5, 2)


def test_format_escapes_and_rejects():
    segs = (T("a{b[c\\d]"), S(2, "x]y[z{", "n"), S(2, "x]y[z{", "n"), P("q", False), M())
    text = format_template(segs)
    assert text == "a\\{b\\[c\\\\d][SOFT#n*2:x\\]y\\[z\\{][SOFT#n]{q!full}[MASK]"
    assert parse_template(text) == segs
    for bad in [(P("not a name"),), (S(0),), (S(None),), (S(1, None, "p"), S(2, None, "p"))]:
        with pytest.raises(SpecError):
            format_template(bad)


# ----------------------------------------------------------------------------- template specs
def test_spec_checks():
    spec = template_spec_from_text("{text} {text_b!full} It was [MASK].", name="x")
    assert spec.fields == ("text", "text_b") and spec.shortenable_fields() == ("text",)
    assert spec.type == "mixed" and spec.truncation == "longest_first" and spec.options == {}
    assert TemplateSpec(spec.segments, truncate=["text_a"]).truncate == ("text",)
    with pytest.raises(SpecError, match="template has no \\[MASK\\]"):
        template_spec_from_text("{text} It was")
    with pytest.raises(SpecError, match="expected one of longest_first, tail_first, got 'random'"):
        TemplateSpec(spec.segments, truncation="random")
    with pytest.raises(SpecError, match="'label' is not a placeholder of the template"):
        TemplateSpec(spec.segments, truncate=("label",))
    with pytest.raises(SpecError, match="marked not shortenable"):
        TemplateSpec(spec.segments, truncate=("text_b",))
    with pytest.raises(SpecError, match="soft run #p"):
        TemplateSpec((S(1, None, "p"), S(3, None, "p"), M()))


LIST_YAML = """\
type: soft
name: sst2_soft_it_was
segments:
  - {soft: 20, init: "It was", name: p}
  - {placeholder: text_a, shortenable: false}
  - {text: " It was "}
  - mask
  - {text: "."}
  - {soft: null, init: "x"}
  - {soft: 20, init: "It was", name: p}
truncate: []
truncation: tail_first
soft_init: {method: vocab_sample}
"""


def test_yaml_list_form():
    spec = template_spec_from_mapping(parse_yaml(LIST_YAML, source="t.yaml"))
    assert spec.segments == (S(20, "It was", "p"), P("text", False), T(" It was "), M(), T("."), S(None, "x"),
                             S(20, "It was", "p"))
    assert spec.name == "sst2_soft_it_was" and spec.truncate == () and spec.truncation == "tail_first"
    assert spec.options == {"type": "soft", "soft_init": {"method": "vocab_sample"}} and spec.type == "soft"


def test_plain_dict_mapping():
    spec = template_spec_from_mapping({"segments": [{"placeholder": "text_a"}, "mask", {"soft": 2}],
                                       "truncate": ["text"], "soft_init": {"method": "random"}})
    assert spec.segments == (P("text"), M(), S(2)) and spec.truncate == ("text",) and spec.source is None
    assert spec.options == {"type": "mixed", "soft_init": {"method": "random"}}


def _yaml_error(text: str) -> str:
    with pytest.raises(SpecError) as info:
        template_spec_from_mapping(parse_yaml(text, source="t.yaml"))
    return str(info.value)


@pytest.mark.parametrize("text,message", [
    ('name: x\ntext: "{text} It was [MAKS]."\n', "t.yaml:2:22: text: unknown tag '[MAKS]'"),
    ("text: '{text} [SOFT*0] [MASK]'\n", "t.yaml:1:21: text: soft length must be a whole number 1..4096"),
    ("text:   x [MAKS]\n", "t.yaml:1:11: text: unknown tag '[MAKS]'"),
    ("text: |\n  {text} It was\n  [MASK] [SOFT*x]\n", "t.yaml:3:14: text: soft length"),
    ("text: '{text} It was.'\n", "t.yaml:1: text: template has no [MASK]"),
    ("text: '{text} [MASK]'\ntemplate: x\n", "t.yaml:2: template: unknown key; expected one of: type, name"),
    ("text: '{text} [MASK]'\ntruncate: [text_b]\n", "t.yaml:2: truncate: 'text_b' is not a placeholder"),
    ("text: '{text} [MASK]'\ntruncation: random\n", "t.yaml:2: truncation: expected one of longest_first"),
    ("text: '[MASK]'\nsegments: [mask]\n", "t.yaml:2: segments: give either text or segments, not both"),
    ("name: x\n", "t.yaml:1: missing required key: text (or segments)"),
    ("segments:\n  - mask\n  - {soft: 3, nmae: p}\n", "t.yaml:3: segments[1].nmae: unknown key; did you mean 'name'?"),
    ("segments:\n  - mask\n  -\n    soft: 0\n", "t.yaml:4: segments[1].soft: expected a whole number 1..4096, got 0"),
    ("segments:\n  - mask\n  - {soft: 2, name: p}\n  - {soft: 3, name: p}\n", "t.yaml:4: segments[2]: soft run #p"),
    ("segments:\n  - mask\n  - {text: a, mask: null}\n", "t.yaml:3: segments[1]: give exactly one of soft"),
    ("segments:\n  - mask\n  - maks\n", "t.yaml:1: segments[1]: expected 'mask' or a mapping"),
    ("segments:\n  - {placeholder: 'a b'}\n", "t.yaml:2: segments[0].placeholder: expected a field name"),
    ("text: '[MASK]'\nsoft_init: 3\n", "t.yaml:2: soft_init: expected a mapping, got int"),
])
def test_yaml_errors(text, message):
    assert _yaml_error(text).startswith(message)


def test_load_file_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("# a template\nname: bad\ntext: \"[SOFT*20] {text} It was [MAKS].\"\n", encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_template_spec(path)
    assert str(info.value) == (
        f"{path}:3:32: text: unknown tag '[MAKS]'; expected [MASK], [SOFT], [SOFT*N], [SOFT:text] or "
        "[SOFT#name...]; write \\[ for a literal bracket"
    )
    assert (info.value.file, info.value.line, info.value.column, info.value.key) == (str(path), 3, 32, "text")
    with pytest.raises(SpecError, match="file not found"):
        load_template_spec(tmp_path / "missing.yaml")


SHIPPED = {
    "sst2/it_was.yaml": (P("text"), T(" It was "), M(), T(".")),
    "sst2/soft20_it_was.yaml": (S(20), T(" "), P("text"), T(" It was "), M(), T(".")),
    "sst2/soft_init_it_was.yaml": (P("text"), T(" "), S(None, "It was"), T(" "), M(), T(".")),
    "openprompt_style.yaml": (P("text"), T(" "), S(None, "It was"), T(" "), M(), T(".")),
    "placement/prefix.yaml": (S(20), T(" "), P("text"), T(" It was "), M(), T(".")),
    "placement/infix.yaml": (P("text"), T(" "), S(20), T(" It was "), M(), T(".")),
    "placement/suffix.yaml": (P("text"), T(" It was "), M(), T(". "), S(20)),
}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_templates(name):
    spec = load_template_spec(REPO / "templates" / name)
    assert spec.segments == SHIPPED[name]
    assert spec.type == ("manual" if name == "sst2/it_was.yaml" else "mixed") and spec.name
    assert spec.source == str(REPO / "templates" / name)
