"""In-process phase of the serving benchmark: N prompts on one backbone, three ways to batch them.

Traffic: requests of 1-4 rows (seeded), prompts in turn (spread evenly). Requests are taken in
arrival order into windows of at most ``window`` rows, as the server's batcher takes them within
its wait bound; every method then answers the same windows:

* ``mixed``: :class:`~openpt.serving.bank.PromptBank`, one backbone forward per window;
* ``streams``: one batch stream per prompt: each prompt's rows of the window as its own batch
  (``PromptModel.scores``);
* ``peft``: one ``PeftModel`` holding N prompt-tuning adapters, ``set_adapter`` per prompt and a
  forward of that prompt's rows (PEFT activates one adapter per forward). The adapters wrap the
  backbone's encoder and the LM head runs at the mask positions for the label words only, as
  openpt's own forward does, so the methods differ only in how they batch prompts (PEFT over the
  whole masked LM would also compute vocabulary logits at every position).

Every prompt count answers the same rows (texts and request sizes drawn with one seed); only
which prompt each request names changes.

Each prompt: 20 soft tokens before ``[CLS]`` (``soft_placement: before_special``, PEFT's placement)
and ``{text} It was [MASK].`` with terrible/great; its PEFT adapter holds the same 20 vectors, so
the three methods compute the same probabilities (checked on the first window). Imported by
``serve_bench.py`` and ``gpu_bench.py``.
"""
from __future__ import annotations

import copy
import random
import time
from typing import Any, Sequence

import torch

N_SOFT = 20
LABELS = {"negative": ["terrible"], "positive": ["great"]}


def build_prompts(backbone: Any, count: int, *, max_length: int = 128) -> list[Any]:
    """``count`` soft prompts on ``backbone``, each with its own seeded table."""
    from openpt.model.build import PromptOptions, build_model
    from openpt.template.spec import template_spec_from_mapping
    from openpt.verbalizer.manual import ManualVerbalizer

    spec = template_spec_from_mapping({"name": "peft-like", "text": f"[SOFT*{N_SOFT}] {{text}} It was [MASK].",
                                       "soft_placement": "before_special"})
    models = []
    for seed in range(count):
        model = build_model(backbone, spec, ManualVerbalizer(LABELS), PromptOptions(max_length=max_length), seed=seed)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            weight = model.template.soft.weight
            weight.add_(torch.randn(weight.shape, generator=generator).to(weight.device) * weight.std())
        models.append(model.eval())
    return models


def traffic(count: int, rows: int, texts: Sequence[str], seed: int = 0) -> list[tuple[int, list[str]]]:
    """Requests ``(prompt index, texts)`` of 1-4 rows each, prompts in turn, ``rows`` rows in all."""
    rng = random.Random(seed)
    requests, total = [], 0
    while total < rows:
        size = min(rng.randint(1, 4), rows - total)
        requests.append((len(requests) % count, [texts[rng.randrange(len(texts))] for _ in range(size)]))
        total += size
    return requests


def windows(requests: Sequence[tuple[int, list[str]]], budget: int) -> list[list[tuple[int, list[str]]]]:
    """Whole requests in arrival order, at most ``budget`` rows per window (the batcher's rule)."""
    out: list[list[tuple[int, list[str]]]] = [[]]
    rows = 0
    for request in requests:
        if out[-1] and rows + len(request[1]) > budget:
            out.append([])
            rows = 0
        out[-1].append(request)
        rows += len(request[1])
    return out


def by_prompt(window: Sequence[tuple[int, list[str]]]) -> dict[int, list[str]]:
    grouped: dict[int, list[str]] = {}
    for prompt, texts in window:
        grouped.setdefault(prompt, []).extend(texts)
    return grouped


def peft_model(backbone: Any, prompts: Sequence[Any]) -> Any:
    """One PeftModel (a copy of the backbone's encoder) with one prompt-tuning adapter per prompt, same vectors."""
    from peft import PromptTuningConfig, TaskType, get_peft_model

    config = PromptTuningConfig(task_type=TaskType.FEATURE_EXTRACTION, num_virtual_tokens=N_SOFT)
    model = get_peft_model(copy.deepcopy(backbone.model.base_model), config, adapter_name="p0")
    for i in range(1, len(prompts)):
        model.add_adapter(f"p{i}", config)
    with torch.no_grad():
        for i, prompt in enumerate(prompts):
            model.prompt_encoder[f"p{i}"].embedding.weight.copy_(prompt.template.soft.weight)
    return model.eval()


