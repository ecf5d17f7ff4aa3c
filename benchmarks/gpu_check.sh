#!/usr/bin/env bash
# openpt on one GPU, in one command (< 9 min on one H100/H200): the unit tests on the GPU,
# CPU-vs-GPU parity on tiny BERT/T5/GPT-2, and throughput/memory against PEFT prompt tuning and
# the bare Hugging Face forward on large-model shapes, measured in the same process, each phase
# over the same batches twice (cold, then warm: the reported numbers); openpt's inference and
# training also with prompt.packing on, and with the layers compiled (prompt.compile), padded and
# packed; and the serving phase: N = 1, 16, 64 prompts on one random base-size BERT, mixed batches
# against one stream per prompt and PEFT with N adapters (serve_inprocess.py). gpu.json is
# written after each model, so a timeout keeps what ran. The benchmarks run first; the unit
# tests get the rest of BUDGET_S (default 470 s).
#
#   benchmarks/gpu_check.sh OUTDIR [path/to/bench_peft_gpu.py]
#
# Needs torch (CUDA), transformers, peft, pytest; no files besides the checkout (models are built
# from configs with random weights). Writes into OUTDIR: gpu.txt, unit_cuda.log, peft_gpu.json,
# gpu.json (openpt's numbers with the ratios), gpu_bench.log, sweep.json and sweep.log (the sweep phase),
# generation_gpu.json (generation tokens/s vs PEFT).
set -uo pipefail
OUT=${1:?usage: benchmarks/gpu_check.sh OUTDIR [bench_peft_gpu.py]}
ANCHOR=${2:-../shared/anchors/bench_peft_gpu.py}
PY=${PYTHON:-python3}
BUDGET=${BUDGET_S:-470}  # seconds for the whole check: the unit tests get what the benchmarks leave
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
start=$(date +%s)
step() { echo "== $1 ($(( $(date +%s) - start )) s)"; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c 'import torch, transformers, peft; print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)' | tee -a "$OUT/gpu.txt"
$PY -c 'import datasets' 2>/dev/null && echo "datasets: installed" | tee -a "$OUT/gpu.txt" \
  || echo "datasets: not installed (openpt imports it only for datasets: sources)" | tee -a "$OUT/gpu.txt"

step "1. openpt: CPU-vs-GPU parity; throughput of openpt (padded, packed, compiled) and of the anchor (PEFT, bare forward), cold and warm passes"
timeout 300 $PY benchmarks/gpu_bench.py --anchor "$ANCHOR" --run-anchor --peft "$OUT/peft_gpu.json" --serve 1 16 64 --out "$OUT/gpu.json" 2>&1 \
  | grep -v -E "^(Loading weights|Writing model)" | tee "$OUT/gpu_bench.log"
step "1b. sweep: 4 cells through --launcher local, one worker process per GPU (a tiny random BERT)"
timeout 80 $PY benchmarks/sweep_bench.py --cells 4 --engines device --tiny --out "$OUT/sweep.json" 2>&1 | tee "$OUT/sweep.log"
step "1c. generation throughput: openpt vs PEFT prompt tuning, Llama-3.2-1B shape (random weights), bf16, greedy"
timeout 90 $PY benchmarks/generation_bench.py --shape llama1b --device cuda --dtype bf16 --batch-size 16 --batches 4 \
  --data synthetic --max-new-tokens 64 --out "$OUT/generation_gpu.json" 2>&1 | grep -v -E "^(Loading weights|Writing model)" | tee "$OUT/generation_gpu.log"
step "2. unit tests with OPENPT_TEST_DEVICE=cuda (the time left of BUDGET_S)"
workers=$($PY -c 'import xdist' 2>/dev/null && echo "-n 8" || echo "")
OPENPT_TEST_DEVICE=cuda timeout $(( BUDGET - ($(date +%s) - start) > 60 ? BUDGET - ($(date +%s) - start) : 60 )) $PY -m pytest -q -p no:cacheprovider $workers tests/unit > "$OUT/unit_cuda.log" 2>&1
echo "unit tests exit status: $?"
grep -E "^(FAILED|ERROR) " "$OUT/unit_cuda.log" | head -40
tail -n 1 "$OUT/unit_cuda.log"

step "done"
