"""One backbone forward for rows of several prompts (templates, verbalizers, prefixes) at once.

Each row was encoded by its own prompt's template (hard text, soft positions, masks, truncation).
The rows are padded into one batch; every prompt's soft vectors (plain or P-tuning tables) are
written into its own rows' input embeddings, deep-prompt prefixes are attached per row
(:class:`~openpt.model.row_prefix.RowPrefixes`), and the backbone runs once:

* masked LMs: the encoder once; each prompt's LM-head rows at its own mask positions;
* seq2seq and causal LMs: one forward of ``B`` rows when every word is one token and no row has
  text after its slot, else one of one row per (example, word of its prompt), on a shared context
  cache where the backbone keeps one.

Each prompt's verbalizer and calibration then turn its rows' outputs into class scores.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..backbone.mlm import gather_positions
from ..backbone.shared_prefix import shared_prefix_scores
from ..backbone.splicing import Prefix, Rows, pad_words
from ..device import autocast
from ..template.encoding import Encoded
from ..types import Batch, MaskOutputs
from .prompt_model import PromptModel, as_float32
from .row_prefix import RowPrefixes


@dataclass
class Group:
    """The rows of one prompt in a mixed batch."""

    model: PromptModel
    rows: list[int] = field(default_factory=list)


def group_rows(models: Sequence[PromptModel]) -> list[Group]:
    """Rows by prompt, in order of first appearance."""
    groups: dict[int, Group] = {}
    for row, model in enumerate(models):
        groups.setdefault(id(model), Group(model)).rows.append(row)
    return list(groups.values())


def collate_mixed(items: Sequence[Encoded], pad_id: int, device: torch.device) -> Batch:
    """Pad rows of different templates into one :class:`Batch`; ``mask_positions`` is padded with 0
    to the most masks of any row (each prompt reads only its own number of them)."""
    lengths = [len(item.input_ids) for item in items]
    real = np.arange(max(lengths)) < np.array(lengths)[:, None]
    ids = np.full(real.shape, pad_id, dtype=np.int64)
    ids[real] = np.fromiter(chain.from_iterable(item.input_ids for item in items), dtype=np.int64, count=sum(lengths))
    soft = np.full(real.shape, -1, dtype=np.int64)
    soft[real] = np.fromiter(chain.from_iterable(item.soft_index for item in items), dtype=np.int64, count=sum(lengths))
    masks = np.zeros((len(items), max(len(item.mask_positions) for item in items)), dtype=np.int64)
    for row, item in enumerate(items):
        masks[row, : len(item.mask_positions)] = item.mask_positions
    tensors = (torch.from_numpy(a).to(device) for a in (ids, real.astype(np.int64), soft, masks))
    return Batch(*tensors, lengths=tuple(lengths))


def sub_batch(batch: Batch, rows: torch.Tensor, masks: int) -> Batch:
    """The rows ``rows`` of ``batch`` with their first ``masks`` mask positions."""
    return Batch(batch.input_ids[rows], batch.attention_mask[rows], batch.soft_index[rows], batch.mask_positions[rows, :masks])


def mixed_embeds(batch: Batch, groups: Sequence[Group], backbone: Any) -> torch.Tensor:
    """Input embeddings ``[B, L, H]``: word embeddings, each prompt's soft vectors in its rows.

    In eval mode the prompts' soft tables are stacked into one and every row's soft positions
    are read with one gather (a row's soft index offset by its prompt's place in the stack); in
    training each prompt reads its own rows (prompt dropout draws per prompt, as alone).
    """
    table = backbone.input_embeddings()
    embeds = table(batch.input_ids)
    soft = [group for group in groups if group.model.template.soft is not None]
    if not soft:
        return embeds
    if any(group.model.training for group in soft):
        for group in soft:
            template = group.model.template
            rows = torch.tensor(group.rows, device=embeds.device)
            embeds[rows] = template.embed(sub_batch(batch, rows, template.num_masks), table)
        return embeds
    tables, offsets, offset = [], np.zeros(len(batch.input_ids), dtype=np.int64), 0
    for group in soft:
        tables.append(group.model.template.soft())
        offsets[group.rows] = offset
        offset += len(tables[-1])
    stacked = torch.cat(tables) if len(tables) > 1 else tables[0]
    index = batch.soft_index + torch.from_numpy(offsets).to(embeds.device).unsqueeze(1)
    vectors = torch.nn.functional.embedding(index.clamp(min=0), stacked)
    return torch.where((batch.soft_index >= 0).unsqueeze(-1), vectors.to(embeds.dtype), embeds)


@contextlib.contextmanager
def running(backbone: Any, models: Sequence[PromptModel], device: torch.device) -> Iterator[RowPrefixes | None]:
    """Per-row prefixes attached (when any prompt has one) and the prompts' autocast."""
    prefixes = [model.prefix for model in models]
    with contextlib.ExitStack() as stack:
        rows = None
        if any(prefix is not None for prefix in prefixes):
            rows = RowPrefixes(backbone, prefixes)
            stack.enter_context(rows.attached())
        stack.enter_context(autocast(device, models[0].autocast_dtype))
        yield rows


