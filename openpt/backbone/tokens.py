"""What a tokenizer puts around a sequence, and which of its tokens are (or look) special."""
from __future__ import annotations

import re

from ..errors import SpecError

_SPECIAL_LOOKING = re.compile(r"^(\[.*\]|<.*>)$")


def special_like_ids(tokenizer) -> list[int]:
    """Ids of special tokens and of tokens that look special (``[unused3]``, ``<extra_id_0>``)."""
    vocab = tokenizer.get_vocab()
    ids = {i for token, i in vocab.items() if _SPECIAL_LOOKING.match(token)}
    return sorted(ids | set(tokenizer.all_special_ids))


def special_token_frame(tokenizer) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after a single sequence (e.g. ``[CLS]`` / ``[SEP]``)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start], full[start + len(plain) :]
    raise SpecError(f"cannot locate the special tokens of {type(tokenizer).__name__}")
