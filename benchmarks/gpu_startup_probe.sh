#!/usr/bin/env bash
# Where a warm GPU start spends its time beyond Kiln's phases: whether the image writes
# bytecode for torch (an unwritable site-packages recompiles every import), `import torch`
# with and without a bytecode cache prefix, and a cProfile of one warm artifact load.
# Usage (device, after gpu_issue4.sh built CKPT's artifact): bash benchmarks/gpu_startup_probe.sh CKPT [QUANT]
set -u
ck=$1; quant=${2:-}
export KILN_CACHE_DIR=/tmp/kcache OUT=${OUT:-/tmp/out}
env | grep '^PYTHON' | grep -v PYTHONPATH
python3 - <<'PY'
import glob, os, sys, torch
d = os.path.dirname(torch.__file__)
print("dont_write_bytecode", sys.flags.dont_write_bytecode, "site writable", os.access(d, os.W_OK),
      "torch .py", len(glob.glob(d + "/**/*.py", recursive=True)),
      "torch .pyc", len(glob.glob(d + "/**/__pycache__/*.pyc", recursive=True)))
PY
TIMEFORMAT="%R s"
for i in 1 2 3; do echo -n "import torch: "; { time python3 -c "import torch"; } 2>&1; done
for i in 1 2 3; do echo -n "import torch, PYTHONPYCACHEPREFIX: "; { time PYTHONPYCACHEPREFIX=/tmp/pyc python3 -c "import torch"; } 2>&1; done
python3 - "$ck" "$quant" <<'PY' 2>&1 | tail -45
import cProfile, pstats, sys, time
t0 = time.perf_counter()
from compile_cache import configure_tool_caches
configure_tool_caches()
from runtime.engine import Engine
t1 = time.perf_counter()
prof = cProfile.Profile()
prof.enable()
eng = Engine.from_args(sys.argv[1], compile="cached", quantization=sys.argv[2] or None)
prof.disable()
print(f"imports {t1 - t0:.2f} s, engine {time.perf_counter() - t1:.2f} s", eng.loaded.phases)
pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
PY
