"""Generation prompts: loss, per-token log-likelihoods and greedy generations equal PEFT's prompt tuning and
prefix tuning (CAUSAL_LM: GPT-2, Llama; SEQ_2_SEQ_LM: T5, BART) on tiny random models with the same weights.

Greedy generations equal the greedy chain of PEFT's own forward in every case, and
``PeftModel.generate`` where it agrees with that forward. Where positions or layouts differ by
design, both sides are tested:

* PEFT's CAUSAL_LM prompt-tuning ``generate`` numbers generated tokens from the input length
  without the virtual tokens; openpt continues the trained positions (``P + L``, ...).
* PEFT's prefix-tuning ``generate`` (Llama, T5) loses its prefix under transformers 5.2x (its
  ``past_key_values`` yields to ``generate``'s own cache).

* BART puts ``<s>`` before the input; PEFT's virtual tokens go before it, so an openpt template
  matches PEFT with ``soft_placement: before_special`` and differs with the default ``after_special``.
* PEFT's ``SEQ_2_SEQ_LM`` prefix tuning gives decoder layer ``i`` the prefix slot ``2i mod layers``
  (its key/value table is duplicated for cross-attention, then split four ways, and the cross half
  dropped); openpt keeps one prefix per layer. Copying PEFT's slot ``2i mod layers`` into openpt's
  layer ``i`` gives PEFT's numbers exactly; the plain per-layer copy does not.
"""
from __future__ import annotations

import copy

import pytest
import torch

from openpt.backbone import load_backbone
from openpt.model.build import PromptOptions, build_model, template_spec
from openpt.tasks import get_task
from openpt.types import InputExample

from .helpers import backbone_digest

import peft  # noqa: E402  (the test extra installs it: a missing one fails, never skips)

EXAMPLES = [InputExample("name[Aromi] area[riverside]", targets=["Aromi is by the river ."]),
            InputExample("name[Blue Spice] eatType[pub]", targets=["Blue Spice is a pub ."])]
P = 4
CASES = [(kind, method) for kind in ("gpt2", "llama", "t5", "bart") for method in ("prompt", "prefix")]


def openpt_model(directory, method: str, *, placement: str = "before_special"):
    backbone = load_backbone(directory)
    if method == "prompt":
        spec = template_spec({"text": f"[SOFT*{P}] {{text}} Description: {{target}}", "soft_placement": placement})
        options = PromptOptions(max_length=64)
    else:
        spec = template_spec("{text} Description: {target}")
        options = PromptOptions(max_length=64, prefix={"length": P, "init": "random"})
    model = build_model(backbone, spec, None, options, seed=3, task=get_task("generation"))
    with torch.no_grad():  # prompt values far from the initialisation
        for parameter in model.trainable_parameters():
            parameter.add_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(7)))
    return model


def peft_copy(model, method: str, *, peft_layout: bool = True):
    """A PEFT model on a copy of the same weights holding the same prompt values."""
    from peft import PrefixTuningConfig, PromptTuningConfig, TaskType, get_peft_model

    task = TaskType.CAUSAL_LM if model.causal else TaskType.SEQ_2_SEQ_LM
    if method == "prompt":
        config = PromptTuningConfig(task_type=task, num_virtual_tokens=P, num_transformer_submodules=1)
    else:
        config = PrefixTuningConfig(task_type=task, num_virtual_tokens=P)
    wrapped = get_peft_model(copy.deepcopy(model.backbone.model), config).eval()
    with torch.no_grad():
        if method == "prompt":
            wrapped.prompt_encoder["default"].embedding.weight.copy_(model.template.soft.weight)
        else:
            table = model.prefix.key_values()  # [layers, 2, P, width] -> PEFT [P, layers * 2 * width]
            wrapped.prompt_encoder["default"].embedding.weight.copy_(table.permute(2, 0, 1, 3).reshape(P, -1))
            if not model.causal and peft_layout:  # PEFT's decoder layer i reads slot 2i mod layers
                layers = table.shape[0]
                model.prefix.table.copy_(torch.stack([table[(2 * i) % layers] for i in range(layers)]))
    return wrapped


def peft_inputs(model, batch):
    """The real (non-soft) input ids and the labels PEFT gets for row 0 of ``batch``."""
    real = batch.soft_index[0] < 0
    ids = batch.input_ids[0][real][None]
    labels = batch.labels[0][real][None] if model.causal else batch.labels[:1]
    return ids, labels


