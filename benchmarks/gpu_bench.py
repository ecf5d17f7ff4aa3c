#!/usr/bin/env python
"""openpt on a GPU: CPU-vs-GPU parity on tiny backbones, and throughput on large-model shapes.

    python benchmarks/gpu_bench.py --anchor ../shared/anchors/bench_peft_gpu.py --peft peft_gpu.json --out gpu.json
    python benchmarks/gpu_bench.py --anchor ../shared/anchors/bench_peft_gpu.py --run-anchor --peft peft_gpu.json --skip-parity --out gpu.json
    python benchmarks/gpu_bench.py --anchor ../shared/anchors/bench_peft_gpu.py --tiny --device cpu --batches 3 --out t.json

Parity (fp32): class scores of the same prompt model (soft tokens + manual verbalizer) on tiny
random BERT, T5 and GPT-2 backbones, on the CPU and on the device, and the losses and prompt
after three training steps; atol 1e-4.

Throughput: the anchor's shapes, batches and length distribution (imported from the anchor
script, so both sides see the same token ids): a roberta-large-shaped masked LM and a ~1.1B
Llama-shaped causal LM, random bf16 weights, 20 soft tokens, batch 32. openpt's PromptModel
runs the same hand loop as the anchor (forward, cross-entropy, backward, AdamW on the prompt):
inference examples/s, training steps/s, and peak GPU memory, also with activation
checkpointing. ``--peft`` reads the anchor's JSON from the same run and adds the ratios.

Packing: the inference and training phases run twice more with ``prompt.packing`` on (several
sequences per row, block-diagonal attention; see ``openpt/backbone/packing.py``), on the same
batches: ``openpt_inference_packed`` and ``openpt_train_packed``.

Compilation: with ``--compile MODE`` (default ``default``; ``none`` skips it) the backbone's
layers are compiled (``prompt.compile``, see ``openpt/model/compiling.py``) and the inference and
training phases run again, padded and packed: ``openpt_*_compiled`` and ``openpt_*_compiled_packed``.
The first batch's time (the compile) is recorded apart; a failed compile is recorded as
``compile_failed`` and the other phases stand. Results are written after every model.

Steady state: every batch has its own width, so the first pass of a phase over the batches pays
one-time per-shape costs (allocator growth, kernel selection) that the next phase on the same
shapes does not. Each openpt phase therefore times two passes over the very same batches, cold
(the first, after the two warm-up batches) and warm (the second); ``--run-anchor`` runs the
anchor's own per-model benchmark twice in this process (its first call is the cold pass of every
anchor phase, its second the warm one), writes both to ``--peft`` and compares the warm numbers.
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
from typing import Any, Callable

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

N_SOFT = 20
PARITY_ATOL = 1e-4
EXAMPLES = ["a gripping , funny film", "dull and far too long", "the cast is great", "a terrible mess",
            "one of the year 's best", "it never comes alive"]


def load_anchor(path: str) -> Any:
    spec = importlib.util.spec_from_file_location("bench_peft_gpu", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- parity

def parity(device: str) -> dict[str, Any]:
    """CPU-vs-device class scores and three training steps on tiny BERT, T5 and GPT-2 (float32)."""
    from openpt.backbone import load_backbone
    from openpt.model.build import PromptOptions, build_model
    from openpt.template.spec import template_spec_from_text
    from openpt.training.loop import TrainConfig, train
    from openpt.types import InputExample
    from openpt.verbalizer.manual import ManualVerbalizer
    from tests.conftest import build_tiny_backbone

    examples = [InputExample(t, label=i % 2) for i, t in enumerate(EXAMPLES)]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("bert", "t5", "gpt2"):
            torch.manual_seed(0)
            directory = build_tiny_backbone(kind, Path(tmp) / kind)
            per_device = {}
            for where in ("cpu", device):
                backbone = load_backbone(directory, device=where)
                model = build_model(backbone, template_spec_from_text("[SOFT*4] {text} It was [MASK]"),
                                    ManualVerbalizer({"negative": ["terrible"], "positive": ["great"]}), PromptOptions(max_length=64))
                scores = model.scores(examples)
                result = train(model, examples, None, TrainConfig(lr=0.05, steps=3, batch_size=3, eval_every=0))
                per_device[where] = (scores, [r["loss"] for r in result.history], model.template.soft.weight.detach().cpu())
            (s_cpu, l_cpu, w_cpu), (s_dev, l_dev, w_dev) = per_device["cpu"], per_device[device]
            diffs = {"scores": float((s_cpu - s_dev).abs().max()), "losses": max(abs(a - b) for a, b in zip(l_cpu, l_dev)),
                     "prompt_after_3_steps": float((w_cpu - w_dev).abs().max())}
            out[kind] = {"max_abs_diff": diffs, "pass": all(v <= PARITY_ATOL for v in diffs.values())}
    return out


# ---------------------------------------------------------------- throughput

def tokenizer_for(kind: str) -> Any:
    """A small fast tokenizer (label words only; the benchmark feeds token ids directly)."""
    from tests.conftest import build_tokenizer

    return build_tokenizer("roberta" if kind == "mlm" else "llama")


def prompt_model(anchor: Any, kind: str, tiny: bool, dtype: torch.dtype, device: str) -> tuple[Any, Any]:
    """openpt's PromptModel over the anchor's model (same config, seed and dtype)."""
    from openpt.backbone.causal import CausalLMBackbone
    from openpt.backbone.mlm import MaskedLMBackbone
    from openpt.model.build import PromptOptions, build_model
    from openpt.template.spec import template_spec_from_text
    from openpt.verbalizer.manual import ManualVerbalizer

    torch.manual_seed(anchor.SEED)
    with torch.device(device):  # random weights drawn on the device: seconds instead of a minute on the CPU
        model, cfg, _, _ = anchor.build(kind, tiny, dtype, device)
    model.eval()
    backbone = (MaskedLMBackbone if kind == "mlm" else CausalLMBackbone)(model, tokenizer_for(kind), f"random-{kind}")
    text = f"[SOFT*{N_SOFT}] {{text}} It was [MASK]"
    precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")
    prompt = build_model(backbone, template_spec_from_text(text), ManualVerbalizer({"negative": ["terrible"], "positive": ["great"]}),
                         PromptOptions(max_length=512, precision=precision))
    return prompt, cfg


def openpt_batches(anchor_batches: list, causal: bool, mask_id: int, pad_id: int) -> list:
    """The anchor's rows with 20 soft positions in front; the mask where the anchor reads its logits
    (causal: the last real token becomes the slot the label word fills, so the rows keep their length)."""
    from openpt.types import Batch

    out = []
    for ids, am, pos, y in anchor_batches:
        size, device = ids.shape[0], ids.device
        soft = torch.arange(N_SOFT, device=device).expand(size, -1)
        input_ids = torch.cat([torch.full((size, N_SOFT), pad_id, device=device, dtype=ids.dtype), ids], 1)
        mask = torch.cat([torch.ones(size, N_SOFT, dtype=am.dtype, device=device), am], 1)
        soft_index = torch.cat([soft, torch.full_like(ids, -1)], 1)
        if causal:
            positions = N_SOFT + pos  # the last real token's position: the slot
            input_ids[torch.arange(size, device=device), positions] = pad_id
        else:
            positions = N_SOFT + pos
            input_ids[torch.arange(size, device=device), positions] = mask_id
        lengths = tuple(mask.sum(1).tolist())  # what openpt's collate knows on the host (read here, before any timing)
        out.append(Batch(input_ids, mask, soft_index, positions.unsqueeze(1), y, lengths=lengths))
    return out


def length_sorted(anchor_batches: list) -> list:
    """The same rows re-batched in order of length, as :meth:`PromptModel.scores` orders an evaluation set
    (each batch padded to its own longest row): openpt's inference path on the same examples."""
    rows = [(ids[i, : int(am[i].sum())], pos[i], y[i]) for ids, am, pos, y in anchor_batches for i in range(ids.shape[0])]
    rows.sort(key=lambda row: row[0].shape[0])
    size, out = anchor_batches[0][0].shape[0], []
    pad = int(anchor_batches[0][0][anchor_batches[0][1] == 0][0]) if bool((anchor_batches[0][1] == 0).any()) else 0
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        width = max(r[0].shape[0] for r in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=chunk[0][0].dtype, device=chunk[0][0].device)
        am = torch.zeros_like(ids)
        for i, (row, _, _) in enumerate(chunk):
            ids[i, : row.shape[0]], am[i, : row.shape[0]] = row, 1
        out.append((ids, am, torch.stack([r[1] for r in chunk]), torch.stack([r[2] for r in chunk])))
    return out


