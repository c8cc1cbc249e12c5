#!/usr/bin/env bash
# One lowering against another on this GPU (LOWERINGS, default "piecewise monolithic"; "plan
# monolithic" compares the plan lowering), per model shape (random bf16 weights):
#   cold `kiln compile` (empty Kiln, Inductor and Triton caches: all live in a fresh
#   KILN_CACHE_DIR) of each lowering, then decode bs1/bs32 and a 2048-token prefill of each
#   artifact in a fresh process. Writes $OUT/<shape>-<lowering>-{compile.txt,bench.json} and
#   $OUT/piecewise-summary.json. Estimated 3 min for llama3.2-1b and 5 min for llama3-8b on an
#   H200 (the 8B monolithic compile alone took 173 s there); give one shape per call if need be.
# Usage (device): PYTHONPATH=<wheels>:$PWD bash benchmarks/gpu_piecewise.sh [SHAPE...]
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
unset TORCHINDUCTOR_CACHE_DIR TRITON_CACHE_DIR
shapes=${*:-llama3.2-1b llama3-8b}
for shape in $shapes; do
  ck=/tmp/ckpt-$shape
  [ -f $ck/config.json ] || python3 -c "from pathlib import Path; from benchmarks.gpu_shapes import make_checkpoint as m; m('$shape', Path('$ck'))" > /dev/null 2>&1 || { echo "checkpoint $shape failed"; exit 1; }
  for lowering in ${LOWERINGS:-piecewise monolithic}; do
    cache=/tmp/kcache-$shape-$lowering; rm -rf $cache
    start=$(date +%s.%N)
    KILN_CACHE_DIR=$cache timeout 400 python3 -m kiln compile $ck --target auto --lowering $lowering \
      --max-num-batched-tokens 2048 --no-record > $OUT/$shape-$lowering-compile.txt 2>&1
    rc=$?; wall=$(python3 -c "print(round($(date +%s.%N) - $start, 2))")
    echo "$shape $lowering compile rc=$rc wall=$wall s"
    echo "wall_s $wall" >> $OUT/$shape-$lowering-compile.txt
    [ $rc = 0 ] || { tail -30 $OUT/$shape-$lowering-compile.txt; continue; }
    art=$(awk '/^artifact /{print $2}' $OUT/$shape-$lowering-compile.txt)
    KILN_CACHE_DIR=$cache timeout 240 python3 benchmarks/piecewise_bench.py $ck $art --label $lowering \
      --out $OUT/$shape-$lowering-bench.json > $OUT/$shape-$lowering-bench.log 2>&1 || tail -20 $OUT/$shape-$lowering-bench.log
  done
done
python3 - "$OUT" <<'PY'
import json, re, sys
from pathlib import Path
out = Path(sys.argv[1]); rows = []
for f in sorted(out.glob("*-compile.txt")):
    shape, lowering = f.name[: -len("-compile.txt")].rsplit("-", 1)
    text = f.read_text()
    row = {"shape": shape, "lowering": lowering}
    row["compile_wall_s"] = float(re.search(r"^wall_s (\S+)", text, re.M).group(1))
    row["phases"] = {k: float(v) for k, v in re.findall(r"^phase\s+(\S+)\s+([\d.]+)s", text, re.M)}
    row["pieces"] = [l for l in text.splitlines() if "distinct pieces" in l]
    bench = out / f"{shape}-{lowering}-bench.json"
    if bench.is_file():
        b = json.loads(bench.read_text())
        row.update(card=b["card"], forward=b["forward"], prefill_2048_ttft_s=b["prefill_2048_ttft_s"])
        row.update({f"decode_bs{d['batch']}_tok_s": d["tok_s"] for d in b["decode"]})
        row.update({f"decode_bs{d['batch']}_itl_p50_ms": d["itl_p50_ms"] for d in b["decode"]})
    rows.append(row)
    print(json.dumps({k: v for k, v in row.items() if k != "phases"}))
(out / "piecewise-summary.json").write_text(json.dumps(rows, indent=2))
PY