def peft_probs(model: Any, prompt: Any, adapter: str, texts: Sequence[str]) -> torch.Tensor:
    """Class probabilities from the PEFT model: the prompt's own tokens without its soft positions."""
    from openpt.types import InputExample

    encoded = prompt.template.encode([InputExample(t) for t in texts])
    width = max(len(e.input_ids) for e in encoded) - N_SOFT
    device = prompt.device
    ids = torch.full((len(texts), width), prompt.template.encoder.pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, item in enumerate(encoded):
        ids[row, : len(item.input_ids) - N_SOFT] = torch.tensor(item.input_ids[N_SOFT:])
        mask[row, : len(item.input_ids) - N_SOFT] = 1
    positions = torch.tensor([item.mask_positions[0] for item in encoded], device=device)
    model.set_adapter(adapter)
    states = model(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
    at_mask = states[torch.arange(len(texts), device=device), positions].unsqueeze(1)
    logits = prompt.backbone.head_logits(at_mask, prompt.token_ids)[:, 0]
    return torch.softmax(logits.float(), -1)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def in_process(backbone: Any, texts: Sequence[str], counts: Sequence[int], *, rows: int = 512, window: int = 32,
               with_peft: bool = True, log: Any = print) -> dict[str, Any]:
    """Rows/s of mixed batching, per-prompt streams and PEFT for each prompt count in ``counts``."""
    from openpt.serving.bank import PromptBank
    from openpt.types import InputExample

    device = backbone.input_embeddings().weight.device
    prompts = build_prompts(backbone, max(counts))
    results: dict[str, Any] = {"rows": rows, "window": window, "n_soft": N_SOFT, "counts": {}}
    peft = peft_model(backbone, prompts) if with_peft else None
    for count in counts:
        bank = PromptBank(backbone, batch_size=window)
        for i in range(count):
            bank.add(f"p{i}", prompts[i])
        batches = windows(traffic(count, rows, texts), window)
        methods: dict[str, Any] = {}

        def mixed(batch: Sequence[tuple[int, list[str]]]) -> list[torch.Tensor]:
            prepared = [row for prompt, items in batch for row in bank.prepare(f"p{prompt}", [InputExample(t) for t in items])]
            return bank.score_prepared(prepared, window)

        def streams(batch: Sequence[tuple[int, list[str]]]) -> dict[int, torch.Tensor]:
            return {p: torch.softmax(prompts[p].scores([InputExample(t) for t in items], window), -1)
                    for p, items in by_prompt(batch).items()}

        def through_peft(batch: Sequence[tuple[int, list[str]]]) -> dict[int, torch.Tensor]:
            with torch.inference_mode():
                return {p: peft_probs(peft, prompts[p], f"p{p}", items).cpu() for p, items in by_prompt(batch).items()}

        runners = {"mixed": mixed, "streams": streams, **({"peft": through_peft} if peft is not None else {})}
        first = {name: run(batches[0]) for name, run in runners.items()}  # warm-up, and the same numbers?
        reference = by_prompt_probs(batches[0], first["mixed"])
        agreement = {name: max(float((reference[p] - out[p].cpu()).abs().max()) for p in reference)
                     for name, out in first.items() if name != "mixed"}
        for name, run in runners.items():
            sync(device)
            start, cpu = time.perf_counter(), time.process_time()
            for batch in batches:
                run(batch)
            sync(device)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            methods[name] = {"seconds": round(seconds, 3), "rows_per_s": round(rows / seconds, 1), "cpu_seconds": round(cpu, 3),
                             "rows_per_cpu_s": round(rows / cpu, 1), "forwards": forwards(name, batches)}
        bank_bytes = sum(bank.prompt_bytes(name) for name in bank.names())
        results["counts"][count] = {"methods": methods, "max_abs_diff_vs_mixed": agreement, "windows": len(batches),
                                    "bank_prompt_bytes": bank_bytes}
        log(f"N={count}: " + ", ".join(f"{name} {m['rows_per_s']} rows/s" for name, m in methods.items())
            + f"; max |p - p_mixed| {agreement}")
    for count, result in results["counts"].items():
        result["ratios"] = ratios(result["methods"], results["counts"][min(results["counts"])]["methods"], "rows_per_s")
        result["cpu_ratios"] = ratios(result["methods"], results["counts"][min(results["counts"])]["methods"], "rows_per_cpu_s")
    return results


def ratios(methods: dict[str, Any], first: dict[str, Any], rate: str) -> dict[str, float]:
    """Mixed batching against the other methods and against mixed at the fewest prompts, by ``rate``."""
    out = {"mixed_vs_streams": round(methods["mixed"][rate] / methods["streams"][rate], 2),
           "mixed_vs_n1": round(methods["mixed"][rate] / first["mixed"][rate], 3)}
    if "peft" in methods:
        out["mixed_vs_peft"] = round(methods["mixed"][rate] / methods["peft"][rate], 2)
    return out


def by_prompt_probs(batch: Sequence[tuple[int, list[str]]], probs: Sequence[torch.Tensor]) -> dict[int, torch.Tensor]:
    """The mixed answers of one window regrouped per prompt (the order the other methods answer in)."""
    grouped: dict[int, list[torch.Tensor]] = {}
    offset = 0
    for prompt, items in batch:
        grouped.setdefault(prompt, []).extend(probs[offset : offset + len(items)])
        offset += len(items)
    return {p: torch.stack(rows) for p, rows in grouped.items()}


def forwards(method: str, batches: Sequence[Sequence[tuple[int, list[str]]]]) -> int:
    """Backbone forwards a method runs for ``batches``."""
    return len(batches) if method == "mixed" else sum(len(by_prompt(batch)) for batch in batches)
