r"""Template text -> segments (inline syntax or OpenPrompt's dict syntax), and back.

Inline syntax (:func:`parse_template`)::

    {text}              an input field (``text_a`` is an alias of ``text``), shortenable
    {text!full}         an input field that truncation never shortens
    [MASK]              the mask slot
    [SOFT]  [SOFT*20]   1 / 20 trainable soft tokens
    [SOFT:It was]       soft tokens initialised from "It was", one per token of it
    [SOFT*20:It was]    20 soft tokens initialised from "It was" (cycled)
    [SOFT#p*4:It was]   a named run: every [SOFT#p] shares its parameters
    \{ \[ \] \} \\      literal characters; everything else is hard text, kept verbatim

A text containing an unescaped ``{"`` is OpenPrompt syntax (:func:`parse_openprompt_template`).
Errors are :class:`SpecError` located at ``line:column`` of the offending character.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Sequence

from ..errors import SpecError
from .segments import Mask, Placeholder, Segment, Soft, Text

MAX_SOFT = 4096
FIELD_ALIASES = {"text_a": "text"}
FULL_MODIFIER = "full"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLAIN = re.compile(r"[^\\\[{]+")
_ESCAPABLE = "\\[]{}"
_SOFT_HEAD = re.compile(r"\[SOFT(?:#([^*:\]\n]*))?(?:\*([^:\]\n]*))?")
_OP_START = re.compile(r"""\\.|(\{\s*["'])""", re.S)
_TAG_HINT = "expected [MASK], [SOFT], [SOFT*N], [SOFT:text] or [SOFT#name...]; write \\[ for a literal bracket"
_BRACE_HINT = "expected {name}; write \\{ for a literal brace"


def _quote(snippet: str, limit: int = 40) -> str:
    """The snippet in single quotes, shortened, newlines shown as \\n."""
    return "'" + (snippet if len(snippet) <= limit else snippet[:limit] + "...").replace("\n", "\\n") + "'"


class _Source:
    """Template text plus where it starts in its file, for located errors."""

    def __init__(self, text: str, source: str | None, line: int | None, column: int | None) -> None:
        self.text, self.source, self.line, self.column = text, source, line, column

    def error(self, index: int, problem: str) -> SpecError:
        """A SpecError at character ``index`` of the template (1-based line:column, file offsets added)."""
        tline = self.text.count("\n", 0, index) + 1
        tcol = index - (self.text.rfind("\n", 0, index) + 1) + 1
        line = tline if self.line is None else self.line + tline - 1
        column = tcol + self.column - 1 if self.column is not None and tline == 1 else tcol
        return SpecError(problem, file=self.source, line=line, column=column)


class SharedSofts:
    """Tracks named soft runs: a name's first run fixes its length and init text."""

    def __init__(self) -> None:
        self.first: dict[str, Soft] = {}

    def resolve(self, soft: Soft, explicit: bool = True) -> Soft:
        """The run to use for ``soft``; a bare reference (not ``explicit``) copies the first.

        Raises ValueError (with a readable message) when an explicit run differs from the first.
        """
        if soft.name is None:
            return soft
        first = self.first.setdefault(soft.name, soft)
        if explicit and (soft.length, soft.init_text) != (first.length, first.init_text):
            raise ValueError(
                f"soft run #{soft.name} is {format_template((soft,))} here but was first declared as "
                f"{format_template((first,))}; later uses must match or be just [SOFT#{soft.name}]"
            )
        return first


def merge_segments(segments: Iterable[Segment]) -> tuple[Segment, ...]:
    """Join adjacent Text segments and drop empty ones."""
    out: list[Segment] = []
    for seg in segments:
        if isinstance(seg, Text) and out and isinstance(out[-1], Text):
            seg = Text(out.pop().text + seg.text)  # type: ignore[union-attr]
        if not isinstance(seg, Text) or seg.text:
            out.append(seg)
    return tuple(out)


def looks_openprompt(text: str) -> bool:
    """True when ``text`` has an unescaped ``{"`` (or ``{'``): OpenPrompt dict syntax."""
    return any(m.group(1) for m in _OP_START.finditer(text))


def parse_template(
    text: str, *, source: str | None = None, line: int | None = None, column: int | None = None
) -> tuple[Segment, ...]:
    """Parse template text (inline syntax, or OpenPrompt syntax when it contains ``{"``).

    ``line``/``column`` give where the template starts in ``source`` so error positions point
    into the file; without ``column``, columns count within the template line.
    """
    return _parse(text, source, line, column, openprompt=None)


def parse_openprompt_template(
    text: str, *, source: str | None = None, line: int | None = None, column: int | None = None
) -> tuple[Segment, ...]:
    """Parse OpenPrompt syntax: ``{"placeholder":"text_a"} It was {"mask"}.`` (plain text between dicts)."""
    return _parse(text, source, line, column, openprompt=True)


def _parse(text: Any, source: Any, line: int | None, column: int | None, openprompt: bool | None) -> tuple[Segment, ...]:
    if not isinstance(text, str):
        raise SpecError(f"template must be a string, got {type(text).__name__}", file=source, line=line, column=column)
    src = _Source(text, None if source is None else str(source), line, column)
    if not text:
        raise src.error(0, "empty template")
    openprompt = looks_openprompt(text) if openprompt is None else openprompt
    segments = _parse_openprompt(src) if openprompt else _parse_inline(src)
    if not segments:
        raise src.error(0, "template has no content")
    return segments


# ----------------------------------------------------------------------------- inline syntax
def _parse_inline(src: _Source) -> tuple[Segment, ...]:
    text, out, shared, i = src.text, [], SharedSofts(), 0
    while i < len(text):
        plain = _PLAIN.match(text, i)
        if plain:
            seg, i = Text(plain.group()), plain.end()
        elif text[i] == "\\":
            seg, i = Text(_escape_char(src, i)), i + 2
        else:
            seg, i = _placeholder(src, i) if text[i] == "{" else _tag(src, i, shared)
        out.append(seg)
    return merge_segments(out)


def _escape_char(src: _Source, i: int) -> str:
    nxt = src.text[i + 1 : i + 2]
    if not nxt or nxt not in _ESCAPABLE:
        raise src.error(i, f"unknown escape {_quote(src.text[i:i + 2])}; only \\{{ \\[ \\] \\}} and \\\\ are escapes")
    return nxt


def _placeholder(src: _Source, i: int) -> tuple[Placeholder, int]:
    text = src.text
    j = re.compile(r"[^{}\n]*").match(text, i + 1).end()  # type: ignore[union-attr]
    if text[j : j + 1] != "}":
        raise src.error(i, f"unclosed placeholder {_quote(text[i:j])}; {_BRACE_HINT}")
    snippet = text[i : j + 1]
    if j == i + 1:
        raise src.error(i, f"empty placeholder {_quote(snippet)}; {_BRACE_HINT}")
    name, bang, modifier = text[i + 1 : j].partition("!")
    if not _NAME.fullmatch(name):
        raise src.error(i + 1, f"invalid field name {_quote(name)} in {_quote(snippet)}; use letters, digits and _")
    if bang and modifier != FULL_MODIFIER:
        raise src.error(i + 1 + len(name), f"unknown modifier {_quote('!' + modifier)} in {_quote(snippet)}; "
                        "only !full (never shorten) is supported")
    return Placeholder(FIELD_ALIASES.get(name, name), shortenable=not bang), j + 1


def _tag_snippet(text: str, i: int) -> str:
    j = text.find("]", i)
    return text[i : j + 1] if 0 <= j - i <= 40 and "\n" not in text[i:j] else text[i : i + 12]


def _tag(src: _Source, i: int, shared: SharedSofts) -> tuple[Segment, int]:
    text = src.text
    if text.startswith("[MASK]", i):
        return Mask(), i + 6
    snippet = _tag_snippet(text, i)
    if not text.startswith("[SOFT", i) or text[i + 5 : i + 6] not in ("]", "#", "*", ":", ""):
        raise src.error(i, f"unknown tag {_quote(snippet)}; {_TAG_HINT}")
    head = _SOFT_HEAD.match(text, i)
    assert head is not None
    name, count = head.group(1), head.group(2)
    if name is not None and not _NAME.fullmatch(name):
        raise src.error(head.start(1), f"invalid soft name {_quote(name)} in {_quote(snippet)}; use letters, digits and _")
    if count is not None and not (count.isascii() and count.isdigit() and 1 <= int(count) <= MAX_SOFT):
        raise src.error(head.start(2), f"soft length must be a whole number 1..{MAX_SOFT}, got {_quote(count)} "
                        f"in {_quote(snippet)}")
    j, init = head.end(), None
    if text[j : j + 1] == ":":
        init, j = _init_text(src, i, j + 1)
    elif text[j : j + 1] == "]":
        j += 1
    else:
        raise src.error(i, f"unclosed tag {_quote(text[i:j + 1])}; {_TAG_HINT}")
    length = int(count) if count is not None else (None if init is not None else 1)
    try:
        return shared.resolve(Soft(length, init, name), explicit=count is not None or init is not None), j
    except ValueError as exc:
        raise src.error(i, f"{exc} (at {_quote(text[i:j])})") from None


def _init_text(src: _Source, start: int, i: int) -> tuple[str, int]:
    text, chars = src.text, []
    while i < len(text) and text[i] != "]":
        chars.append(_escape_char(src, i) if text[i] == "\\" else text[i])
        i += 2 if text[i] == "\\" else 1
    if i >= len(text):
        raise src.error(start, f"unclosed tag {_quote(text[start:])}; a [SOFT:...] tag ends at the first unescaped ]")
    if not chars:
        raise src.error(start, f"empty init text in {_quote(text[start:i + 1])}; write [SOFT] for one soft token")
    return "".join(chars), i + 1


# ----------------------------------------------------------------------------- OpenPrompt syntax
_OP_KEYS = ("placeholder", "meta", "shortenable", "mask", "soft", "duplicate", "same", "soft_id", "text")
_OP_EXTRAS = {"placeholder": ("shortenable",), "meta": ("shortenable",), "soft": ("duplicate", "same", "soft_id")}
_TOKEN = re.compile(r"""\s*(?:(["'])|(-?\d+(?:\.\d*)?)|([A-Za-z_]\w*)|([{}:,])|(\S)|\Z)""")
_CONSTS = {"None": None, "null": None, "True": True, "true": True, "False": False, "false": False}
_STR_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t", "r": "\r"}
_FLAG = object()  # value of a bare key such as {"mask"}


def _token(src: _Source, i: int, dict_start: int) -> tuple[str, Any, int, int]:
    """(kind, value, start, end) of the next token: str, num, const, word, other or the punctuation itself."""
    m = _TOKEN.match(src.text, i)
    assert m is not None
    if not m.lastindex:
        raise src.error(dict_start, f"unclosed OpenPrompt dict {_quote(src.text[dict_start:])}; expected }}")
    start, raw = m.start(m.lastindex), m.group(m.lastindex)
    if m.lastindex == 1:
        return ("str", *_string(src, start))
    if m.lastindex == 2:
        return "num", (float(raw) if "." in raw else int(raw)), start, m.end()
    if m.lastindex == 3:
        return ("const" if raw in _CONSTS else "word"), _CONSTS.get(raw, raw), start, m.end()
    return (raw if m.lastindex == 4 else "other"), raw, start, m.end()


def _string(src: _Source, start: int) -> tuple[str, int, int]:
    text, quote, chars, i = src.text, src.text[start], [], start + 1
    while i < len(text) and text[i] != quote:
        if text[i] == "\\" and i + 1 < len(text):
            if text[i + 1] in "uUxN01234567":
                raise src.error(i, f"unsupported string escape {_quote(text[i:i + 2])}")
            chars.append(_STR_ESCAPES.get(text[i + 1], text[i : i + 2]))
            i += 2
        else:
            chars.append(text[i])
            i += 1
    if i >= len(text):
        raise src.error(start, f"unterminated string {_quote(text[start:start + 20])}")
    return "".join(chars), start, i + 1


def _read_dict(src: _Source, start: int) -> tuple[dict[str, tuple[Any, int, int]], int]:
    """Read ``{...}`` at ``start``: key -> (value or _FLAG, key index, value index), and the end index."""
    entries: dict[str, tuple[Any, int, int]] = {}
    kind, key, kpos, i = _token(src, start + 1, start)
    while True:
        if kind == "}" and entries:  # (after a trailing comma)
            return entries, i
        if kind == "}":
            raise src.error(start, "empty dict '{}' in OpenPrompt syntax; expected e.g. {\"mask\"}")
        if kind != "str":
            raise src.error(kpos, f"expected a quoted key in OpenPrompt dict, found {_quote(src.text[kpos:kpos + 12])}"
                            " (in OpenPrompt syntax every { starts a dict such as {\"placeholder\":\"text_a\"})")
        if key not in _OP_KEYS or key in entries:
            problem = "duplicate key" if key in entries else "unsupported key"
            supported = "" if key in entries else f"; supported: {', '.join(_OP_KEYS)}"
            raise src.error(kpos, f"{problem} {_quote(key)} in OpenPrompt dict{supported}")
        entries[key] = (_FLAG, kpos, kpos)
        kind, value, vpos, i = _token(src, i, start)
        if kind == ":":
            kind, value, vpos, i = _token(src, i, start)
            if kind not in ("str", "num", "const"):
                raise src.error(vpos, f"unsupported value {_quote(src.text[vpos:vpos + 12])} for key {_quote(key)};"
                                " expected a string, a number, None, True or False")
            entries[key] = (value, kpos, vpos)
            kind, value, vpos, i = _token(src, i, start)
        if kind == "}":
            return entries, i
        if kind != ",":
            raise src.error(vpos, f"expected , or }} in OpenPrompt dict, found {_quote(src.text[vpos:vpos + 12])}")
        kind, key, kpos, i = _token(src, i, start)


def _parse_openprompt(src: _Source) -> tuple[Segment, ...]:
    text, out, i = src.text, [], 0
    runs: dict[int | str, list[Soft]] = {}  # soft_id (or generated name of a same=True run) -> run
    while i < len(text):
        j = text.find("{", i) % (len(text) + 1)  # -1 -> len(text)
        out.append(Text(text[i:j]))
        i = j
        if j < len(text):
            entries, i = _read_dict(src, j)
            out.extend(_op_segments(src, j, entries, runs))
    return merge_segments(out)


def _op_value(src: _Source, entries: dict, key: str, types: tuple, what: str, default: Any = None) -> Any:
    if key not in entries:
        return default
    value, _, vpos = entries[key]
    if value is _FLAG or not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise src.error(vpos, f"{_quote(key)} expects {what}")
    return value


def _op_segments(src: _Source, start: int, entries: dict, runs: dict[int | str, list[Soft]]) -> Sequence[Segment]:
    """The segments one OpenPrompt dict stands for."""
    kinds = [k for k in ("placeholder", "meta", "mask", "soft", "text") if k in entries]
    kind = kinds[0] if len(kinds) == 1 else ("soft" if not kinds and "soft_id" in entries else "")
    if not kind:
        raise src.error(start, "an OpenPrompt dict needs exactly one of placeholder, meta, mask, soft, soft_id, text")
    for key, (_, kpos, _) in entries.items():
        if key != kind and key not in _OP_EXTRAS.get(kind, ()):
            raise src.error(kpos, f"key {_quote(key)} cannot be combined with {_quote(kind)}")
    if kind == "mask":
        if entries["mask"][0] not in (_FLAG, None, True):
            raise src.error(entries["mask"][2], "'mask' takes no value; write {\"mask\"}")
        return [Mask()]
    if kind == "text":
        return [Text(_op_value(src, entries, "text", (str,), "a string"))]
    if kind in ("placeholder", "meta"):
        field = _op_value(src, entries, kind, (str,), "a field name")
        if not _NAME.fullmatch(field):
            raise src.error(entries[kind][2], f"invalid field name {_quote(field)}; use letters, digits and _")
        short = _op_value(src, entries, "shortenable", (bool,), "True or False", kind == "placeholder")
        return [Placeholder(FIELD_ALIASES.get(field, field), shortenable=short)]
    init = None if entries.get("soft", (None,))[0] in (_FLAG, None) else _op_value(src, entries, "soft", (str,),
                                                                                    "None or a non-empty init text")
    if init == "":
        raise src.error(entries["soft"][2], "empty soft init text; write {\"soft\"} for one soft token")
    dup = _op_value(src, entries, "duplicate", (int,), f"a whole number 1..{MAX_SOFT}")
    if dup is not None and not 1 <= dup <= MAX_SOFT:
        raise src.error(entries["duplicate"][2], f"'duplicate' must be 1..{MAX_SOFT}, got {dup}")
    same = _op_value(src, entries, "same", (bool,), "True or False", False)
    sid = _op_value(src, entries, "soft_id", (int,), "a whole number >= 1")
    if sid is not None and sid < 1:
        raise src.error(entries["soft_id"][2], f"'soft_id' must be >= 1, got {sid}")
    name = f"op{sid}" if sid is not None else None
    if same and dup and dup > 1:  # one shared vector repeated: a named run of length 1
        name = name or f"op_same{sum(isinstance(r, str) for r in runs) + 1}"
        run = runs.setdefault(name, [Soft(1, init, name)] * dup) if sid is None else [Soft(1, init, name)] * dup
    else:
        run = [Soft(dup if dup else (None if init else 1), init, name)]
    if sid is not None and sid in runs and set(entries) != {"soft_id"} and runs[sid] != run:
        raise src.error(start, f"soft_id {sid} was first used for a different soft run; "
                        f"later uses must match or be {{\"soft_id\": {sid}}}")
    return run if sid is None else runs.setdefault(sid, run)


# ----------------------------------------------------------------------------- rendering
def _escape(text: str, chars: str) -> str:
    return "".join("\\" + c if c in chars else c for c in text)


def format_template(segments: Iterable[Segment]) -> str:
    """Render segments in the inline syntax, so that ``parse_template(format_template(s)) == s``.

    Later uses of a named soft run are written as just ``[SOFT#name]``.
    """
    parts, seen = [], SharedSofts()
    for seg in segments:
        if isinstance(seg, Text):
            parts.append(_escape(seg.text, "\\[{"))
        elif isinstance(seg, Placeholder):
            if not _NAME.fullmatch(seg.field):
                raise SpecError(f"cannot format placeholder with field name {seg.field!r}")
            parts.append("{" + seg.field + ("" if seg.shortenable else "!" + FULL_MODIFIER) + "}")
        elif isinstance(seg, Mask):
            parts.append("[MASK]")
        elif isinstance(seg, Soft):
            parts.append(_format_soft(seg, seen))
        else:
            raise SpecError(f"not a template segment: {seg!r:.60}")
    return "".join(parts)


def _format_soft(seg: Soft, seen: SharedSofts) -> str:
    init_ok = seg.init_text is None or (isinstance(seg.init_text, str) and seg.init_text != "")
    length_ok = seg.init_text is not None if seg.length is None else (
        type(seg.length) is int and 1 <= seg.length <= MAX_SOFT)
    if not (init_ok and length_ok):
        raise SpecError(f"invalid soft run {seg!r}: length must be 1..{MAX_SOFT}, or None with init text")
    if seg.name is not None and not (isinstance(seg.name, str) and _NAME.fullmatch(seg.name)):
        raise SpecError(f"invalid soft run name {seg.name!r}; use letters, digits and _")
    if seg.name is not None and seg.name in seen.first:
        try:
            seen.resolve(seg)
        except ValueError as exc:
            raise SpecError(str(exc)) from None
        return f"[SOFT#{seg.name}]"
    seen.resolve(seg)
    out = "[SOFT" + (f"#{seg.name}" if seg.name is not None else "")
    if seg.length is not None and (seg.length != 1 or seg.init_text is not None):
        out += f"*{seg.length}"
    return out + (":" + _escape(seg.init_text, "\\]{[") if seg.init_text is not None else "") + "]"