def mixed_scores(models: Sequence[PromptModel], items: Sequence[Encoded]) -> list[torch.Tensor]:
    """Class scores (log-scale, calibrated) of each row, ``[C]`` of its own prompt.

    Args:
        models: each row's prompt; all share one backbone, in eval mode.
        items: each row encoded by its prompt's template.
    """
    out: list[torch.Tensor | None] = [None] * len(items)
    with torch.inference_mode():
        groups, scores = group_scores(models, items)
        for group, values in zip(groups, scores):
            for k, row in enumerate(group.rows):
                out[row] = values[k].float()
    return out  # type: ignore[return-value]


def group_scores(models: Sequence[PromptModel], items: Sequence[Encoded]) -> tuple[list[Group], list[torch.Tensor]]:
    """The rows grouped by prompt and each group's class scores ``[B_g, C_g]`` from one backbone
    forward (differentiable: multi-task training runs it with gradients; calibrated in eval mode)."""
    backbone = models[0].backbone
    device = models[0].device
    groups = group_rows(models)
    batch = collate_mixed(items, models[0].template.encoder.pad_id, device)
    with running(backbone, models, device) as row_prefixes:
        embeds = mixed_embeds(batch, groups, backbone)
        if backbone.scores_words:
            outputs = word_outputs(backbone, embeds, batch, groups, row_prefixes)
        else:
            outputs = mask_outputs(backbone, embeds, batch, groups)
    return groups, [group.model.calibration(group.model.verbalizer(as_float32(output))) for group, output in zip(groups, outputs)]


def mask_outputs(backbone: Any, embeds: torch.Tensor, batch: Batch, groups: Sequence[Group]) -> list[MaskOutputs]:
    """Masked LMs: the encoder once, then the LM head at the masks.

    In eval mode the head runs once on every row's masks for the union of the prompts' label
    tokens, and each prompt takes its rows, mask count and tokens; in training each prompt runs
    the head on its own rows and tokens (the arithmetic of the prompt alone, to the last digit).
    """
    if backbone.head is None:  # no separable LM head: full-vocabulary logits everywhere, once
        out = backbone.model(inputs_embeds=embeds, attention_mask=batch.attention_mask, output_hidden_states=True)
        states, full = out.hidden_states[-1], out.logits
    else:
        states, full = backbone.encode(embeds, batch.attention_mask), None
    if any(group.model.training for group in groups):
        return [group_head(backbone, states, full, batch, group) for group in groups]
    hidden = gather_positions(states, batch.mask_positions)
    union, inverse = torch.unique(torch.cat([group.model.token_ids.reshape(-1) for group in groups]), return_inverse=True)
    logits = backbone.head_logits(hidden, union) if full is None else gather_positions(full, batch.mask_positions)[..., union]
    features = backbone.head_features(hidden) if any(group.model.verbalizer.needs_features for group in groups) else None
    outputs, start = [], 0
    for group in groups:
        model = group.model
        rows, masks, count = torch.tensor(group.rows, device=embeds.device), model.template.num_masks, model.token_ids.numel()
        columns = inverse[start : start + count].view(model.token_ids.shape)
        start += count
        output = MaskOutputs(logits=logits[rows, :masks][..., columns], hidden=hidden[rows, :masks])
        if features is not None and model.verbalizer.needs_features:
            output.features = features[rows, :masks]
        outputs.append(output)
    return outputs