def peft_target_logprobs(model, wrapped, ids, labels):
    out = wrapped(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)
    logits = out.logits
    if model.causal:
        logits = logits[:, -ids.shape[1]:][:, :-1]  # PEFT prompt tuning returns the virtual positions too
        labels = labels[:, 1:]
    real = labels != -100
    picked = torch.log_softmax(logits.float(), -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return out.loss, picked[real]


@pytest.mark.parametrize("kind, method", CASES, ids=[f"{k}-{m}" for k, m in CASES])
def test_loss_and_token_loglik_equal_peft(request, kind, method):
    model = openpt_model(request.getfixturevalue(f"tiny_{kind}_dir"), method)
    model.eval()
    batch = model.collate_pairs(model.encode_pairs(EXAMPLES[:1]))
    wrapped = peft_copy(model, method)
    ids, labels = peft_inputs(model, batch)
    with torch.no_grad():
        loss, theirs = peft_target_logprobs(model, wrapped, ids, labels)
        ours, real = model.token_logprobs(batch)
        assert abs(model.loss(batch).item() - loss.item()) < 1e-5
    torch.testing.assert_close(ours[real], theirs, atol=1e-5, rtol=0)


def peft_forward_greedy(model, wrapped, ids, steps: int) -> list[int]:
    """Greedy tokens from PEFT's own forward (teacher forcing on the tokens chosen so far), cut at EOS."""
    chain: list[int] = []
    with torch.no_grad():
        for _ in range(steps):
            if model.causal:
                x = torch.cat([ids, torch.tensor([chain], dtype=torch.long)], 1)
                logits = wrapped(input_ids=x, attention_mask=torch.ones_like(x)).logits[0, -1]
            else:
                decoder = torch.tensor([[model.backbone.model.config.decoder_start_token_id] + chain])
                logits = wrapped(input_ids=ids, attention_mask=torch.ones_like(ids), decoder_input_ids=decoder).logits[0, -1]
            chain.append(int(logits.argmax()))
            if chain[-1] == model.eos_id:
                return chain[:-1]
    return chain


def peft_generate(model, wrapped, ids, steps: int) -> list[int]:
    """``PeftModel.generate``'s greedy tokens, cut at EOS."""
    with torch.no_grad():
        out = wrapped.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=steps, do_sample=False, num_beams=1,
                               pad_token_id=model.backbone.pad_id, eos_token_id=model.eos_id)
    new = (out[0, ids.shape[1]:] if model.causal else out[0, 1:]).tolist()
    return new[: new.index(model.eos_id)] if model.eos_id in new else new


def real_ids(model, example):
    encoded = model.template.encode([example])[0]
    return torch.tensor([[t for t, s in zip(encoded.input_ids, encoded.soft_index) if s < 0]])


PEFT_GENERATE_AGREES = [("gpt2", "prefix"), ("t5", "prompt"), ("bart", "prompt"), ("bart", "prefix")]
GREEDY_CASES = [("forward", k, m) for k, m in CASES] + [("generate", k, m) for k, m in PEFT_GENERATE_AGREES]


@pytest.mark.parametrize("reference, kind, method", GREEDY_CASES, ids=[f"{r}-{k}-{m}" for r, k, m in GREEDY_CASES])
def test_greedy_generation_is_token_identical_to_peft(request, reference, kind, method):
    """Against PEFT's model driven greedily by its forward (every case) and by its own ``generate``."""
    peft_greedy = {"forward": peft_forward_greedy, "generate": peft_generate}[reference]
    model = openpt_model(request.getfixturevalue(f"tiny_{kind}_dir"), method)
    wrapped = peft_copy(model, method)
    for example in EXAMPLES:
        assert model.generate([example], max_new_tokens=6)[0].token_ids[0] == peft_greedy(model, wrapped, real_ids(model, example), 6)


