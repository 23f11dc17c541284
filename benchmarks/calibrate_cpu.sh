#!/usr/bin/env bash
# Re-derive the float32 mlp-vae profiles `ci` and `full` from the committed CPU runs, then run the power
# study. The runs themselves were trained one seed at a time, four backends, one thread each, with
#   python -m harness run --backends torch-reference,torch,torch-compile,jax --device cpu \
#       --epochs 50|1 --seed S --threads 1 --out DIR --no-report --no-probe --force
# (reports/calibration-cpu/README.md says which machine trained which seed).
#   full: seeds 2-11 (reports/calibration-cpu/full), 50 epochs
#   ci:   seeds 2-11 (epoch 1 of those) and 12-21 (reports/calibration-cpu/1-epoch)
#   held out (never calibrated on): seed 1 (reports/cpu-intel-50-epochs/run) and 101-105
#   (reports/calibration-cpu/held-out, 50 epochs; held-out-1-epoch, 1 epoch)
set -euo pipefail
shopt -s nullglob
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
R=reports/calibration-cpu
seeds_of() { for d in "$@"; do basename "$d" | sed 's/seed-//'; done | sort -n | paste -sd, -; }
full_held=$(seeds_of $R/held-out/seed-*)
ci_held=$(seeds_of $R/held-out/seed-* $R/held-out-1-epoch/seed-*)
$PY -m harness calibrate --profile full --from $R/full/seed-* --held-out "1,$full_held" --write
$PY -m harness calibrate --profile ci --from $R/full/seed-* $R/1-epoch/seed-* --held-out "1,$ci_held" --write
held=($R/held-out/seed-* $R/held-out-1-epoch/seed-*)
$PY benchmarks/check_power.py --out reports/check-power reports/cpu-intel-50-epochs/run "${held[@]}"
