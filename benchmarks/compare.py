"""openpt against OpenPrompt 1.0.1 and PEFT prompt tuning on the anchor workload, in one run.

Runs, one after another (never in parallel: they share the cores):

1. ``benchmarks/bench.py`` (openpt, this environment);
2. ``../shared/anchors/bench_openprompt.py --extra`` with the Python of an OpenPrompt virtual
   environment (created first, idempotently, with ``../shared/anchors/setup_openprompt.sh VENV``;
   keep VENV outside the repository, default ``<project>/../.venv-openprompt``);
3. ``../shared/anchors/bench_peft.py --extra`` with this Python (needs ``pip install peft==0.21.2``;
   a benchmark-only dependency, skipped with a note when peft is missing).

Then prints a table of the raw numbers and the ratios openpt / OpenPrompt against the targets
(wrap+tokenize >= 20x, inference >= 2x, training steps/s >= 2x, peak RSS <= 0.5x, same
accuracy and first-batch label log-prob sum, framework overhead over a bare encoder <= 10%) and
writes everything to ``benchmarks/results/compare-<UTC time>.json``.

    python benchmarks/compare.py                                        # full size (quiet machine!)
    python benchmarks/compare.py --tok-n 500 --inf-n 64 --train-steps 5 --extra-n 64 --extra-steps 3   # smoke test

Workload (all three): minilm-mlm, SST-2 train rows (cycled), ``{text} It was [MASK].`` with
terrible/great, 20 soft tokens, batch 32 inference / 16 training, max length 128, 2 threads.
Differences that remain: OpenPrompt and PEFT pad statically to 128 and compute full-vocabulary
logits (that is what is measured against); OpenPrompt's SoftTemplate and PEFT put the 20 soft
tokens before ``[CLS]``, openpt's ``[SOFT*20] {text} ...`` after it (same count, same sequence
budget for the text).
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

# (label, key path in openpt JSON, key path in the anchor JSON, anchor, how to compare, target)
RATIOS: list[tuple[str, tuple[str, ...], tuple[str, ...], str, str, float | None]] = [
    ("wrap+tokenize, examples/s", ("tokenize", "examples_per_s"), ("tokenize", "examples_per_s"), "openprompt", "higher", 20.0),
    ("inference, hard template, examples/s", ("inference_manual", "examples_per_s"), ("inference_manual", "examples_per_s"), "openprompt", "higher", 2.0),
    ("inference, 20 soft tokens, examples/s", ("inference_soft", "examples_per_s"), ("inference_soft", "examples_per_s"), "openprompt", "higher", None),
    ("prompt-only training, steps/s", ("train_soft", "steps_per_s"), ("train_soft", "steps_per_s"), "openprompt", "higher", 2.0),
    ("peak RSS, MB", ("peak_rss_mb",), ("peak_rss_mb",), "openprompt", "lower", 0.5),
    ("wrap+tokenize vs PEFT side (fast tokenizer), examples/s", ("tokenize", "examples_per_s"), ("tokenize", "examples_per_s"), "peft", "higher", None),
    ("inference, 20 soft tokens vs PEFT, examples/s", ("inference_soft", "examples_per_s"), ("inference_peft", "examples_per_s"), "peft", "higher", None),
    ("prompt-only training vs PEFT, steps/s", ("train_soft", "steps_per_s"), ("train_peft", "steps_per_s"), "peft", "higher", None),
    ("peak RSS vs PEFT, MB", ("peak_rss_mb",), ("peak_rss_mb",), "peft", "lower", None),
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(SHARED / "models" / "minilm-mlm"))
    parser.add_argument("--data", default=str(SHARED / "data" / "sst2"), help="shared-format dataset directory (its train.jsonl is used)")
    parser.add_argument("--anchors", default=str(SHARED / "anchors"), help="directory with setup_openprompt.sh, bench_*.py")
    parser.add_argument("--venv", default=os.environ.get("OPENPT_OPENPROMPT_VENV", str(ROOT.parent / ".venv-openprompt")),
                        help="OpenPrompt virtual environment (created if missing; keep it outside the repository)")
    parser.add_argument("--no-setup", action="store_true", help="do not run setup_openprompt.sh (the venv must exist)")
    parser.add_argument("--only", nargs="+", choices=("openpt", "openprompt", "peft"), default=["openpt", "openprompt", "peft"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tok-n", type=int, default=5000)
    parser.add_argument("--inf-n", type=int, default=2000)
    parser.add_argument("--train-steps", type=int, default=50)
    parser.add_argument("--extra-n", type=int, default=512, help="anchors' --extra inference variants (OpenPrompt SoftTemplate, bare BERT)")
    parser.add_argument("--extra-steps", type=int, default=20, help="OpenPrompt MixedTemplate training steps")
    parser.add_argument("--out", help="JSON output (default benchmarks/results/compare-<UTC time>.json)")
    return parser.parse_args()


def run_json(name: str, command: list[str], log: Path, *, stdout_json: bool = True) -> dict[str, Any]:
    """Run one benchmark; stderr goes to ``log``; with ``stdout_json`` its stdout is one JSON object."""
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(command)}", file=sys.stderr, flush=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    start = time.perf_counter()
    with open(log, "w") as err:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=err, env=env, cwd=ROOT, text=True)
    seconds = round(time.perf_counter() - start, 1)
    if done.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise SystemExit(f"{name} failed (exit {done.returncode}); see {log}:\n" + "\n".join(tail))
    if not stdout_json:
        return {"_wall_seconds": seconds, "stdout": done.stdout}
    text = done.stdout.strip()
    result = json.loads(text[text.index("{"):])
    result.setdefault("_wall_seconds", seconds)
    return result


def run_openpt(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    out = scratch / "openpt.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--model", args.model, "--data", args.data,
               "--threads", str(args.threads), "--tok-n", str(args.tok_n), "--inf-n", str(args.inf_n),
               "--train-steps", str(args.train_steps), "--out", str(out)]
    run = run_json("openpt", command, scratch / "openpt.log", stdout_json=False)
    return {**json.loads(out.read_text()), "_wall_seconds": run["_wall_seconds"]}


def anchor_command(python: str, script: Path, args: argparse.Namespace, openprompt: bool) -> list[str]:
    command = [python, str(script), "--model", args.model, "--data", str(Path(args.data) / "train.jsonl"), "--extra",
               "--threads", str(args.threads), "--tok-n", str(args.tok_n), "--inf-n", str(args.inf_n),
               "--train-steps", str(args.train_steps), "--extra-n", str(args.extra_n)]
    return command + (["--extra-steps", str(args.extra_steps)] if openprompt else [])


def setup_openprompt(args: argparse.Namespace, scratch: Path) -> str:
    venv = Path(args.venv).resolve()
    if ROOT in venv.parents:
        raise SystemExit(f"--venv {venv} is inside the repository; put it outside (e.g. {ROOT.parent / '.venv-openprompt'})")
    if not args.no_setup:
        print(f"[{time.strftime('%H:%M:%S')}] setting up {venv} (idempotent)", file=sys.stderr, flush=True)
        with open(scratch / "setup_openprompt.log", "w") as log:
            done = subprocess.run(["bash", str(Path(args.anchors) / "setup_openprompt.sh"), str(venv)], stdout=log, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            raise SystemExit(f"setup_openprompt.sh failed; see {scratch / 'setup_openprompt.log'}")
    python = venv / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{python} not found: run without --no-setup or pass --venv")
    return str(python)


def dig(data: dict[str, Any] | None, path: tuple[str, ...]) -> float | None:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data if isinstance(data, (int, float)) else None


def ratios(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for label, ours, theirs, anchor, better, target in RATIOS:
        a, b = dig(results.get("openpt"), ours), dig(results.get(anchor), theirs)
        ratio = round(a / b, 3) if a is not None and b else None
        met = None if ratio is None or target is None else (ratio >= target if better == "higher" else ratio <= target)
        rows.append({"measurement": label, "openpt": a, "anchor": anchor, "anchor_value": b, "ratio": ratio,
                     "better": better, "target": target, "met": met})
    return rows


def checks(results: dict[str, Any]) -> dict[str, Any]:
    """Same computation: accuracy and first-batch label log-prob sum of the hard template; overhead."""
    ours, op, peft = results.get("openpt") or {}, results.get("openprompt") or {}, results.get("peft") or {}
    out: dict[str, Any] = {}
    ours_sum = dig(ours, ("inference_manual", "first_batch_label_logprob_sum"))
    refs = {"openprompt": dig(op, ("inference_manual", "first_batch_label_logit_sum")),
            "peft_bare_bert": dig(peft, ("inference_plain", "first_batch_label_logprob_sum"))}
    out["first_batch_label_logprob_sum"] = {"openpt": ours_sum, **refs,
                                            "equal_within_0.01": all(v is not None and ours_sum is not None and abs(v - ours_sum) <= 0.01
                                                                     for v in refs.values() if v is not None) if ours_sum is not None else None}
    acc_ours, acc_op = dig(ours, ("inference_manual", "acc")), dig(op, ("inference_manual", "acc"))
    out["hard_template_accuracy"] = {"openpt": acc_ours, "openprompt": acc_op,
                                     "equal": None if acc_ours is None or acc_op is None else abs(acc_ours - acc_op) < 1e-9}
    overhead = dig(ours, ("bare_encoder_same_batches", "overhead_of_openpt"))
    out["overhead_over_bare_encoder"] = {"value": overhead, "target": 0.10, "met": None if overhead is None else overhead <= 0.10}
    return out


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{max(digits, 3) if abs(value) < 1 else digits}f}"


def print_table(rows: list[dict[str, Any]], check: dict[str, Any]) -> None:
    print("| measurement | openpt | anchor | anchor value | ratio openpt/anchor | target | met |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        target = "" if r["target"] is None else ("≥ " if r["better"] == "higher" else "≤ ") + f"{r['target']:g}×"
        met = "" if r["met"] is None else ("yes" if r["met"] else "**no**")
        print(f"| {r['measurement']} | {fmt(r['openpt'])} | {r['anchor']} | {fmt(r['anchor_value'])} | {fmt(r['ratio'], 3)}× | {target} | {met} |")
    s = check["first_batch_label_logprob_sum"]
    print(f"\nfirst-batch label log-prob sum: openpt {s['openpt']}, OpenPrompt {s['openprompt']}, bare BERT (PEFT side) {s['peft_bare_bert']}"
          f" -> equal within 0.01: {s['equal_within_0.01']}")
    a = check["hard_template_accuracy"]
    print(f"hard-template accuracy (untrained prompt): openpt {a['openpt']}, OpenPrompt {a['openprompt']} -> equal: {a['equal']}")
    o = check["overhead_over_bare_encoder"]
    print(f"framework overhead over a bare encoder on the same batches: {fmt(None if o['value'] is None else 100 * o['value'], 1)}% (target ≤ 10%)")


def portable(value: Any, paths: dict[Any, str]) -> Any:
    """``value`` with this machine's paths written relative to the project (the recorded results
    name no directory of the machine that ran them; ``paths``: longest first wins)."""
    if isinstance(value, dict):
        return {key: portable(item, paths) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(item, paths) for item in value]
    if isinstance(value, str):
        for path, shown in sorted(paths.items(), key=lambda pair: -len(str(pair[0]))):
            value = value.replace(str(path), shown)
    return value


def main() -> int:
    args = parse_args()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"compare-{stamp}.json"
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"openpt-compare-{stamp}"
    scratch.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"started": stamp, "loadavg_start": os.getloadavg(), "command": [sys.executable, *sys.argv],
                               "sizes": {k: getattr(args, k) for k in ("threads", "tok_n", "inf_n", "train_steps", "extra_n", "extra_steps")},
                               "model": args.model, "data": args.data, "logs": str(scratch)}
    anchors = Path(args.anchors)
    if "openprompt" in args.only:
        python = setup_openprompt(args, scratch)  # before any timing: installation is not measured
    if "openpt" in args.only:
        results["openpt"] = run_openpt(args, scratch)
    if "openprompt" in args.only:
        results["openprompt"] = run_json("openprompt", anchor_command(python, anchors / "bench_openprompt.py", args, True),
                                         scratch / "openprompt.log")
    if "peft" in args.only:
        if importlib.util.find_spec("peft") is None:
            results["peft"] = {"skipped": "peft is not installed here (python -m pip install peft==0.21.2; benchmark only)"}
        else:
            results["peft"] = run_json("peft", anchor_command(sys.executable, anchors / "bench_peft.py", args, False), scratch / "peft.log")
    results["loadavg_end"] = os.getloadavg()
    results["ratios"] = ratios(results)
    results["checks"] = checks(results)
    results = portable(results, {scratch: f"$TMPDIR/{scratch.name}", sys.executable: "python", ROOT: ".", ROOT.parent: ".."})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results["ratios"], results["checks"])
    print(f"\nload average start {results['loadavg_start']} end {results['loadavg_end']} (2 cores: ~2 means only this ran)")
    print(f"wrote {out}; logs in {scratch}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
