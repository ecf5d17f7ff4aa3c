"""The parts a template is made of: hard text, input placeholders, masks and soft tokens."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class Text:
    """Hard (fixed) template text, tokenized as written, including its spaces."""

    text: str


@dataclass(frozen=True)
class Placeholder:
    """An input field of the example, e.g. ``text`` or ``text_b``.

    Attributes:
        field: the example field whose value is inserted.
        shortenable: whether truncation may trim this field.
    """

    field: str
    shortenable: bool = True


@dataclass(frozen=True)
class Mask:
    """A ``[MASK]`` slot whose prediction the verbalizer reads."""


@dataclass(frozen=True)
class Soft:
    """A run of trainable soft tokens.

    Attributes:
        length: number of soft positions; ``None`` means "as many tokens as ``init_text``".
        init_text: text whose token embeddings initialise the run (cycled to ``length``).
        name: runs with the same name share their parameters.
    """

    length: int | None = 1
    init_text: str | None = None
    name: str | None = None


Segment = Union[Text, Placeholder, Mask, Soft]
