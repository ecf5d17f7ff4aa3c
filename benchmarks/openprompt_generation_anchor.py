"""OpenPrompt 1.0.1's ``PromptForGeneration`` loss on tiny GPT-2 and T5 models with a fixed soft
prompt: the constants of ``tests/unit/test_openprompt_generation_anchor.py``.

The case (``tests/assets/openprompt_generation_case.py``, shared with the test): the soft template
of OpenPrompt's conditional-generation tutorial (2.1),
``SoftTemplate(text='{"placeholder":"text_a"} {"special": "<eos>"} {"mask"}', num_tokens=100)``,
with the soft embeddings set to fixed values, the tutorial's ``PromptDataLoader`` settings
(``teacher_forcing=True, predict_eos_token=True``, max lengths 256, head truncation) and
``PromptForGeneration(freeze_plm=True, plm_eval_mode=True)``, on three (input, target) pairs.
Models are built from configs (``tests/conftest.py``'s tiny sizes) and every parameter is filled
by name, so the openpt side rebuilds the same weights under transformers 5. Tokenizers come from
the vocabularies in ``tests/assets``: GPT-2's slow tokenizer as ``load_plm`` uses it; for T5 the
fast one with the slow one's special-tokens mask (the slow T5 tokenizer needs sentencepiece and a
``.model`` file, which this environment and ``tests/assets`` lack). The T5 ``tokenizer.json`` is written with tokenizers 0.2x's Metaspace
fields (``prepend_scheme: always``); tokenizers 0.13 reads only ``add_prefix_space``, so the file
is handed over with that one field renamed (same splitting; the test checks the ids).
``load_plm`` is not used: it would load from a hub and give GPT-2 an extra ``<pad>`` token; here
GPT-2 pads with ``<|endoftext|>`` (as openpt's tiny GPT-2 does), on the right, where it is masked.

Written out (JSON): per backbone, the tokens each example feeds the model, the tokens
OpenPrompt scores with their cross-entropy, the per-example loss (summed over those tokens) and
the batch loss (``PromptForGeneration.forward``: the mean of the per-example sums).

Runs only in the OpenPrompt environment (never imported by the tests; it does not import openpt):

    bash ../shared/anchors/setup_openprompt.sh ../.venv-openprompt
    ../.venv-openprompt/bin/python benchmarks/openprompt_generation_anchor.py --out tests/assets/openprompt_generation_anchor.json

Measured with openprompt 1.0.1, transformers 4.27.4, tokenizers 0.13.3, torch 2.13.0+cpu, Python
3.11 (the versions are written into the JSON).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "tests" / "assets"


def load_case() -> Any:
    """``tests/assets/openprompt_generation_case.py`` (no openpt, no pytest)."""
    spec = importlib.util.spec_from_file_location("openprompt_generation_case", ASSETS / "openprompt_generation_case.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _legacy_metaspace(node: Any) -> Any:
    """tokenizers 0.13's form of a Metaspace (pre-)tokenizer: ``add_prefix_space`` instead of ``prepend_scheme``/``split``."""
    if isinstance(node, list):
        return [_legacy_metaspace(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _legacy_metaspace(value) for key, value in node.items()}
    if node.get("type") == "Metaspace" and "prepend_scheme" in node:
        if node.pop("prepend_scheme") != "always":
            raise ValueError("only prepend_scheme 'always' has a tokenizers 0.13 equivalent")
        node.pop("split", None)
        node["add_prefix_space"] = True
    return node


def build_tokenizer(kind: str, scratch: Path) -> Any:
    """The tiny tokenizer of ``kind`` under transformers 4.27 (the test checks that the ids equal openpt's).

    GPT-2: the slow ``GPT2Tokenizer`` that ``load_plm`` uses. T5: the slow one needs sentencepiece
    and a ``.model`` file, so the fast tokenizer stands in, with the slow one's special-tokens mask
    (OpenPrompt's wrappers ask for it; the fast one refuses): one EOS after the sequence.
    """
    from transformers import GPT2Tokenizer, T5TokenizerFast

    if kind == "gpt2":
        tokenizer = GPT2Tokenizer(vocab_file=str(ASSETS / "gpt2" / "vocab.json"), merges_file=str(ASSETS / "gpt2" / "merges.txt"),
                                  pad_token="<|endoftext|>", model_max_length=512)
        tokenizer.sanitize_special_tokens()  # as from_pretrained does: <|endoftext|> is one token, never split
        return tokenizer

    class T5WithSpecialMask(T5TokenizerFast):
        def get_special_tokens_mask(self, token_ids_0: list[int], token_ids_1: list[int] | None = None,
                                    already_has_special_tokens: bool = False) -> list[int]:
            if already_has_special_tokens or token_ids_1 is not None:
                return super().get_special_tokens_mask(token_ids_0, token_ids_1, already_has_special_tokens)
            return [0] * len(token_ids_0) + [1]  # transformers 4.27 T5Tokenizer.get_special_tokens_mask

    data = json.loads((ASSETS / "t5" / "tokenizer.json").read_text(encoding="utf-8"))
    path = scratch / "t5-tokenizer.json"
    path.write_text(json.dumps(_legacy_metaspace(data)), encoding="utf-8")
    return T5WithSpecialMask(tokenizer_file=str(path), extra_ids=10, model_max_length=512)


def build_model(case: Any, kind: str, tokenizer: Any) -> Any:
    from transformers import GPT2LMHeadModel, T5ForConditionalGeneration

    config = case.build_config(kind, len(tokenizer), tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id)
    model = (GPT2LMHeadModel if kind == "gpt2" else T5ForConditionalGeneration)(config)
    case.fill_parameters(model)
    return model.eval()


def measure(case: Any, kind: str, scratch: Path) -> dict[str, Any]:
    """Everything OpenPrompt computes for the case on one backbone."""
    from openprompt import PromptDataLoader, PromptForGeneration
    from openprompt.data_utils import InputExample
    from openprompt.plms import LMTokenizerWrapper, T5TokenizerWrapper
    from openprompt.prompts import SoftTemplate

    tokenizer = build_tokenizer(kind, scratch)
    plm = build_model(case, kind, tokenizer)
    template = SoftTemplate(model=plm, tokenizer=tokenizer, text=case.OPENPROMPT_TEMPLATE, num_tokens=case.NUM_SOFT)
    with torch.no_grad():
        template.soft_embeds.copy_(case.soft_values())
    model = PromptForGeneration(plm=plm, template=template, freeze_plm=True, tokenizer=tokenizer, plm_eval_mode=True).eval()
    examples = [InputExample(guid=str(n), text_a=text, tgt_text=target) for n, (text, target) in enumerate(case.PAIRS)]

    def batch() -> Any:  # a fresh batch: SoftTemplate.process_batch rewrites the one it is given
        loader = PromptDataLoader(dataset=examples, template=template, tokenizer=tokenizer,
                                  tokenizer_wrapper_class=LMTokenizerWrapper if kind == "gpt2" else T5TokenizerWrapper,
                                  max_seq_length=case.MAX_SEQ_LENGTH, decoder_max_length=case.DECODER_MAX_LENGTH,
                                  batch_size=len(examples), shuffle=False, teacher_forcing=True, predict_eos_token=True,
                                  truncate_method="head")
        return next(iter(loader))

    with torch.no_grad():
        loss = model(batch())  # PromptForGeneration._forward: per-example sums, then their mean
        features = batch()
        reference = features["decoder_input_ids" if plm.config.is_encoder_decoder else "input_ids"].clone()
        inputs = [row[mask.bool()].tolist() for row, mask in zip(features["input_ids"], features["attention_mask"])]
        decoder = [row[: int((ids > 0).nonzero().max()) + 1].tolist() for row, ids in zip(reference, features["loss_ids"])] \
            if plm.config.is_encoder_decoder else None
        logits = model.prompt_model(features).logits
        shifted, labels = model.shift_logits_and_labels(logits, features["loss_ids"], reference)
        token_losses = torch.nn.functional.cross_entropy(shifted.transpose(1, 2), labels, reduction="none")
    rows = []
    for n, (example_labels, example_losses) in enumerate(zip(labels, token_losses)):
        scored = example_labels != -100
        rows.append({
            "input": case.PAIRS[n][0], "target": case.PAIRS[n][1],
            "input_ids": inputs[n],  # encoder / model input without padding; the soft tokens go in front of it
            "decoder_input_ids": decoder[n] if decoder else None,  # T5: <pad> <extra_id_0> target EOS
            "scored_ids": example_labels[scored].tolist(),
            "scored_positions": scored.nonzero().flatten().tolist(),  # in the shifted sequence (without soft tokens)
            "token_losses": example_losses[scored].tolist(),
            "loss": float(example_losses[scored].sum()),
        })
    return {
        "vocab_size": len(tokenizer),
        "special_ids": {"pad": tokenizer.pad_token_id, "eos": tokenizer.eos_token_id,
                        "extra_id_0": tokenizer.convert_tokens_to_ids("<extra_id_0>") if kind == "t5" else None},
        "parameter_sums": case.parameter_digest(plm),
        "soft_sum": float(template.soft_embeds.detach().double().sum()),
        "examples": rows,
        "loss": float(loss),
        "mean_of_example_losses": sum(row["loss"] for row in rows) / len(rows),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ASSETS / "openprompt_generation_anchor.json", help="JSON file to write")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import openprompt
    import tokenizers
    import transformers

    case = load_case()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        results = {kind: measure(case, kind, Path(scratch)) for kind in ("gpt2", "t5")}
    record = {
        "command": "python benchmarks/openprompt_generation_anchor.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:])),
        "template": case.OPENPROMPT_TEMPLATE, "num_soft": case.NUM_SOFT,
        "versions": {"openprompt": getattr(openprompt, "__version__", "?"), "transformers": transformers.__version__,
                     "tokenizers": tokenizers.__version__, "torch": torch.__version__, "python": platform.python_version()},
        "machine": f"{platform.machine()} CPU, {args.threads} torch threads",
        "wall_seconds": round(time.perf_counter() - start, 2),
        "results": results,
    }
    args.out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    for kind, result in results.items():
        print(f"{kind}: loss {result['loss']:.6f}  per example " + ", ".join(f"{row['loss']:.6f}" for row in result["examples"]))
    print(f"wrote {args.out} ({record['wall_seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
