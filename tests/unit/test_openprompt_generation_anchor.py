"""openpt gives OpenPrompt 1.0.1's ``PromptForGeneration`` loss for the same soft prompt.

The constants below were measured by ``benchmarks/openprompt_generation_anchor.py`` under
OpenPrompt 1.0.1 / transformers 4.27.4 (its output: ``tests/assets/openprompt_generation_anchor.json``).
The case (``tests/assets/openprompt_generation_case.py``): the soft template of OpenPrompt's
conditional-generation tutorial, ``'{"placeholder":"text_a"} {"special": "<eos>"} {"mask"}'`` with
100 soft tokens in front (``SoftTemplate``), ``predict_eos_token=True``, three (input, target)
pairs, tiny GPT-2 and T5 models whose every weight is drawn by name, the same on both sides.

What each side scores:

* GPT-2. OpenPrompt feeds ``[100 soft] text <|endoftext|>`` and then ``" " + target + " "`` and
  EOS, and scores those last tokens (the trailing space is a token of its own). openpt's template
  ``[SOFT*100]{text}<|endoftext|> {target}`` feeds the same sequence when the target is given as
  OpenPrompt writes it (``target + " "``; openpt adds the leading space and EOS), so the per-token
  log-likelihoods are the same numbers. With openpt's own target (no trailing space) the target
  tokens score the same and only the end differs: openpt scores EOS right after the target,
  OpenPrompt the space token and then EOS.
* T5. OpenPrompt's encoder input is ``[100 soft] text </s> <extra_id_0> </s>`` and its decoder
  side ``<pad> <extra_id_0> " " + target </s>``, scoring the target and EOS but not the sentinel.
  openpt's template ``[SOFT*100]{text}</s><extra_id_0> {target}`` gives the same encoder input, and
  the target ``"<extra_id_0> " + target`` the same decoder side; openpt also scores the sentinel,
  so OpenPrompt's number is openpt's per-token sum without its first token. With openpt's own
  target (no sentinel) the decoder starts ``<pad> target``: the same tokens are scored, each in
  another context, so every value differs.
* Reduction. OpenPrompt sums each example's token losses and averages the sums over the batch;
  openpt averages over all target tokens of the batch. So OpenPrompt's batch loss is openpt's
  times (scored tokens / examples), less the sentinel terms for T5.

Tolerances: each token's loss to 1e-5; sums of up to 40 tokens (values up to 250) to
1e-5 + 1e-6 x value (float32 sums of float32 token losses).
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
import torch

from openpt.backbone import load_backbone
from openpt.model.build import PromptOptions, build_model, template_spec
from openpt.tasks import get_task
from openpt.types import InputExample

from ..conftest import ASSETS, build_tokenizer

# OpenPrompt 1.0.1 PromptForGeneration losses (per example, then the batch), float32 as measured.
OPENPROMPT_LOSSES = {
    "gpt2": ((112.39300537109375, 134.53416442871094, 249.17507934570312), 165.367431640625),
    "t5": ((105.3248062133789, 117.96157836914062, 248.81297302246094), 157.36643981933594),
}
TEMPLATES = {"gpt2": "[SOFT*100]{text}<|endoftext|> {target}", "t5": "[SOFT*100]{text}</s><extra_id_0> {target}"}
MODEL_CLASSES = {"gpt2": "GPT2LMHeadModel", "t5": "T5ForConditionalGeneration"}
KINDS = ("gpt2", "t5")


def _load_case() -> ModuleType:
    spec = importlib.util.spec_from_file_location("openprompt_generation_case", ASSETS / "openprompt_generation_case.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


CASE = _load_case()
RECORD = json.loads((ASSETS / "openprompt_generation_anchor.json").read_text(encoding="utf-8"))


def close(ours: float, theirs: float) -> bool:
    return abs(ours - theirs) <= 1e-5 + 1e-6 * abs(theirs)


def as_openprompt_writes(kind: str, target: str) -> str:
    """The target text that gives openpt OpenPrompt's token sequence (see the module docstring)."""
    return target + " " if kind == "gpt2" else "<extra_id_0> " + target


