"""Generation requests in the server: encoded when they arrive, decoded in groups that share one
set of decoding options.

Hugging Face ``generate`` takes one set of options per call, so inputs of several requests share
calls only when they name the same prompt **and** the same checked decoding options; a gathered
batch is split into such groups, and each group is decoded as :meth:`PromptForGeneration.generate`
decodes (inputs sorted by length, ``batch_size`` inputs per call). A request with a ``seed`` is a
group of its own, decoded with the global random generator seeded (and restored afterwards), so
its sampled text depends on its own inputs and options only.

Example:
    >>> job = prepare_generation(bank, "e2e", [InputExample("name[Aromi]")], {"max_new_tokens": 20})
    >>> [[result]] = generate_group([job], max_batch_rows=64)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..errors import ConfigError
from ..model.decoding import GenerationResult, decode_encoded, encode_inputs, prompt_decoding
from ..types import InputExample
from .bank import PromptBank


@dataclass(frozen=True)
class GenerationJob:
    """One request's inputs encoded for a generation prompt, with its checked decoding options.

    Attributes:
        name: the prompt's name in the bank.
        model: the generation prompt.
        items: the encoded input parts, in request order.
        options: the checked decoding options (:func:`openpt.model.decoding.check_decoding`).
        seed: seeds the random generator for this request alone (sampling), or ``None``.
    """

    name: str
    model: Any
    items: tuple[Any, ...]
    options: dict[str, Any]
    seed: int | None = None

    @property
    def expand(self) -> int:
        """Sequences ``generate`` runs per input: ``max(num_beams, num_return_sequences)``."""
        return max(self.options["num_beams"], self.options["num_return_sequences"])

    @property
    def rows(self) -> int:
        """What the job costs in the batcher's row budget: inputs × :attr:`expand`."""
        return len(self.items) * self.expand

    def group_key(self) -> tuple[Any, ...]:
        """Jobs with equal keys share ``generate`` calls (same prompt, same options; a seeded job shares with none)."""
        options = tuple(sorted((key, tuple(value) if isinstance(value, list) else value) for key, value in self.options.items()))
        return (self.name, id(self.model), options, id(self) if self.seed is not None else None)


def prepare_generation(bank: PromptBank, name: str, examples: Sequence[InputExample], given: dict[str, Any],
                       seed: int | None = None) -> GenerationJob:
    """Encode ``examples`` for generation prompt ``name`` with ``given`` decoding options over its saved ones.

    Raises:
        UnknownPromptError: no prompt of that name.
        TaskMismatch: the prompt classifies.
        ConfigError: a decoding option out of range (the same check and line as ``openpt predict``).
        DataError: an example misses a field or encodes to no tokens.
    """
    model = bank.generator(name)
    options = prompt_decoding(model, given)
    if seed is not None and not options["do_sample"]:
        raise ConfigError("a seed only matters when sampling; set do_sample: true or drop the seed", key="seed")
    return GenerationJob(name, model, tuple(encode_inputs(model, examples)), options, seed)


def generate_group(jobs: Sequence[GenerationJob], max_batch_rows: int) -> list[list[GenerationResult]]:
    """Decode jobs of one :meth:`GenerationJob.group_key` together; each job's results in its input order.

    ``max_batch_rows // expand`` inputs (at least one) go into each ``generate`` call.
    """
    first = jobs[0]
    items = [item for job in jobs for item in job.items]
    batch_size = max(1, max_batch_rows // first.expand)
    with torch.inference_mode():
        if first.seed is None:
            results = decode_encoded(first.model, items, batch_size, first.options)
        else:
            device = first.model.backbone.input_embeddings().weight.device
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(first.seed)
                results = decode_encoded(first.model, items, batch_size, first.options)
    out, offset = [], 0
    for job in jobs:
        out.append(results[offset : offset + len(job.items)])
        offset += len(job.items)
    return out


def generated_tokens(results: Sequence[GenerationResult]) -> int:
    """Tokens generated for ``results`` (every returned sequence, up to its EOS)."""
    return sum(len(ids) for result in results for ids in result.token_ids)
