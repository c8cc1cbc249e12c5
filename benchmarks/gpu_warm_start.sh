#!/usr/bin/env bash
# The warm start of a GPU artifact from a fresh process, phase by phase: build SHAPE's
# checkpoint and artifact (cold compile timed), then `kiln bench startup`. The first start
# writes the bytecode cache where the image keeps none (see configure_bytecode_cache); it is
# timed on its own, then the median of RUNS warm starts, as shipped and with one start-up
# measure turned off through its environment switch (the baseline of the same machine):
# KILN_STARTUP_GC_PAUSE (kiln/startup.py, the default) or KILN_CUDA_PREWARM (runtime/cuda_driver.py).
# Usage (device): bash benchmarks/gpu_warm_start.sh [SHAPE] [RUNS] [SWITCH]     results land in $OUT
set -u
shape=${1:-llama3-8b}; runs=${2:-3}; switch=${3:-KILN_STARTUP_GC_PAUSE}
export KILN_CACHE_DIR=/tmp/kcache PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out}
ck=/tmp/ckpt-$shape
[ -d $ck ] || python3 -c "from pathlib import Path; from benchmarks.gpu_shapes import make_checkpoint as m; m('$shape', Path('$ck'))" > /dev/null 2>&1 || exit 1
timeout 400 python3 benchmarks/gpu_compile_check.py $ck --phase compile --out $OUT/$shape-compile.json > $OUT/$shape-compile.log 2>&1; echo "compile rc=$?"; tail -1 $OUT/$shape-compile.log | cut -c1-400
timeout 90 python3 -m kiln bench startup $ck --runs 1 --timeout 80 --json-out $OUT/$shape-startup-first.json 2>&1 | grep -E "imports|warmup|start ->"
timeout 200 python3 -m kiln bench startup $ck --runs $runs --timeout 60 --json-out $OUT/$shape-startup.json 2>&1 | tail -18
echo "--- the same with $switch=0:"
env $switch=0 timeout 200 python3 -m kiln bench startup $ck --runs $runs --timeout 60 --json-out $OUT/$shape-startup-$switch-0.json 2>&1 | tail -18
du -sh $KILN_CACHE_DIR/compile/pycache 2>/dev/null
