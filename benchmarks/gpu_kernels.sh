#!/usr/bin/env bash
# Evidence that the compiled kernels run, on one GPU, phase by phase; JSON and logs in $OUT.
#
#   bash benchmarks/gpu_kernels.sh [PHASE ...]          default: tests 1b   (~7 min, H200)
#
# Phases (cold Kiln/Inductor caches; times measured on nothing yet, estimated):
#   tests    pytest -m gpu: kernels vs IR reference, in-graph forms, scaled_mm and its small-M
#            kernel (8B shapes, capture, an AOTInductor package taking both branches), the fp8
#            demo artifact (every op in graph, its named kernels in the package)  ~3 min
#   fp8gemm  benchmarks/fp8_small_m.py: the small-M fp8 GEMM's config sweep, vs
#            torch._scaled_mm and bf16 mm at 8B shapes, M = 1..64; the config to pin (with its
#            record) as $OUT/fp8_small_m/scaled_mm_small_m.<target>.json        ~2 min
#   1b | 8b  Llama-3.2-1B | Llama-3-8B shape, random bf16 weights:               ~5 | ~9 min
#            compile bf16 + fp8 (--json manifest with the per-op table), `kiln bench
#            throughput` bs1/bs32 each, fp8 vs bf16 greedy agreement (64 prompts x 64 tokens)
#            + mean logit cosine, torch.profiler kernels of one bs1 decode step each
#   passes   benchmarks/pass_table.py on the 8B shape (PASS_SHAPE=llama3.2-1b: quick): the
#            compiled artifact's decode ITL bs1/bs32 and 2048-token prefill, default pipeline
#            then each default-on pass off; groups PASS_GROUPS (bf16,fp8; run one per call to
#            stay under 10 min: bf16 ~5.5 min with the checkpoint, fp8 ~4.5 min)
#   tune     `kiln tune` quick effort, TUNE_BUDGET (20) s per variant, at the 8B shapes: the
#            8 variants a Llama runs (bf16 + fp8 per-token); configs land in ir/kernels/
#            configs/<target>/ on the device ($OUT/configs.tgz)                        ~4 min
# Setup (device): helion==1.5.0 wheel installed to /tmp/site, PYTHONPATH=/tmp/site:$PWD.
set -u
export KILN_CACHE_DIR=${KILN_CACHE_DIR:-/tmp/kcache} PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
phases=${*:-tests 1b}

ckpt() {  # ckpt NAME SHAPE [LAYERS] -> folder with a random-weight checkpoint of the shape
  local dir=/tmp/ckpt-$1
  [ -d "$dir" ] || python3 - "$1" "$2" "${3:-}" "$dir" <<'EOF' > /dev/null 2>&1 || exit 1
import sys
from pathlib import Path
from benchmarks import gpu_shapes
name, shape, layers, folder = sys.argv[1:]
gpu_shapes.SHAPES[name] = dict(gpu_shapes.SHAPES[shape])
if layers:
    gpu_shapes.SHAPES[name]["num_hidden_layers"] = int(layers)
gpu_shapes.make_checkpoint(name, Path(folder))
EOF
  echo "$dir"
}

shape_config() {  # shape_config SHAPE -> a folder holding only the shape's config.json
  local dir=/tmp/config-$1
  python3 -c "import sys, transformers as tf; from benchmarks.gpu_shapes import SHAPES; tf.LlamaConfig(**SHAPES[sys.argv[1]], max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=500000.0, architectures=['LlamaForCausalLM']).save_pretrained(sys.argv[2])" "$1" "$dir" > /dev/null 2>&1 && echo "$dir"
}

run() {  # run TAG TIMEOUT CMD...: log to $OUT/TAG.log, print rc and the log's tail
  local tag=$1 limit=$2; shift 2
  timeout "$limit" "$@" > "$OUT/$tag.log" 2>&1; echo "== $tag rc=$?"; tail -n "${TAIL:-4}" "$OUT/$tag.log" | cut -c1-400
}

shape_phase() {  # shape_phase NAME SHAPE: compile, bench, quality, profile
  local ck; ck=$(ckpt "$1" "$2")
  for q in bf16 fp8; do
    local qa=""; [ $q = fp8 ] && qa="--quantization fp8"
    timeout 400 python3 -m kiln compile "$ck" --target auto $qa --json --no-record \
      > "$OUT/compile-$1-$q.json" 2> "$OUT/compile-$1-$q.log"; echo "== compile-$1-$q rc=$?"
    python3 -c "import json,sys; m=json.load(open(sys.argv[1]))['manifest']; print(m['kernels']); [print(' ', r['op'], r['count'], r['implementation'], r['runs'], ','.join(r['kernels'])[:120]) for r in m['ops']]" "$OUT/compile-$1-$q.json" 2>&1 | head -20
    TAIL=6 run "bench-$1-$q" 300 python3 -m kiln bench throughput "$ck" $qa --batch-sizes 1,32 \
      --input-len 128 --output-len 64 --max-model-len 2048 --compile on_miss \
      --json-out "$OUT/bench-$1-$q.json"
    TAIL=25 run "profile-$1-$q" 200 python3 benchmarks/fp8_quality.py "$ck" --profile $qa \
      --out "$OUT/profile-$1-$q.json"
  done
  run "quality-$1" 300 python3 benchmarks/fp8_quality.py "$ck" --out "$OUT/quality-$1.json"
}

passes_phase() {  # pass on/off table through compiled artifacts, one process per call
  local shape=${PASS_SHAPE:-llama3-8b} groups=${PASS_GROUPS:-bf16,fp8} ck
  ck=$(ckpt "${shape##*-}" "$shape")  # /tmp/ckpt-8b or -1b, shared with the 8b and 1b phases
  TAIL=30 run "passes-$groups" 590 python3 benchmarks/pass_table.py \
    --shape "$shape" --ckpt "$ck" --groups "$groups" --out "$OUT/passes-$groups"
}

for phase in $phases; do
  case $phase in
    tests) TAIL=15 run tests 420 python3 -m pytest -m gpu -x -q -p no:cacheprovider \
             tests/lowering/test_kernels_gpu.py tests/lowering/test_scaled_mm.py \
             tests/lowering/test_scaled_mm_small_m.py \
             "tests/lowering/test_gpu_compiled.py::test_fp8_artifact_runs_every_op_in_graph_and_holds_the_kernels_it_names" \
             "tests/lowering/test_gpu_compiled.py::test_fp8_compiled_runs_under_graphs_and_matches_the_quantized_graph" ;;
    fp8gemm) TAIL=40 run fp8gemm 240 python3 benchmarks/fp8_small_m.py --out "$OUT/fp8_small_m" ;;
    1b) shape_phase 1b llama3.2-1b ;;
    8b) shape_phase 8b llama3-8b ;;
    passes) passes_phase ;;
    tune) ck=/tmp/ckpt-8b; [ -d $ck ] || ck=$(shape_config llama3-8b)  # tuning reads config.json only
          TAIL=30 run tune 400 python3 -m kiln tune "$ck" --target auto --effort quick \
            --budget-seconds "${TUNE_BUDGET:-20}"
          tar czf "$OUT/configs.tgz" ir/kernels/configs ;;  # one file: $OUT returns at most 8
    *) echo "unknown phase $phase (tests fp8gemm 1b 8b passes tune)"; exit 2 ;;
  esac
done