@pytest.mark.parametrize("kind", ["gpt2"])
def test_peft_causal_prompt_generation_numbers_new_tokens_without_the_virtual_tokens(request, kind):
    """By design openpt's generated tokens continue the positions of the sequence it trained on
    (virtual tokens + input, then ``P + L``, ``P + L + 1``, ...), as PEFT's own forward does.
    ``PeftModel.generate`` (CAUSAL_LM prompt tuning) numbers them from the input length ``L``
    instead; on GPT-2 (absolute positions) a greedy chain with those positions reproduces it (on Llama
    the generated tokens differ as well; the forward-greedy test covers openpt's side there)."""
    model = openpt_model(request.getfixturevalue(f"tiny_{kind}_dir"), "prompt")
    wrapped = peft_copy(model, "prompt")
    from openpt.types import Batch

    example = EXAMPLES[0]
    encoded = model.template.encode([example])[0]
    ids, soft, chain = list(encoded.input_ids), list(encoded.soft_index), []
    with torch.no_grad():
        for _ in range(6):
            full = ids + chain
            positions = list(range(len(ids))) + [len(ids) - P + k for k in range(len(chain))]
            batch = Batch(torch.tensor([full]), torch.ones(1, len(full), dtype=torch.long), torch.tensor([soft + [-1] * len(chain)]),
                          torch.zeros(1, 0, dtype=torch.long))
            embeds = model.template.embed(batch, model.backbone.input_embeddings())
            logits = model.backbone.model(inputs_embeds=embeds, attention_mask=batch.attention_mask,
                                          position_ids=torch.tensor([positions])).logits[0, -1]
            chain.append(int(logits.argmax()))
    chain = chain[: chain.index(model.eos_id)] if model.eos_id in chain else chain
    theirs = peft_generate(model, wrapped, real_ids(model, example), 6)
    assert theirs == chain
    assert model.generate([example], max_new_tokens=6)[0].token_ids[0] != theirs  # the two numberings part ways on this input


@pytest.mark.parametrize("kind", ["llama", "t5"])
def test_peft_prefix_generation_drops_the_prefix_under_this_transformers(request, kind):
    """``PeftModel.generate`` with prefix tuning hands its prefix over as ``past_key_values`` while
    ``generate`` passes its own (empty) ``cache``, which transformers 5.2x prefers: the prefix is
    ignored and PEFT generates what the bare backbone does. openpt's prefix is the cache ``generate``
    continues from (see the forward-greedy test above)."""
    model = openpt_model(request.getfixturevalue(f"tiny_{kind}_dir"), "prefix")
    wrapped = peft_copy(model, "prefix")
    example = EXAMPLES[0]
    ids = real_ids(model, example)
    bare = build_model(load_backbone(request.getfixturevalue(f"tiny_{kind}_dir")), template_spec("{text} Description: {target}"), None,
                       PromptOptions(max_length=64), task=get_task("generation"))
    assert peft_generate(model, wrapped, ids, 6) == bare.generate([example], max_new_tokens=6)[0].token_ids[0]
    assert model.generate([example], max_new_tokens=6)[0].token_ids[0] == peft_forward_greedy(model, wrapped, ids, 6)


def test_batched_generation_equals_one_at_a_time(tiny_gpt2_dir, tiny_t5_dir):
    for directory in (tiny_gpt2_dir, tiny_t5_dir):
        for method in ("prompt", "prefix"):
            model = openpt_model(directory, method)
            rows = EXAMPLES + [InputExample("name[Zizzi]")]
            together = [r.token_ids[0] for r in model.generate(rows, batch_size=3, max_new_tokens=5)]
            alone = [model.generate([row], max_new_tokens=5)[0].token_ids[0] for row in rows]
            assert together == alone


def test_bart_soft_tokens_after_bos_differ_from_peft(tiny_bart_dir):
    model = openpt_model(tiny_bart_dir, "prompt", placement="after_special")
    model.eval()
    batch = model.collate_pairs(model.encode_pairs(EXAMPLES[:1]))
    assert model.backbone.tokenizer.convert_ids_to_tokens(batch.input_ids[0, 0].item()) == "<s>"  # <s> before the soft run
    wrapped = peft_copy(model, "prompt")
    ids, labels = peft_inputs(model, batch)
    with torch.no_grad():
        loss, _ = peft_target_logprobs(model, wrapped, ids, labels)
        assert abs(model.loss(batch).item() - loss.item()) > 1e-6


def test_seq2seq_prefix_per_layer_differs_from_peft_layout(tiny_t5_dir):
    model = openpt_model(tiny_t5_dir, "prefix")
    model.eval()
    batch = model.collate_pairs(model.encode_pairs(EXAMPLES[:1]))
    wrapped = peft_copy(model, "prefix", peft_layout=False)
    ids, labels = peft_inputs(model, batch)
    with torch.no_grad():
        loss, _ = peft_target_logprobs(model, wrapped, ids, labels)
        assert abs(model.loss(batch).item() - loss.item()) > 1e-4