def measure(fn: Callable[[Any], Any], batches: list, device: str) -> dict[str, Any]:
    """One timed pass of ``fn`` over ``batches`` (peak memory from this pass alone)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for b in batches:
        fn(b)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    n, size = len(batches), len(batches[0])
    return {"seconds": round(seconds, 3), "batches": n, "batch_size": size, "examples_per_s": round(n * size / seconds, 1),
            "steps_per_s": round(n / seconds, 2),
            "peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if device.startswith("cuda") else None}


def timed(fn: Callable[[Any], Any], batches: list, device: str, warmup: int = 2) -> dict[str, Any]:
    """The warm pass (a second pass over the very batches of the cold one), with the cold pass under ``cold``."""
    for b in batches[:warmup]:
        fn(b)
    cold = measure(fn, batches[warmup:], device)
    return {**measure(fn, batches[warmup:], device), "cold": cold}


def run_anchor(anchor: Any, args: argparse.Namespace, dtype: torch.dtype) -> dict[str, Any]:
    """The anchor's per-model benchmark called twice per model in this process: ``models`` holds the
    second (warm) call, ``models_cold`` the first. Its models are drawn on the device (as openpt's are):
    the same shapes and dtype, random values either way, seconds instead of a minute of CPU init."""
    import peft
    import transformers

    build = anchor.build

    def build_on_device(kind: str, tiny: bool, dtype: torch.dtype, device: str) -> Any:
        with torch.device(device):
            return build(kind, tiny, dtype, device)

    anchor.build = build_on_device
    res: dict[str, Any] = {"anchor": "peft prompt tuning (bf16 weights, dynamic padding, 20 virtual tokens, hand verbalizer)",
                           "protocol": "bench_model called twice per model in one process; models = second call, models_cold = first",
                           "device": args.device, "dtype": args.dtype, "tiny": args.tiny,
                           "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
                           "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
                           "python": platform.python_version(), "models": {}, "models_cold": {}}
    try:
        for kind in args.models:
            start = time.perf_counter()
            res["models_cold"][kind] = anchor.bench_model(kind, args, args.device, dtype)
            res["models"][kind] = anchor.bench_model(kind, args, args.device, dtype)
            res["models"][kind]["wall_seconds_both_calls"] = round(time.perf_counter() - start, 1)
    finally:
        anchor.build = build
    return res


def throughput(anchor: Any, kind: str, args: argparse.Namespace, dtype: torch.dtype) -> dict[str, Any]:
    from openpt.errors import BackboneError
    from openpt.model.build import enable_packing
    from openpt.model.checkpointing import enable_checkpointing

    device = args.device
    prompt, cfg = prompt_model(anchor, kind, args.tiny, dtype, device)
    causal = kind == "causal"
    mask_id, pad_id = (None, 0) if causal else (50264, 1)
    raw = anchor.make_batches(args.batches + 2, args.batch, cfg.vocab_size, mask_id, pad_id, anchor.SEED, causal)
    raw = [tuple(t.to(device) for t in b) for b in raw]
    batches = openpt_batches(raw, causal, mask_id if mask_id is not None else pad_id, pad_id)
    res: dict[str, Any] = {"kind": kind, "n_params": sum(p.numel() for p in prompt.backbone.model.parameters()),
                           "trainable_params": sum(p.numel() for p in prompt.trainable_parameters())}
    weights_mb = sum(p.numel() * p.element_size() for p in prompt.backbone.model.parameters()) / 2**20
    res["weights_mb"] = round(weights_mb, 1)
    prompt.eval()
    with torch.inference_mode():
        res["openpt_inference"] = timed(lambda b: prompt(b), batches, device)
        # the Hugging Face model on the very same tokens (soft positions as pad ids, full LM head): openpt's overhead
        res["hf_forward_same_tokens"] = timed(lambda b: prompt.backbone.model(input_ids=b.input_ids, attention_mask=b.attention_mask), batches, device)
        # the timed rows (not the warm-up batches) in openpt's evaluation order
        res["openpt_inference_length_sorted"] = timed(
            lambda b: prompt(b), batches[:2] + openpt_batches(length_sorted(raw[2:]), causal, mask_id if mask_id is not None else pad_id, pad_id), device)
        try:
            enable_packing(prompt)  # prompt.packing: true (several sequences per row, block-diagonal attention)
        except BackboneError as exc:  # the packed-vs-padded check refused this backbone: the other phases still run
            res["packing_refused"] = str(exc)
        if prompt.packing:
            res["openpt_inference_packed"] = timed(lambda b: prompt(b), batches, device)
            prompt.packing = False
    optimizer = torch.optim.AdamW(prompt.trainable_parameters(), lr=1e-2)
    losses: list[float] = []

    def step(b: Any) -> None:
        loss = F.cross_entropy(prompt(b), b.labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())

    prompt.train()
    res["openpt_train"] = timed(step, batches, device)
    if "packing_refused" not in res:
        prompt.packing = True
        res["openpt_train_packed"] = timed(step, batches, device)
        prompt.packing = False
    if args.compile != "none":
        compiled_phases(prompt, batches, device, step, args.compile, res)
    enable_checkpointing(prompt)
    res["openpt_train_grad_ckpt"] = timed(step, batches, device)
    res["losses_first_last"] = [round(float(losses[0]), 4), round(float(losses[-1]), 4)]
    del prompt, optimizer
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return res


def compiled_phases(prompt: Any, batches: list, device: str, step: Callable[[Any], None], mode: str, res: dict[str, Any]) -> None:
    """Inference and training with the backbone's layers compiled (``prompt.compile: MODE``), padded
    and (unless refused) packed; the layers run eagerly again afterwards."""
    from openpt.model.compiling import CompileConfig, compile_layers, uncompile_layers

    packing = "packing_refused" not in res
    try:
        compile_layers(prompt.backbone.model, CompileConfig(mode=mode))
        res["compile_mode"] = mode
        prompt.eval()
        with torch.inference_mode():
            res["compile_seconds_first_inference_batch"] = measure(lambda b: prompt(b), batches[:1], device)["seconds"]
            res["openpt_inference_compiled"] = timed(lambda b: prompt(b), batches, device)
            if packing:
                prompt.packing = True
                res["openpt_inference_compiled_packed"] = timed(lambda b: prompt(b), batches, device)
                prompt.packing = False
        prompt.train()
        res["compile_seconds_first_training_step"] = measure(step, batches[:1], device)["seconds"]
        res["openpt_train_compiled"] = timed(step, batches, device)
        if packing:
            prompt.packing = True
            res["openpt_train_compiled_packed"] = timed(step, batches, device)
    except Exception as exc:  # noqa: BLE001  a compiler failure is a result: the other phases stand
        res["compile_failed"] = f"{type(exc).__name__}: {exc}"[:2000]
    finally:
        prompt.packing = False
        prompt.train()
        uncompile_layers(prompt.backbone.model)


def ratios(ours: dict[str, Any], peft: dict[str, Any], state: str = "warm") -> dict[str, Any]:
    """Speed-ups over PEFT, overhead over the bare forward, memory ratios (same run, same GPU);
    ``state``: ``warm`` (second passes) or ``cold`` (openpt's first passes against the anchor's first call)."""
    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    missing = {"examples_per_s": None, "steps_per_s": None, "peak_mb": None, "cold": {"examples_per_s": None, "steps_per_s": None, "peak_mb": None}}
    phase = (lambda name: ours.get(name, missing)) if state == "warm" else (lambda name: ours.get(name, missing)["cold"])
    inference, train, ckpt = phase("openpt_inference"), phase("openpt_train"), phase("openpt_train_grad_ckpt")
    bare = peft["bare_forward"]
    return {
        "inference_vs_peft": ratio(inference["examples_per_s"], peft["peft_inference"]["examples_per_s"]),
        "train_vs_peft": ratio(train["steps_per_s"], peft["peft_train"]["steps_per_s"]),
        "packed_inference_vs_peft": ratio(phase("openpt_inference_packed")["examples_per_s"], peft["peft_inference"]["examples_per_s"]),
        "packed_train_vs_peft": ratio(phase("openpt_train_packed")["steps_per_s"], peft["peft_train"]["steps_per_s"]),
        "packed_inference_overhead_vs_bare_forward": ratio(bare["examples_per_s"], phase("openpt_inference_packed")["examples_per_s"]),
        "compiled_inference_vs_peft": ratio(phase("openpt_inference_compiled")["examples_per_s"], peft["peft_inference"]["examples_per_s"]),
        "compiled_packed_inference_vs_peft": ratio(phase("openpt_inference_compiled_packed")["examples_per_s"],
                                                   peft["peft_inference"]["examples_per_s"]),
        "compiled_train_vs_peft": ratio(phase("openpt_train_compiled")["steps_per_s"], peft["peft_train"]["steps_per_s"]),
        "compiled_packed_train_vs_peft": ratio(phase("openpt_train_compiled_packed")["steps_per_s"], peft["peft_train"]["steps_per_s"]),
        "compiled_packed_inference_overhead_vs_bare_forward": ratio(bare["examples_per_s"],
                                                                    phase("openpt_inference_compiled_packed")["examples_per_s"]),
        "train_grad_ckpt_vs_peft_grad_ckpt": ratio(ckpt["steps_per_s"], peft["peft_train_grad_ckpt"]["steps_per_s"]),
        "inference_overhead_vs_bare_forward": ratio(bare["examples_per_s"], inference["examples_per_s"]),
        "inference_overhead_vs_hf_forward_same_tokens": ratio(phase("hf_forward_same_tokens")["examples_per_s"], inference["examples_per_s"]),
        "length_sorted_inference_vs_peft": ratio(phase("openpt_inference_length_sorted")["examples_per_s"], peft["peft_inference"]["examples_per_s"]),
        "inference_peak_mb_vs_peft": ratio(inference["peak_mb"], peft["peft_inference"]["peak_mb"]),
        "train_peak_mb_vs_peft": ratio(train["peak_mb"], peft["peft_train"]["peak_mb"]),
        "grad_ckpt_peak_mb_vs_no_ckpt": ratio(ckpt["peak_mb"], train["peak_mb"]),
        "grad_ckpt_activation_mb_vs_no_ckpt": ratio(ckpt["peak_mb"] - ours["weights_mb"], train["peak_mb"] - ours["weights_mb"])
        if ckpt["peak_mb"] is not None else None,
    }


def table(res: dict[str, Any]) -> str:
    """Markdown rows: warm numbers, the cold (first-pass) ones in parentheses."""
    rows = ["| model | measurement | openpt warm (cold) | PEFT warm (cold) | ratio warm (cold) |", "|---|---|---|---|---|"]

    def pair(warm: Any, cold: Any) -> str:
        return f"{warm} ({cold})"

    for kind, ours in res["throughput"].items():
        peft, peft_cold = res.get("peft", {}).get(kind, {}), res.get("peft_cold", {}).get(kind, {})
        r, rc = ours.get("ratios", {}), ours.get("ratios_cold", {})
        get = lambda d, k, f: (d.get(k) or {}).get(f)  # noqa: E731
        of = lambda name: ours.get(name) or {"cold": {}}  # noqa: E731  (a phase that did not run: None)
        ex = lambda name: pair(of(name).get("examples_per_s"), of(name)["cold"].get("examples_per_s"))  # noqa: E731
        st = lambda name: pair(of(name).get("steps_per_s"), of(name)["cold"].get("steps_per_s"))  # noqa: E731
        pk = lambda name: pair(of(name).get("peak_mb"), of(name)["cold"].get("peak_mb"))  # noqa: E731
        pp = lambda name, f: pair(get(peft, name, f), get(peft_cold, name, f))  # noqa: E731
        rows += [
            f"| {kind} | inference, examples/s | {ex('openpt_inference')} | {pp('peft_inference', 'examples_per_s')} | "
            f"{pair(r.get('inference_vs_peft'), rc.get('inference_vs_peft'))}× PEFT |",
            f"| {kind} | inference, packed, examples/s | {ex('openpt_inference_packed')} | | "
            f"{pair(r.get('packed_inference_vs_peft'), rc.get('packed_inference_vs_peft'))}× PEFT |",
            f"| {kind} | inference, same rows length-sorted, examples/s | {ex('openpt_inference_length_sorted')} | | "
            f"{pair(r.get('length_sorted_inference_vs_peft'), rc.get('length_sorted_inference_vs_peft'))}× PEFT |",
            f"| {kind} | HF forward on openpt's tokens / bare HF forward (anchor), examples/s | {ex('hf_forward_same_tokens')} | "
            f"{pp('bare_forward', 'examples_per_s')} | overhead: HF-same-tokens/openpt "
            f"{pair(r.get('inference_overhead_vs_hf_forward_same_tokens'), rc.get('inference_overhead_vs_hf_forward_same_tokens'))}, "
            f"bare/openpt {pair(r.get('inference_overhead_vs_bare_forward'), rc.get('inference_overhead_vs_bare_forward'))} |",
            f"| {kind} | training, steps/s | {st('openpt_train')} | {pp('peft_train', 'steps_per_s')} | "
            f"{pair(r.get('train_vs_peft'), rc.get('train_vs_peft'))}× |",
            f"| {kind} | training, packed, steps/s | {st('openpt_train_packed')} | | "
            f"{pair(r.get('packed_train_vs_peft'), rc.get('packed_train_vs_peft'))}× |",
            f"| {kind} | inference, compiled / compiled + packed, examples/s | {ex('openpt_inference_compiled')} / "
            f"{ex('openpt_inference_compiled_packed')} | | {pair(r.get('compiled_inference_vs_peft'), rc.get('compiled_inference_vs_peft'))}"
            f" / {pair(r.get('compiled_packed_inference_vs_peft'), rc.get('compiled_packed_inference_vs_peft'))}× PEFT |",
            f"| {kind} | training, compiled / compiled + packed, steps/s | {st('openpt_train_compiled')} / "
            f"{st('openpt_train_compiled_packed')} | | {pair(r.get('compiled_train_vs_peft'), rc.get('compiled_train_vs_peft'))}"
            f" / {pair(r.get('compiled_packed_train_vs_peft'), rc.get('compiled_packed_train_vs_peft'))}× |",
            f"| {kind} | training + ckpt, steps/s | {st('openpt_train_grad_ckpt')} | {pp('peft_train_grad_ckpt', 'steps_per_s')} | "
            f"{pair(r.get('train_grad_ckpt_vs_peft_grad_ckpt'), rc.get('train_grad_ckpt_vs_peft_grad_ckpt'))}× |",
        ]
        for phase, peft_phase in (("openpt_inference", "peft_inference"), ("openpt_inference_packed", "peft_inference"),
                                  ("openpt_train", "peft_train"), ("openpt_train_packed", "peft_train"),
                                  ("openpt_train_grad_ckpt", "peft_train_grad_ckpt")):
            key = {"openpt_inference": "inference_peak_mb_vs_peft", "openpt_train": "train_peak_mb_vs_peft"}.get(phase)
            rows.append(f"| {kind} | peak MB, {phase.removeprefix('openpt_')} | {pk(phase)} | {pp(peft_phase, 'peak_mb')} | "
                        f"{pair(r.get(key), rc.get(key)) if key else ''} |")
        if "packing_refused" in ours:
            rows.append(f"| {kind} | packing refused | {ours['packing_refused']} | | |")
        if "compile_mode" in ours:
            rows.append(f"| {kind} | compile ({ours['compile_mode']}): first inference batch / first training step, s | "
                        f"{ours.get('compile_seconds_first_inference_batch')} / {ours.get('compile_seconds_first_training_step')} | | |")
        if "compile_failed" in ours:
            rows.append(f"| {kind} | compile failed | {ours['compile_failed'][:300]} | | |")
        rows.append(f"| {kind} | ckpt / no-ckpt peak (activations only) | {r.get('grad_ckpt_peak_mb_vs_no_ckpt')} "
                    f"({r.get('grad_ckpt_activation_mb_vs_no_ckpt')}) | | target ≤ 0.5 |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--anchor", required=True, help="bench_peft_gpu.py (shapes, batches and lengths come from it)")
    ap.add_argument("--peft", help="the anchor's JSON from this run (adds PEFT and bare-forward ratios)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=30, help="timed batches per phase (2 more for warm-up)")
    ap.add_argument("--models", nargs="+", default=["mlm", "causal"], choices=["mlm", "causal"])
    ap.add_argument("--tiny", action="store_true", help="2-layer / hidden-64 shapes (smoke test)")
    ap.add_argument("--skip-parity", action="store_true")
    ap.add_argument("--run-anchor", action="store_true", help="run the anchor's benchmark in this process, twice per model (cold, warm), into --peft")
    ap.add_argument("--compile", default="default", choices=["none", "default", "reduce-overhead", "max-autotune"],
                    help="also time inference and training with the backbone's layers compiled in this mode")
    ap.add_argument("--serve", type=int, nargs="*", metavar="N",
                    help="also the in-process serving phase (serve_inprocess.py: mixed batches vs per-prompt streams vs PEFT) for N prompts")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    import transformers

    start = time.perf_counter()
    anchor = load_anchor(args.anchor)
    dtype = getattr(torch, args.dtype)
    res: dict[str, Any] = {
        "device": args.device, "dtype": args.dtype, "tiny": args.tiny,
        "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__}, "python": platform.python_version(),
        "parity": {} if args.skip_parity else parity(args.device), "throughput": {},
    }
    if args.run_anchor:
        if not args.peft:
            ap.error("--run-anchor needs --peft (where the anchor's numbers are written)")
        anchor_res = run_anchor(anchor, args, dtype)
        Path(args.peft).write_text(json.dumps(anchor_res, indent=1) + "\n")
    else:
        anchor_res = json.loads(Path(args.peft).read_text()) if args.peft else {}
    peft, peft_cold = anchor_res.get("models", {}), anchor_res.get("models_cold", {})
    res["peft"], res["peft_cold"] = peft, peft_cold
    for kind in args.models:
        res["throughput"][kind] = throughput(anchor, kind, args, dtype)
        if kind in peft:
            res["throughput"][kind]["ratios"] = ratios(res["throughput"][kind], peft[kind])
        if kind in peft_cold:
            res["throughput"][kind]["ratios_cold"] = ratios(res["throughput"][kind], peft_cold[kind], "cold")
        res["wall_seconds"] = round(time.perf_counter() - start, 1)
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")  # after every model: a timeout keeps what ran
    if args.serve:
        res["serve_in_process"] = serve_phase(args)
        res["wall_seconds"] = round(time.perf_counter() - start, 1)
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res["parity"], indent=1))
    print(table(res))


def serve_phase(args: argparse.Namespace) -> dict[str, Any]:
    """Many prompts on one random BERT (base shape; --tiny: tiny), float32, on the device."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from serve_bench import SYNTHETIC, random_backbone
    from serve_inprocess import in_process

    backbone = random_backbone("tiny" if args.tiny else "base", args.device)
    return in_process(backbone, SYNTHETIC, args.serve, rows=64 if args.tiny else 1024, window=32 if args.tiny else 128)


if __name__ == "__main__":
    main()
