"""OpenPrompt's own template and verbalizer files, read through openpt's template/verbalizer keys.

* Template ``.txt``: one template per line (OpenPrompt's ``{"placeholder":"text_a"} It was {"mask"}.``
  syntax, or openpt's inline syntax); ``choice`` picks the line (0-based, as in OpenPrompt's
  ``ManualTemplate.from_file(path, choice)``).
* Verbalizer ``.txt`` / ``.csv``: one class per line, its label words comma-separated; several
  verbalizers in one file are separated by blank lines and ``choice`` picks one.
* Verbalizer ``.json``: ``{"label": ["word", ...], ...}``, ``[["word", ...], ...]`` (classes in
  order), or a list of either (``choice`` picks one).

Classes given by position (``.txt`` lines, JSON lists) are named by ``labels`` when given, else
``"0"``, ``"1"``, ... (the indices OpenPrompt uses). In a config::

    template: {file: manual_template.txt, choice: 1}
    verbalizer: {file: manual_verbalizer.txt, choice: 0, labels: [negative, positive]}

A bare path also works (``choice`` 0). Every error names the file and, where there is one, the line.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from ..errors import SpecError
from ..template.parser import parse_template
from ..template.spec import TemplateSpec
from ..verbalizer.manual import ManualVerbalizer

TEMPLATE_SUFFIXES = (".txt",)
VERBALIZER_SUFFIXES = (".txt", ".csv", ".json", ".jsonl")
FILE_KEYS = ("file", "choice", "labels")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("file not found", file=path) from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"not valid UTF-8 ({exc.reason} at byte {exc.start})", file=path) from None
    except OSError as exc:
        raise SpecError(f"cannot read ({exc.strerror})", file=path) from None


def _choice(value: Any, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SpecError(f"expected a whole number >= 0, got {value!r}", file=path, key="choice")
    return value


def looks_like_template(text: str, path: Path) -> None:
    """Refuse a file read as template text that holds no mask at all (``[MASK]``, ``<mask>``, OpenPrompt's
    ``{"mask"}``): it is no template, and its content is not shown (it may be any file, reached through a link)."""
    if "mask" not in text.lower():
        raise SpecError("not a template file: it holds no [MASK] (the file's content is not shown)", file=path, key="template")


def openprompt_template(path: str | Path, choice: int = 0) -> TemplateSpec:
    """The template on line ``choice + 1`` of an OpenPrompt template file."""
    path = Path(path)
    choice = _choice(choice, path)
    text = _read(path)
    looks_like_template(text, path)
    lines = text.splitlines()
    if choice >= len(lines):
        raise SpecError(f"choice {choice} is past the end: the file has {len(lines)} line(s) (choices 0..{len(lines) - 1})",
                        file=path, key="choice")
    text = lines[choice].rstrip()
    if not text.strip():
        raise SpecError(f"line {choice + 1} (choice {choice}) is empty", file=path, line=choice + 1)
    segments = parse_template(text, source=str(path), line=choice + 1, column=1)
    return TemplateSpec(segments, name=f"{path.stem}-{choice}", source=str(path))


def _words(value: Any, path: Path, line: int | None, where: str) -> list[str]:
    words = [value] if isinstance(value, str) else value
    if not isinstance(words, list) or not words or not all(isinstance(w, str) and w.strip() for w in words):
        raise SpecError(f"{where}: expected label words (a non-empty word or list of non-empty words), got {value!r:.60}",
                        file=path, line=line)
    return [w.strip() for w in words]


def _txt_verbalizers(path: Path) -> list[tuple[int, list[tuple[int, list[str]]]]]:
    """``[(first line, [(line, words), ...]), ...]``: the blank-line separated groups of a .txt/.csv file."""
    groups: list[tuple[int, list[tuple[int, list[str]]]]] = []
    current: list[tuple[int, list[str]]] = []
    for number, raw in enumerate(_read(path).splitlines(), 1):
        line = raw.strip()
        if not line:
            if current:
                groups.append((current[0][0], current))
            current = []
            continue
        words = [w.strip() for w in line.split(",")]
        if not all(words):
            raise SpecError(f"empty label word in {line!r:.60} (words are comma-separated)", file=path, line=number)
        current.append((number, words))
    if current:
        groups.append((current[0][0], current))
    return groups


def _json_line(text: str, needle: str) -> int | None:
    return next((n for n, line in enumerate(text.splitlines(), 1) if needle in line), None)


def openprompt_verbalizer(path: str | Path, choice: int = 0, labels: Sequence[str] | None = None) -> ManualVerbalizer:
    """A :class:`ManualVerbalizer` from an OpenPrompt verbalizer file (see the module docstring)."""
    path = Path(path)
    choice = _choice(choice, path)
    if labels is not None and (not isinstance(labels, (list, tuple)) or not all(isinstance(x, str) and x for x in labels)):
        raise SpecError(f"expected a list of label names, got {labels!r:.60}", file=path, key="labels")
    if path.suffix.lower() in (".txt", ".csv"):
        groups = _txt_verbalizers(path)
        if choice >= len(groups):
            raise SpecError(f"choice {choice} is past the end: the file holds {len(groups)} verbalizer(s) separated by blank lines",
                            file=path, key="choice")
        start, rows = groups[choice]
        per_class: list[Any] = [words for _, words in rows]
        line: int | None = start
    else:
        text = _read(path)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"invalid JSON: {exc.msg} (column {exc.colno})", file=path, line=exc.lineno) from None
        several = isinstance(data, list) and bool(data) and all(isinstance(d, (dict, list)) and not _is_words(d) for d in data)
        if several:
            if choice >= len(data):
                raise SpecError(f"choice {choice} is past the end: the file holds {len(data)} verbalizer(s)", file=path, key="choice")
            data = data[choice]
        line = None
        if isinstance(data, dict):
            if labels is not None and list(labels) != list(data):
                raise SpecError(f"labels {list(labels)} differ from the file's classes {list(data)}", file=path, key="labels")
            mapping = {str(k): _words(v, path, _json_line(text, f'"{k}"'), f"class {k!r}") for k, v in data.items()}
            return ManualVerbalizer(mapping, source=str(path), name=f"{path.stem}-{choice}")
        if not isinstance(data, list) or not data:
            raise SpecError(f"expected a mapping label -> words or a list of word lists, got {type(data).__name__}", file=path)
        per_class = data
    names = list(labels) if labels is not None else [str(i) for i in range(len(per_class))]
    if len(names) != len(per_class):
        raise SpecError(f"the verbalizer has {len(per_class)} classes but labels gives {len(names)} ({', '.join(names)})",
                        file=path, line=line, key="labels")
    mapping = {name: _words(words, path, (line + i) if line else None, f"class {i}") for i, (name, words) in enumerate(zip(names, per_class))}
    return ManualVerbalizer(mapping, source=str(path), name=f"{path.stem}-{choice}")


def _is_words(value: Any) -> bool:
    """A flat list of words (one class), as opposed to a verbalizer."""
    return isinstance(value, list) and all(isinstance(w, str) for w in value)
