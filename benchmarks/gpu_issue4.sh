#!/usr/bin/env bash
# Issue 4's GPU evidence in one device call (about 9 minutes on an H100/H200):
#   the Llama-3-8B shape compiled cold for this GPU (AOTInductor), checked against the eager
#   reference (bf16 and fp32), its warm start phase by phase, then the gpu tests of the
#   compiled artifact (demo in fp32, bf16 and fp8 under CUDA graphs).
# Usage (device): carry .whl, install it to /tmp/site, PYTHONPATH=/tmp/site:$PWD, then
#   bash benchmarks/gpu_issue4.sh            results land in $OUT
set -u
export KILN_CACHE_DIR=/tmp/kcache PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out}
python3 -c "from pathlib import Path; from benchmarks.gpu_shapes import make_checkpoint as m; m('llama3-8b', Path('/tmp/ckpt-8b'))" > /dev/null 2>&1 || exit 1
python3 benchmarks/gpu_compile_check.py /tmp/ckpt-8b --phase compile --out $OUT/8b_compile.json > $OUT/8b_compile.log 2>&1; tail -1 $OUT/8b_compile.log | cut -c1-400
python3 benchmarks/gpu_compile_check.py /tmp/ckpt-8b --phase check --out $OUT/8b_check.json > $OUT/8b_check.log 2>&1; tail -1 $OUT/8b_check.log | cut -c1-1200
python3 -m kiln bench startup /tmp/ckpt-8b --runs 3 --timeout 120 --json-out $OUT/8b_startup.json 2>&1 | tail -14
python3 -m pytest -q -m gpu tests/lowering/test_gpu_compiled.py -p no:cacheprovider 2>&1 | tail -6
