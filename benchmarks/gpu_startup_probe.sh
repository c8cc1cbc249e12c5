#!/usr/bin/env bash
# Where a warm GPU start spends its time beyond Kiln's phases: the imports of a warm
# `kiln generate` (bytecode cache already written) and a cProfile of one warm artifact load.
# Usage (device, after CKPT's artifact is built): bash benchmarks/gpu_startup_probe.sh CKPT [QUANT]
set -u
ck=$1; quant=${2:-}
qa=""; [ -n "$quant" ] && qa="--quantization $quant"
export KILN_CACHE_DIR=/tmp/kcache OUT=${OUT:-/tmp/out}
# As `kiln bench startup`'s children run: bytecode read and written under the Kiln prefix from
# the first import (see configure_bytecode_cache).
export PYTHONPYCACHEPREFIX=$KILN_CACHE_DIR/compile/pycache; unset PYTHONDONTWRITEBYTECODE
python3 -m kiln generate $ck $qa --prompt hi --max-tokens 1 > /dev/null 2>&1  # writes bytecode
python3 -X importtime -m kiln generate $ck $qa --prompt hi --max-tokens 1 2> $OUT/importtime-generate.txt > /dev/null
echo "slowest imports (cumulative us):"
grep -E "\| ( {0,4})[a-z_]" $OUT/importtime-generate.txt | sort -t'|' -k2 -n -r | head -25
echo "largest self times (us):"
awk -F'|' '/import time:/ {split($1, a, ":"); print a[2] + 0, $3}' $OUT/importtime-generate.txt | sort -n -r | head -15
python3 - "$ck" "$quant" <<'PY' 2>&1 | tail -95
import cProfile, pstats, sys, time
from compile_cache import configure_bytecode_cache, configure_tool_caches
configure_bytecode_cache(); configure_tool_caches()
from runtime.engine import Engine
prof = cProfile.Profile()
prof.enable()
eng = Engine.from_args(sys.argv[1], compile="cached", quantization=sys.argv[2] or None)
prof.disable()
print({k: round(v, 3) for k, v in eng.loaded.phases.items()})
graphs = eng.loaded.runner.graphs
if graphs is not None:
    print("graph capture seconds per bucket:", {b: round(s, 4) for b, s in graphs.bucket_seconds.items()})
pstats.Stats(prof).sort_stats("cumulative").print_stats(45)
pstats.Stats(prof).sort_stats("cumulative").print_stats("cuda_graphs|runtime/setup", 20)
PY
