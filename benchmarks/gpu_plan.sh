#!/usr/bin/env bash
# Plan artifacts vs the native piecewise artifact on this GPU, per model shape (random bf16):
#   plan-cross   `kiln compile --target <this GPU>` with CUDA_VISIBLE_DEVICES="" (no GPU
#                visible: what a laptop or CI box builds), cubins + execution plan;
#   plan-native  `kiln compile --target auto --lowering plan` on the GPU itself;
#   piecewise    `kiln compile --target auto` (AOTInductor, the default).
#   plan-carried the artifact `benchmarks/plan_carry.py build` made on a host with no GPU, when
#                CARRY names its folder (CARRY/artifacts/<shape>); nothing is compiled here.
# VARIANTS picks among them (default: all but plan-carried, which CARRY adds).
# Each is compiled cold (fresh KILN_CACHE_DIR: Kiln, Inductor and Triton caches), then decode
# at batch 1 and 32 (128 prompt tokens, 32 generated, CUDA graphs) and a 2048-token prefill
# run in a fresh process (benchmarks/piecewise_bench.py). Writes $OUT/<shape>-<variant>-*.json
# and $OUT/plan-summary.json. Estimated 4 min for llama3.2-1b and 7 min for llama3-8b on an
# H200; give one shape per call if need be.
# Usage (device): PYTHONPATH=<wheels>:$PWD bash benchmarks/gpu_plan.sh [SHAPE...]
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
unset TORCHINDUCTOR_CACHE_DIR TRITON_CACHE_DIR
target=$(python3 -c "from ir.targets import detect_host_target as d; print(d().name)")
shapes=${*:-llama3.2-1b llama3-8b}
for shape in $shapes; do
  ck=/tmp/ckpt-$shape
  [ -f $ck/config.json ] || python3 -c "from pathlib import Path; from benchmarks.gpu_shapes import make_checkpoint as m; m('$shape', Path('$ck'))" > /dev/null 2>&1 || { echo "checkpoint $shape failed"; exit 1; }
  variants=${VARIANTS:-plan-cross plan-native piecewise}
  [ -n "${CARRY:-}" ] && [ -d "$CARRY/artifacts/$shape" ] && variants="plan-carried $variants"
  for variant in $variants; do
    cache=/tmp/kcache-$shape-$variant; rm -rf $cache
    if [ $variant = plan-carried ]; then
      echo "wall_s 0" > $OUT/$shape-$variant-compile.txt
      KILN_CACHE_DIR=$cache timeout 300 python3 benchmarks/piecewise_bench.py $ck $CARRY/artifacts/$shape \
        --label $variant --out $OUT/$shape-$variant-bench.json > $OUT/$shape-$variant-bench.log 2>&1 || tail -20 $OUT/$shape-$variant-bench.log
      continue
    fi
    case $variant in
      plan-cross) cmd="env CUDA_VISIBLE_DEVICES= python3 -m kiln compile $ck --target $target" ;;
      plan-native) cmd="python3 -m kiln compile $ck --target auto --lowering plan" ;;
      piecewise) cmd="python3 -m kiln compile $ck --target auto" ;;
    esac
    start=$(date +%s.%N)
    KILN_CACHE_DIR=$cache timeout 500 $cmd --max-num-batched-tokens 2048 --no-record > $OUT/$shape-$variant-compile.txt 2>&1
    rc=$?; wall=$(python3 -c "print(round($(date +%s.%N) - $start, 2))")
    echo "$shape $variant compile rc=$rc wall=$wall s"
    echo "wall_s $wall" >> $OUT/$shape-$variant-compile.txt
    [ $rc = 0 ] || { tail -30 $OUT/$shape-$variant-compile.txt; continue; }
    art=$(awk '/^artifact /{print $2}' $OUT/$shape-$variant-compile.txt)
    KILN_CACHE_DIR=$cache timeout 300 python3 benchmarks/piecewise_bench.py $ck $art --label $variant \
      --out $OUT/$shape-$variant-bench.json > $OUT/$shape-$variant-bench.log 2>&1 || tail -20 $OUT/$shape-$variant-bench.log
  done
done
python3 - "$OUT" <<'PY'
import json, re, sys
from pathlib import Path
out = Path(sys.argv[1]); rows = []
for f in sorted(out.glob("*-compile.txt")):
    name = f.name[: -len("-compile.txt")]
    variant = next((v for v in ("plan-carried", "plan-cross", "plan-native", "piecewise") if name.endswith(v)), None)
    if variant is None:
        continue
    shape, text = name[: -len(variant) - 1], f.read_text()
    row = {"shape": shape, "variant": variant}
    row["compile_wall_s"] = float(re.search(r"^wall_s (\S+)", text, re.M).group(1))
    row["phases"] = {k: float(v) for k, v in re.findall(r"^phase\s+(\S+)\s+([\d.]+)s", text, re.M)}
    row["cubins"] = [l for l in text.splitlines() if l.startswith("cubins")]
    bench = out / f"{name}-bench.json"
    if bench.is_file():
        b = json.loads(bench.read_text())
        row.update(card=b["card"], forward=b["forward"], prefill_2048_ttft_s=b["prefill_2048_ttft_s"])
        row.update({f"decode_bs{d['batch']}_tok_s": d["tok_s"] for d in b["decode"]})
        row.update({f"decode_bs{d['batch']}_itl_p50_ms": d["itl_p50_ms"] for d in b["decode"]})
        row["startup_phases"] = b["startup_phases"]
    rows.append(row)
    print(json.dumps({k: v for k, v in row.items() if k not in ("phases", "startup_phases")}))
(out / "plan-summary.json").write_text(json.dumps(rows, indent=2))
PY