@pytest.mark.parametrize("kind, method", [("gpt2", "prompt"), ("llama", "prefix"), ("t5", "prefix"), ("bart", "prompt")])
def test_gradients_reach_only_prompt_parameters(request, kind, method):
    model = openpt_model(request.getfixturevalue(f"tiny_{kind}_dir"), method)
    before = backbone_digest(model)
    model.train()
    batch = model.collate_pairs(model.encode_pairs(EXAMPLES))
    model.loss(batch).backward()
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == {name for name, _ in model.named_trainable_parameters()} and with_grad
    assert not any(name.startswith("backbone.") for name in with_grad)
    optimizer = torch.optim.SGD(model.trainable_parameters(), lr=0.1)
    optimizer.step()
    assert backbone_digest(model) == before


def test_loss_covers_only_target_tokens_and_eos(tiny_gpt2_dir, tiny_t5_dir):
    causal = openpt_model(tiny_gpt2_dir, "prompt")
    item = causal.encode_pairs(EXAMPLES[:1])[0]
    target = [t for t in item.labels if t != -100]
    expected = causal.backbone.tokenizer(" " + EXAMPLES[0].targets[0], add_special_tokens=False)["input_ids"] + [causal.eos_id]
    assert target == expected and item.input_ids[-len(target):] == target  # teacher forcing: the target follows the input
    assert item.labels[: len(item.labels) - len(target)] == [-100] * (len(item.labels) - len(target))
    seq2seq = openpt_model(tiny_t5_dir, "prompt")
    item = seq2seq.encode_pairs(EXAMPLES[:1])[0]
    assert item.labels == seq2seq.backbone.tokenizer(EXAMPLES[0].targets[0])["input_ids"] and item.labels[-1] == seq2seq.eos_id
    # the loss is the mean cross-entropy over exactly those positions
    batch = causal.collate_pairs([causal.encode_pairs(EXAMPLES[:1])[0]])
    logprobs, real = causal.token_logprobs(batch)
    assert real.sum().item() == len(target)
    torch.testing.assert_close(causal.loss(batch), -logprobs[real].mean())


def test_long_targets_lose_their_end_with_a_warning(tiny_gpt2_dir, caplog):
    model = openpt_model(tiny_gpt2_dir, "prompt")
    full = model.encode_pairs(EXAMPLES[:1])[0]
    target = [t for t in full.labels if t != -100]
    with caplog.at_level("WARNING"):
        cut = model.encode_pairs(EXAMPLES[:1], max_target_length=4)[0]
    kept = [t for t in cut.labels if t != -100]
    assert kept == target[:3] + [model.eos_id] and cut.cut == len(target) - 4
    assert "1 of 1 targets are longer than max_target_length=4" in caplog.text


def test_decoding_options(tiny_gpt2_dir):
    model = openpt_model(tiny_gpt2_dir, "prefix")
    beams = model.generate(EXAMPLES, num_beams=3, num_return_sequences=2, max_new_tokens=4, scores=True)
    assert [len(r.texts) for r in beams] == [2, 2] and all(r.scores[0] >= r.scores[1] for r in beams)
    greedy = model.generate(EXAMPLES[:1], max_new_tokens=4, scores=True)[0]
    batch = model.collate_pairs([model.encode_pairs([InputExample(EXAMPLES[0].text, targets=["x"])])[0]])
    # the score of a greedy sequence is the sum of its tokens' log-probabilities under the model
    encoded = model.template.encode([EXAMPLES[0]])[0]
    ids = encoded.input_ids + greedy.token_ids[0]
    from openpt.types import Batch

    full = Batch(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), torch.tensor([encoded.soft_index + [-1] * len(greedy.token_ids[0])]),
                 torch.zeros(1, 0, dtype=torch.long), torch.tensor([[-100] * len(encoded.input_ids) + greedy.token_ids[0]]))
    logprobs, real = model.token_logprobs(full)
    assert batch is not None and abs(logprobs[real].sum().item() - greedy.scores[0]) < 1e-4 * max(1.0, abs(greedy.scores[0]))
    sampled = model.generate(EXAMPLES, do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=4)
    assert len(sampled) == 2
    stop = greedy.text[1:2] if len(greedy.text) > 1 else None
    if stop:
        cut = model.generate(EXAMPLES[:1], max_new_tokens=4, stop=[stop])[0].text
        assert stop not in cut and greedy.text.startswith(cut)
    from openpt.errors import ConfigError

    for bad, key in (({"num_beams": 0}, "num_beams"), ({"max_new_tokens": 0}, "max_new_tokens"), ({"top_p": 1.5}, "top_p"),
                     ({"num_return_sequences": 2}, "num_return_sequences"), ({"beams": 2}, "beams")):
        with pytest.raises(ConfigError, match=key):
            model.generate(EXAMPLES, **bad)