@pytest.fixture(scope="module", params=KINDS)
def anchored(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """(kind, openpt generation model) with the anchor's weights and soft prompt, in eval mode."""
    import transformers

    kind = request.param
    tokenizer = build_tokenizer(kind)
    config = CASE.build_config(kind, len(tokenizer), tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id)
    backbone = getattr(transformers, MODEL_CLASSES[kind])(config)
    CASE.fill_parameters(backbone)
    directory = tmp_path_factory.mktemp(f"anchor-{kind}")
    tokenizer.save_pretrained(directory)
    backbone.save_pretrained(directory)
    model = build_model(load_backbone(directory), template_spec(TEMPLATES[kind]), None, PromptOptions(max_length=400),
                        task=get_task("generation"))
    with torch.no_grad():
        model.template.soft.weight.copy_(CASE.soft_values())
    return kind, model.eval()


def examples(kind: str, openprompt_form: bool = True) -> list[InputExample]:
    return [InputExample(text, targets=[as_openprompt_writes(kind, target) if openprompt_form else target]) for text, target in CASE.PAIRS]


def scored(model, rows: list[InputExample]) -> tuple[list[list[int]], list[list[float]], object]:
    """openpt's scored token ids and their losses (-log-likelihood) per example, and the batch."""
    batch = model.collate_pairs(model.encode_pairs(rows))
    with torch.no_grad():
        logprobs, real = model.token_logprobs(batch)
    labels = batch.labels.cpu()
    ids = [row[row != -100].tolist() for row in labels]
    losses = [(-values[mask]).tolist() for values, mask in zip(logprobs.cpu(), real.cpu())]
    return ids, losses, batch


def test_constants_are_the_recorded_measurement():
    assert RECORD["versions"]["openprompt"] == "1.0.1" and RECORD["versions"]["transformers"] == "4.27.4"
    assert (RECORD["template"], RECORD["num_soft"]) == (CASE.OPENPROMPT_TEMPLATE, CASE.NUM_SOFT)
    for kind, (per_example, batch_loss) in OPENPROMPT_LOSSES.items():
        result = RECORD["results"][kind]
        assert [row["loss"] for row in result["examples"]] == list(per_example)
        assert result["loss"] == batch_loss
        assert abs(sum(per_example) / len(per_example) - batch_loss) < 1e-4  # PromptForGeneration: mean of per-example sums
        for row in result["examples"]:  # each per-example loss is the sum of its token losses
            assert close(sum(row["token_losses"]), row["loss"])


def test_same_weights_soft_prompt_and_tokens_as_openprompt(anchored):
    kind, model = anchored
    result = RECORD["results"][kind]
    assert CASE.parameter_digest(model.backbone.model) == pytest.approx(result["parameter_sums"], abs=1e-6)
    assert float(model.template.soft.weight.detach().double().sum()) == pytest.approx(result["soft_sum"], abs=1e-9)
    ids, _, batch = scored(model, examples(kind))
    for n, row in enumerate(result["examples"]):
        length = batch.lengths[n]
        soft = batch.soft_index[n, :length].cpu()
        assert soft[: CASE.NUM_SOFT].tolist() == list(range(CASE.NUM_SOFT)) and (soft[CASE.NUM_SOFT:] < 0).all()  # soft tokens in front
        assert batch.input_ids[n, CASE.NUM_SOFT:length].tolist() == row["input_ids"]
        if kind == "gpt2":
            assert ids[n] == row["scored_ids"]
        else:  # openpt's labels: the sentinel, then OpenPrompt's scored tokens; its decoder input is OpenPrompt's
            assert ids[n] == [result["special_ids"]["extra_id_0"]] + row["scored_ids"]
            assert [result["special_ids"]["pad"]] + ids[n][:-1] == row["decoder_input_ids"][:-1]


def test_per_token_and_summed_losses_equal_openprompt_constants(anchored):
    kind, model = anchored
    _, losses, _ = scored(model, examples(kind))
    if kind == "t5":  # OpenPrompt does not score the sentinel <extra_id_0>
        losses = [row[1:] for row in losses]
    per_example, batch_loss = OPENPROMPT_LOSSES[kind]
    for ours, row, constant in zip(losses, RECORD["results"][kind]["examples"], per_example):
        torch.testing.assert_close(torch.tensor(ours), torch.tensor(row["token_losses"]), atol=1e-5, rtol=0)
        assert close(sum(ours), constant)
    assert close(sum(sum(row) for row in losses) / len(losses), batch_loss)


def test_openprompt_reduction_from_openpt_mean_loss(anchored):
    """OpenPrompt's loss = openpt's token-mean loss x scored tokens / examples (T5: less the sentinel terms)."""
    kind, model = anchored
    _, losses, batch = scored(model, examples(kind))
    tokens = sum(len(row) for row in losses)
    sentinel = sum(row[0] for row in losses) if kind == "t5" else 0.0
    with torch.no_grad():
        mean = model.loss(batch).item()
        assert close((mean * tokens - sentinel) / len(losses), OPENPROMPT_LOSSES[kind][1])
        for row, constant in zip(examples(kind), OPENPROMPT_LOSSES[kind][0]):
            single = model.collate_pairs(model.encode_pairs([row]))
            ids, one, _ = scored(model, [row])
            first = one[0][0] if kind == "t5" else 0.0
            assert close(model.loss(single).item() * len(ids[0]) - first, constant)


def test_openpt_own_target_form_differs_where_documented(anchored):
    """openpt's own targets (no trailing space, no sentinel): the shared tokens and the by-design differences."""
    kind, model = anchored
    ids, losses, _ = scored(model, examples(kind, openprompt_form=False))
    eos = RECORD["results"][kind]["special_ids"]["eos"]
    for own_ids, own, row in zip(ids, losses, RECORD["results"][kind]["examples"]):
        theirs = row["token_losses"]
        if kind == "gpt2":  # same target tokens, same scores; then EOS (openpt) vs the space token and EOS (OpenPrompt)
            assert own_ids == row["scored_ids"][:-2] + [eos]
            torch.testing.assert_close(torch.tensor(own[:-1]), torch.tensor(theirs[:-2]), atol=1e-5, rtol=0)
            assert abs(own[-1] - theirs[-1]) > 1e-3
        else:  # same scored tokens, but the decoder lacks OpenPrompt's <extra_id_0>: every score moves
            assert own_ids == row["scored_ids"]
            assert min(abs(a - b) for a, b in zip(own, theirs)) > 1e-5
