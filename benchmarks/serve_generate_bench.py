"""Generation in the server's batcher, in process: what gathering generate requests buys.

One random-weight generation prompt (``[SOFT*8] {text} Description: {target}``) on the ``small``
GPT-2 and T5 shapes of ``generation_bench.py``; ``--requests`` requests of 1-4 E2E-style inputs
(``--data``, or ``synthetic``), greedy, at most ``--max-new-tokens`` tokens. Three ways to answer them:

* ``one request at a time``: ``PromptModel.generate`` per request, in arrival order, on one worker
  thread as the server's (a server that never batches across requests);
* ``batcher, one setting``: every request submitted to the :class:`~openpt.serving.batcher.Batcher`
  at once (row budget ``--max-batch-rows``), so requests share ``generate`` calls;
* ``batcher, 4 settings``: the same, the requests cycling over four decoding settings that do the
  same work (greedy with ``top_k`` 0..3, which greedy decoding ignores), so the batcher makes four
  groups per gathered batch (generation batches are per prompt and per decoding settings).

Every way runs its model work on a thread other than the main one, as the server does (on a busy
machine, torch's intra-op threads behave differently on the main thread). The three must give
token-identical texts (checked). Each is timed ``--rounds`` times, the three
alternating; the median wall and CPU times are reported with inputs/s and new tokens/s.

    python benchmarks/serve_generate_bench.py --data synthetic --threads 2 --out benchmarks/results/serve_generate.json
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from generation_bench import backbone_dir, load_inputs, parse_with_inputs, synthetic_inputs  # noqa: E402


def workload(texts: list[str], count: int) -> list[list[str]]:
    """``count`` requests of 1-4 inputs (sizes cycling 1, 3, 2, 4), consecutive texts."""
    sizes = [(1, 3, 2, 4)[n % 4] for n in range(count)]
    starts = [sum(sizes[:n]) for n in range(count)]
    return [[texts[(start + i) % len(texts)] for i in range(size)] for start, size in zip(starts, sizes)]


def sides(kind: str, directory: Path, args: argparse.Namespace) -> dict[str, Callable[[list[list[str]]], list[list[list[int]]]]]:
    from openpt.backbone import load_backbone
    from openpt.model.build import PromptOptions, build_model, template_spec
    from openpt.serving.bank import PromptBank
    from openpt.serving.batcher import Batcher, BatchSettings
    from openpt.serving.generating import prepare_generation
    from openpt.tasks import get_task
    from openpt.types import InputExample

    backbone = load_backbone(directory)
    model = build_model(backbone, template_spec("[SOFT*8] {text} Description: {target}"), None, PromptOptions(max_length=128), seed=0,
                        task=get_task("generation"))
    bank = PromptBank(backbone)
    bank.add("e2e", model)
    greedy = {"max_new_tokens": args.max_new_tokens}

    def alone(requests: list[list[str]]) -> list[list[list[int]]]:
        def work() -> list[list[list[int]]]:
            return [[r.token_ids[0] for r in model.generate([InputExample(t) for t in texts], batch_size=args.max_batch_rows, **greedy)]
                    for texts in requests]

        with concurrent.futures.ThreadPoolExecutor(1) as worker:
            return worker.submit(work).result()

    def batched(settings: int) -> Callable[[list[list[str]]], list[list[list[int]]]]:
        def run(requests: list[list[str]]) -> list[list[list[int]]]:
            batcher = Batcher(bank, BatchSettings(max_batch_rows=args.max_batch_rows, max_wait_s=0.005, max_queue_rows=100_000)).start()
            futures = [batcher.submit_generation(prepare_generation(bank, "e2e", [InputExample(t) for t in texts],
                                                                    {**greedy, "top_k": n % settings})) for n, texts in enumerate(requests)]
            out = [[r.token_ids[0] for r in future.result(timeout=3600)] for future in futures]
            batcher.drain()
            return out
        return run

    return {"one request at a time": alone, "batcher, one setting": batched(1), "batcher, 4 settings": batched(4)}


def measure(kind: str, directory: Path, args: argparse.Namespace, texts: list[str]) -> dict[str, Any]:
    requests = workload(texts, args.requests)
    inputs = sum(len(r) for r in requests)
    runs = sides(kind, directory, args)
    for run in runs.values():  # warm-up
        run(requests[:4])
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    outputs: dict[str, Any] = {}
    for _ in range(args.rounds):
        for name, run in runs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            outputs[name] = run(requests)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    first = next(iter(outputs.values()))
    assert all(out == first for out in outputs.values()), "the three ways gave different texts"
    tokens = sum(len(ids) for request in first for ids in request)
    result: dict[str, Any] = {"requests": len(requests), "inputs": inputs, "new_tokens": tokens, "identical": True}
    for name in runs:
        seconds, cpu_seconds = statistics.median(wall[name]), statistics.median(cpu[name])
        result[name] = {"seconds": round(seconds, 3), "cpu_seconds": round(cpu_seconds, 3), "inputs_per_s": round(inputs / seconds, 1),
                        "tokens_per_s": round(tokens / seconds, 1), "all_seconds": [round(s, 3) for s in wall[name]]}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--max-batch-rows", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parse_with_inputs(parser)
    texts = synthetic_inputs(200) if args.data == "synthetic" else load_inputs(HERE.parent / args.data, 200)
    report: dict[str, Any] = {"command": " ".join(sys.argv), "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                              "torch_threads": torch.get_num_threads(), "load_average_start": [round(x, 2) for x in os.getloadavg()],
                              "data": args.data, "torch": torch.__version__, "models": {}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("gpt2", "t5"):
            report["models"][f"{kind}-small"] = measure(kind, backbone_dir(kind, "small", False, Path(tmp) / kind), args, texts)
    report["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print("| model | way | seconds (median) | inputs/s | new tokens/s |")
    print("|---|---|---|---|---|")
    for model, row in report["models"].items():
        for name in ("one request at a time", "batcher, one setting", "batcher, 4 settings"):
            print(f"| {model} | {name} | {row[name]['seconds']} | {row[name]['inputs_per_s']} | {row[name]['tokens_per_s']} |")
    print(f"{report['wall_seconds']} s wall, load {report['load_average_start']} -> {report['load_average_end']}")


if __name__ == "__main__":
    main()
