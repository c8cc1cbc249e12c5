#!/usr/bin/env bash
# One device call: does a Kiln-built AOTInductor CUDA package load here? Then the 1B shape
# compiled for this GPU (bf16, fp8) checked against the eager reference, and its warm start.
set -u
export KILN_CACHE_DIR=/tmp/kcache PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out}
timeout 120 python3 benchmarks/aoti_cuda_probe5.py | tee $OUT/probe5.txt
grep -q AOTI_CUDA_OK $OUT/probe5.txt || { echo "AOTI failed: jit fallback"; export KILN_GPU_LOWERING=jit; }
python3 -c "from pathlib import Path; from benchmarks.gpu_shapes import make_checkpoint as m; m('llama3.2-1b', Path('/tmp/ckpt-1b'))" > /dev/null 2>&1 || exit 1
for q in none fp8; do
  qa=""; [ "$q" = none ] || qa="--quantization $q"
  timeout 170 python3 benchmarks/gpu_compile_check.py /tmp/ckpt-1b --phase compile $qa --out $OUT/1b_${q}_compile.json > $OUT/1b_${q}_compile.log 2>&1; tail -1 $OUT/1b_${q}_compile.log | cut -c1-400
  timeout 100 python3 benchmarks/gpu_compile_check.py /tmp/ckpt-1b --phase check $qa --out $OUT/1b_${q}_check.json > $OUT/1b_${q}_check.log 2>&1; tail -1 $OUT/1b_${q}_check.log | cut -c1-900
done
timeout 100 python3 -m kiln bench startup /tmp/ckpt-1b --runs 3 --timeout 30 2>&1 | tail -15
