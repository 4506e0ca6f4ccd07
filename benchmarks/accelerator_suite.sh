#!/usr/bin/env bash
# The executor, seeds and data-pipeline benchmarks at sizes that fit a few
# minutes on one accelerator (a host-executor step there costs about 1 ms
# whatever the model, so the step counts are smaller than the CPU defaults).
# Usage: benchmarks/accelerator_suite.sh OUTDIR   (from the repository root)
# Each script's output goes to OUTDIR/<script>.txt; its last line is its JSON.
set -u
out=${1:?usage: benchmarks/accelerator_suite.sh OUTDIR}
mkdir -p "$out"
cd "$(dirname "$0")"
run() {  # run NAME SECONDS ARGS...  (output: OUTDIR/<name><TAG>.txt)
  local name=$1 limit=$2; shift 2
  local file="$out/${name%.py}${TAG:-}.txt"
  echo "== $name $* (limit ${limit}s)"
  timeout "$limit" python "$name" "$@" > "$file" 2>&1
  echo "   exit $?; $(tail -c 300 "$file" | tail -n 1 | cut -c1-200)"
}
python -c "import jax; print(jax.__version__, jax.devices())"
run fused.py 230 --repeats 3 --steps-mlp 3000 --steps-tiny 5000
run seeds.py 130 --repeats 3 --steps 10000
run data_pipeline.py 130 --repeats 3 --steps 3000
TAG=_tiny_digits run data_pipeline.py 130 --workload tiny_digits --repeats 3 --steps 3000
