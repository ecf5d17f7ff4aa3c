"""Automatic template generation (LM-BFF, Gao et al. 2021) with a T5-style seq2seq backbone.

Every K-shot training example becomes a span-filling input around its text and its class's
label word: ``<text> <extra_id_0> <word> <extra_id_1>`` (layout ``after``) or
``<extra_id_0> <word> <extra_id_1> <text>`` (``before``). One beam search decodes
``<extra_id_0> span0 <extra_id_1> span1 <extra_id_2>`` for all examples at once: a partial
decode's score is the sum of its log-probabilities over every example, so the spans found fit
the whole K-shot set. Each decode gives a template, ``{text} span0 [MASK] span1`` (or
``span0 [MASK] span1 {text}``). The candidates are then re-ranked by the zero-shot accuracy of
the scoring backbone (a masked LM) with the verbalizer on the K-shot dev set (LM-BFF fine-tunes
each candidate before comparing; here they are compared as they are), and the best are written
as editable template files.

Example:
    >>> found = generate_templates(t5, train, ["terrible", "great"], TemplateSearchConfig(beam=20))
    >>> ranked = rank_on_dev(found, mlm, verbalizer_value, dev)
    >>> write_templates(ranked[:5], "templates/auto/sst2", "sst2")
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import yaml

from ..backbone.base import Backbone
from ..errors import ConfigError
from ..fileio import atomic_write
from ..model.build import PromptOptions, build_model, template_spec, verbalizer_spec
from ..training.loop import evaluate
from ..types import InputExample

LAYOUTS = ("after", "before")
GRAMMAR_CHARS = re.compile(r"[\[\]{}]")


@dataclass
class TemplateSearchConfig:
    """Settings of the span search.

    Attributes:
        beam: beam width (LM-BFF: 100).
        max_span_tokens: the most tokens of each span.
        layout: ``after`` (the spans around the mask follow the text) or ``before``.
        field: the example field the template reads.
        max_length: encoder input length.
    """

    beam: int = 20
    max_span_tokens: int = 8
    layout: str = "after"
    field: str = "text"
    max_length: int = 128

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ConfigError(f"expected one of {', '.join(LAYOUTS)}, got {self.layout!r}", key="layout")
        for key in ("beam", "max_span_tokens", "max_length"):
            if getattr(self, key) < 1:
                raise ConfigError(f"expected a positive integer, got {getattr(self, key)!r}", key=key)


@dataclass
class Candidate:
    """A generated template: its text, the summed log-probability of its spans and (after ranking) its dev accuracy."""

    text: str
    log_prob: float
    dev_accuracy: float | None = None


def sentinel_ids(tokenizer: Any) -> tuple[int, int, int]:
    """Ids of ``<extra_id_0>``, ``<extra_id_1>``, ``<extra_id_2>``."""
    vocab = tokenizer.get_vocab()
    missing = [f"<extra_id_{i}>" for i in range(3) if f"<extra_id_{i}>" not in vocab]
    if missing:
        raise ConfigError(f"template generation needs a T5-style tokenizer with sentinels; missing {missing}", key="generator")
    return vocab["<extra_id_0>"], vocab["<extra_id_1>"], vocab["<extra_id_2>"]


def span_inputs(examples: Sequence[InputExample], words: Sequence[str], config: TemplateSearchConfig) -> list[str]:
    """The span-filling inputs: each example's text around ``<extra_id_0> word <extra_id_1>``."""
    texts = []
    for example in examples:
        value = example.field(config.field)
        if value is None or example.label is None:
            raise ConfigError(f"template generation needs labeled examples with field {config.field!r}", key="field")
        slot = f"<extra_id_0> {words[example.label]} <extra_id_1>"
        texts.append(f"{value} {slot}" if config.layout == "after" else f"{slot} {value}")
    return texts