def group_head(backbone: Any, states: torch.Tensor, full: torch.Tensor | None, batch: Batch, group: Group) -> MaskOutputs:
    """One prompt's head outputs at its rows' masks (its own tokens only)."""
    model = group.model
    rows = torch.tensor(group.rows, device=states.device)
    positions = batch.mask_positions[rows, : model.template.num_masks]
    hidden = gather_positions(states[rows], positions)
    if full is None:
        output = MaskOutputs(logits=backbone.head_logits(hidden, model.token_ids), hidden=hidden)
    else:
        output = MaskOutputs(logits=gather_positions(full[rows], positions)[..., model.token_ids], hidden=hidden)
    if model.verbalizer.needs_features:
        output.features = backbone.head_features(hidden)
    return output


def word_rows(groups: Sequence[Group], pad_id: int, device: torch.device) -> tuple[Rows, list[int]]:
    """One row per (example, word of its prompt), grouped by prompt; and each group's first row."""
    example, words, starts = [], [], []
    for group in groups:
        starts.append(len(example))
        for row in group.rows:
            for word in group.model.verbalizer.word_ids:
                example.append(row)
                words.append(word)
    table, lengths = pad_words(words, pad_id, device)
    rows = Rows(example=torch.tensor(example, device=device), ids=table, lengths=lengths, longest=max(len(w) for w in words),
                host_example=example, host_lengths=[len(w) for w in words])
    return rows, starts


def word_outputs(backbone: Any, embeds: torch.Tensor, batch: Batch, groups: Sequence[Group],
                 row_prefixes: RowPrefixes | None) -> list[MaskOutputs]:
    """Seq2seq and causal LMs: each prompt's words scored at its rows' slots, one forward."""
    prefix: Prefix = backbone.prefix(embeds, batch)
    counts = [len(group.model.verbalizer.word_ids) for group in groups]
    single = all(len(w) == 1 for group in groups for w in group.model.verbalizer.word_ids)
    if single and not (prefix.keep_suffix and prefix.extent().suffix > 0):  # one forward of B rows
        logprobs, hidden = backbone.slot_token(prefix)
        outputs = []
        for group in groups:
            rows = torch.tensor(group.rows, device=embeds.device)
            first = [w[0] for w in group.model.verbalizer.word_ids]
            outputs.append(MaskOutputs(logits=None, hidden=hidden[rows].unsqueeze(1), word_logprobs=logprobs[rows][:, first]))
        return outputs
    rows, starts = word_rows(groups, backbone.pad_id, embeds.device)
    if backbone.can_share_prefix(prefix):
        sums, hidden = shared_prefix_scores(backbone, prefix, rows)
    else:
        select = row_prefixes.rows(rows.example) if row_prefixes is not None else contextlib.nullcontext()
        with select:
            sums, hidden = backbone.sequence_scores(prefix, rows)
    outputs = []
    for group, start, count in zip(groups, starts, counts):
        size = len(group.rows) * count
        scores = sums[start : start + size].view(len(group.rows), count)
        first = hidden[start : start + size].view(len(group.rows), count, -1)[:, 0]
        outputs.append(MaskOutputs(logits=None, hidden=first.unsqueeze(1), word_logprobs=scores))
    return outputs
