#!/usr/bin/env bash
# Short device call: the 1B shape through AOTInductor (bf16 then fp8), checked against eager.
set -u
export KILN_CACHE_DIR=/tmp/kcache PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out}
python3 -c "from pathlib import Path; from benchmarks.gpu_shapes import make_checkpoint as m; m('llama3.2-1b', Path('/tmp/ckpt-1b'))" > /dev/null 2>&1 || exit 1
for q in none fp8; do
  qa=""; [ "$q" = none ] || qa="--quantization $q"
  python3 benchmarks/gpu_compile_check.py /tmp/ckpt-1b --phase compile $qa --out $OUT/1b_${q}_compile.json > $OUT/1b_${q}_compile.log 2>&1; tail -1 $OUT/1b_${q}_compile.log | cut -c1-300
  python3 benchmarks/gpu_compile_check.py /tmp/ckpt-1b --phase check $qa --out $OUT/1b_${q}_check.json > $OUT/1b_${q}_check.log 2>&1; tail -1 $OUT/1b_${q}_check.log | cut -c1-1200
done
