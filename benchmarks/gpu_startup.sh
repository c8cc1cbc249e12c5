#!/usr/bin/env bash
# Warm start of a cached artifact with the weight stream (runtime/weight_stream.py), per model
# shape (random bf16 weights, page cache warm), each measure beside its baseline in the same call:
#   1. the stream's GPU tests (tests/runtime/test_weights_gpu.py: plain loader's bytes, early start)
#   2. SHAPE's checkpoint (made once) and its artifact: `kiln compile` prints its phases (load,
#      capture+passes, lower); cold on a fresh machine
#   3. `kiln bench startup` (exec `kiln generate --max-tokens 1`, RUNS fresh processes): the phase
#      table plus the stream's read and host-to-device GB/s; then KILN_WEIGHT_STREAM=0 (the plain
#      loader, the baseline)
#   4. `kiln bench startup --serve` (exec `kiln serve` -> /health 200 -> one completion), stream
#      and KILN_WEIGHT_STREAM=0; then each of the serve start's own choices turned off:
#      KILN_CORE_FORK=0 (the core spawned), KILN_GRAPHS_AFTER_READY=0 (step graphs captured in
#      the load), both (the start before 2026-12-07), and the default once more
#   5. (8B only, CAPTURE_PROFILE=0 skips it) benchmarks/capture_profile.py: load + capture+passes as the compile did before
#      (checkpoint read, every layer traced) and now (zero weights, 4 layers traced), ~30 s
# Goal: 8B exec -> first completion <= 2.5 s (stretch 2 s), 1B <= 1.5 s. About 4-5 minutes on an
# H200 for both shapes on a fresh machine (8B checkpoint ~40 s, 8B cold compile ~80 s).
# Writes $OUT/<shape>-{compile.txt,startup*.json,serve-startup*.json} and the logs beside them.
# Usage (device): RUNS=3 bash benchmarks/gpu_startup.sh [SHAPE...]   (default llama3-8b llama3.2-1b)
set -u
export KILN_CACHE_DIR=${KILN_CACHE_DIR:-/tmp/kcache} PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$OUT"
runs=${RUNS:-3}
python3 -c "import zmq, msgspec, diskcache" 2>/dev/null ||
  pip install -q --no-index --find-links shared/wheels pyzmq msgspec diskcache ||
  echo "pyzmq/msgspec/diskcache missing: put their wheels in shared/wheels"
timeout 240 python3 -m pytest -m gpu -x -q -p no:cacheprovider tests/runtime/test_weights_gpu.py \
  > $OUT/weights-gpu-tests.log 2>&1
echo "== weight stream gpu tests rc=$?"; tail -3 $OUT/weights-gpu-tests.log
bench() {  # NAME ARGS... : one `kiln bench startup`, its table and summary lines
  local name=$1; shift
  timeout 240 "$@" --json-out $OUT/$name.json --db $OUT/dashboard.sqlite > $OUT/$name.log 2>&1
  echo "== $name rc=$?"; grep -vE "^\s*$|recorded as" $OUT/$name.log | tail -24
}
for shape in ${*:-llama3-8b llama3.2-1b}; do
  ck=/tmp/ckpt-$shape
  [ -f $ck/config.json ] || python3 -c "from pathlib import Path; from benchmarks.gpu_shapes import \
make_checkpoint as m; m('$shape', Path('$ck'))" > $OUT/ckpt-$shape.log 2>&1 || { echo "ckpt $shape failed"; continue; }
  start=$(date +%s.%N)
  timeout 400 python3 -m kiln compile $ck --target auto --no-record > $OUT/$shape-compile.txt 2>&1
  echo "== $shape compile rc=$? wall $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s"
  grep -E "^phase|cache (hit|miss)" $OUT/$shape-compile.txt
  cat $ck/*.safetensors > /dev/null  # the page cache holds the weights (the goal's condition)
  bench $shape-startup python3 -m kiln bench startup $ck --runs $runs --timeout 60
  KILN_WEIGHT_STREAM=0 bench $shape-startup-plain python3 -m kiln bench startup $ck --runs $runs --timeout 60
  bench $shape-serve-startup python3 -m kiln bench startup $ck --serve --runs $runs --timeout 60
  KILN_WEIGHT_STREAM=0 bench $shape-serve-startup-plain python3 -m kiln bench startup $ck --serve --runs $runs --timeout 60
  KILN_CORE_FORK=0 bench $shape-serve-startup-spawned \
    python3 -m kiln bench startup $ck --serve --runs $runs --timeout 60
  KILN_GRAPHS_AFTER_READY=0 bench $shape-serve-startup-graphs-in-load \
    python3 -m kiln bench startup $ck --serve --runs $runs --timeout 60
  KILN_CORE_FORK=0 KILN_GRAPHS_AFTER_READY=0 bench $shape-serve-startup-before \
    python3 -m kiln bench startup $ck --serve --runs $runs --timeout 60
  bench $shape-serve-startup-2 python3 -m kiln bench startup $ck --serve --runs $runs --timeout 60
  if [ $shape = llama3-8b ] && [ "${CAPTURE_PROFILE:-1}" = 1 ]; then
    timeout 180 python3 benchmarks/capture_profile.py $ck --dtype bfloat16 --variants before,after \
      --out $OUT/$shape-capture-profile.json > $OUT/$shape-capture-profile.log 2>&1
    echo "== $shape capture profile rc=$?"; tail -4 $OUT/$shape-capture-profile.log
  fi
done