@torch.no_grad()
def beam_search_spans(generator: Backbone, inputs: Sequence[str], config: TemplateSearchConfig) -> list[tuple[list[int], list[int], float]]:
    """``(span0 ids, span1 ids, summed log-prob)`` of every finished decode, best first.

    The decoder starts at ``<extra_id_0>``; ``<extra_id_1>`` may follow once, ``<extra_id_2>`` (or
    end of sequence) after it ends a decode; other special tokens are never chosen.
    """
    tokenizer, model = generator.tokenizer, generator.model
    s0, s1, s2 = sentinel_ids(tokenizer)
    banned = torch.tensor(sorted(set(tokenizer.all_special_ids) | {i for t, i in tokenizer.get_vocab().items() if t.startswith("<extra_id_")}))
    eos = tokenizer.eos_token_id
    encoded = tokenizer(list(inputs), return_tensors="pt", padding=True, truncation=True, max_length=config.max_length)
    model.eval()
    states = model.get_encoder()(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).last_hidden_state
    n = len(inputs)
    beams: list[tuple[list[int], float]] = [([model.config.decoder_start_token_id, s0], 0.0)]
    finished: list[tuple[list[int], list[int], float]] = []
    for _ in range(2 * config.max_span_tokens + 2):
        if not beams:
            break
        decoder = torch.tensor([seq for seq, _ in beams]).repeat_interleave(n, 0)
        logits = model(encoder_outputs=(states.repeat(len(beams), 1, 1),), attention_mask=encoded["attention_mask"].repeat(len(beams), 1),
                       decoder_input_ids=decoder).logits[:, -1].float()
        per_example = torch.log_softmax(logits, -1).view(len(beams), n, -1)
        summed = per_example.sum(1)  # [B, V]: summed over the examples
        ends = [s2] if eos is None else [s2, eos]
        end_scores = torch.logsumexp(per_example[:, :, ends], -1).sum(1)  # [B]: log p(end) per example, summed
        options: list[tuple[float, list[int]]] = []
        for (seq, score), row, end in zip(beams, summed, end_scores):
            second = s1 in seq
            span = len(seq) - seq.index(s1) - 1 if second else len(seq) - 2
            allowed = row.clone()
            allowed[banned] = float("-inf")
            if span >= config.max_span_tokens:
                allowed[:] = float("-inf")
            if not second:
                allowed[s1] = row[s1]
            else:
                cut = seq.index(s1)
                finished.append((seq[2:cut], seq[cut + 1:], score + float(end)))
            top = allowed.topk(min(config.beam, allowed.numel()))
            options += [(score + float(v), seq + [int(i)]) for v, i in zip(top.values, top.indices) if v > float("-inf")]
        options.sort(key=lambda item: -item[0])
        beams = [(seq, score) for score, seq in options[: config.beam]]
    finished.sort(key=lambda item: -item[2])
    return finished


def generate_templates(generator: Backbone, examples: Sequence[InputExample], words: Sequence[str],
                       config: TemplateSearchConfig | None = None) -> list[Candidate]:
    """Template candidates from the spans T5 fills around ``words`` in the K-shot ``examples``, best first, distinct."""
    config = config or TemplateSearchConfig()
    seen: dict[str, Candidate] = {}
    for first, second, score in beam_search_spans(generator, span_inputs(examples, words, config), config):
        span0 = generator.tokenizer.decode(first, skip_special_tokens=True).strip()
        span1 = generator.tokenizer.decode(second, skip_special_tokens=True).strip()
        if GRAMMAR_CHARS.search(span0 + span1):
            continue  # would read as template syntax
        core = " ".join(part for part in (span0, "[MASK]", span1) if part)
        text = f"{{{config.field}}} {core}" if config.layout == "after" else f"{core} {{{config.field}}}"
        if text not in seen:
            seen[text] = Candidate(text, score)
    return list(seen.values())


def rank_on_dev(candidates: Sequence[Candidate], scorer: Backbone, verbalizer: Any, dev: Sequence[InputExample], *,
                base_dir: Path | None = None, max_length: int = 128, batch_size: int = 64) -> list[Candidate]:
    """Candidates sorted by zero-shot accuracy of ``scorer`` with ``verbalizer`` on ``dev`` (ties: higher log-prob first)."""
    for candidate in candidates:
        model = build_model(scorer, template_spec(candidate.text), verbalizer_spec(verbalizer, base_dir=base_dir), PromptOptions(max_length=max_length))
        candidate.dev_accuracy = evaluate(model, list(dev), batch_size, ("accuracy",))["accuracy"]
    return sorted(candidates, key=lambda c: (-(c.dev_accuracy or 0.0), -c.log_prob))


def write_templates(candidates: Sequence[Candidate], directory: str | Path, name: str, header: str = "") -> list[Path]:
    """One editable ``type: manual`` template file per candidate (``<name>-<rank>.yaml``), scores in comments."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for rank, candidate in enumerate(candidates, 1):
        comments = [*header.splitlines(), f"summed log-probability of the spans over the K-shot set: {candidate.log_prob:.2f}"]
        if candidate.dev_accuracy is not None:
            comments.append(f"zero-shot accuracy on the K-shot dev set: {candidate.dev_accuracy:.4f}")
        body = yaml.safe_dump({"type": "manual", "name": f"{name}-{rank}", "text": candidate.text}, sort_keys=False, allow_unicode=True)
        path = directory / f"{name}-{rank}.yaml"
        content = "".join(f"# {line}\n" for line in comments) + body
        atomic_write(path, lambda tmp, content=content: Path(tmp).write_text(content, encoding="utf-8"))
        written.append(path)
    return written
