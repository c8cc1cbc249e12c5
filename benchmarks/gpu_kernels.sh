#!/usr/bin/env bash
# Evidence that the compiled kernels run, and what they are worth, on one GPU, phase by phase.
#
#   bash benchmarks/gpu_kernels.sh [PHASE ...]          default: tests 1b
#
# Phases (estimates on an H100/H200 from the records in benchmarks/results/; cold caches):
#   tests    pytest -m gpu: kernels vs IR reference, in-graph forms, scaled_mm and its small-M
#            kernel (8B shapes, capture, an AOTInductor package taking both branches), the fp8
#            demo artifact (every op in graph, its named kernels in the package)  ~3 min
#   fp8gemm  benchmarks/fp8_small_m.py: the small-M fp8 GEMM's config sweep, vs
#            torch._scaled_mm and bf16 mm at 8B shapes, M = 1..64; the config to pin (with its
#            record) as $OUT/fp8_small_m/scaled_mm_small_m.<target>.json        ~2 min
#   1b | 8b  Llama-3.2-1B | Llama-3-8B shape, random bf16 weights: benchmarks/fp8_quality.py,
#            one process: bf16 then fp8 compiled under LOWERING (manifest kernels and per-op
#            table), decode ITL bs1/bs32, greedy agreement over 64 prompts x 64 tokens, mean
#            logit cosine, the kernels of one bs1 decode step
#            8b: ~2.5 min with LOWERING=plan (bf16 cached by `passes`), ~4.5 piecewise
#   passes   benchmarks/pass_table.py on PASS_SHAPE (llama3-8b; llama3.2-1b quick), groups
#            PASS_GROUPS (bf16,fp8), LOWERING: the compiled artifact's decode ITL bs1/bs32 and
#            2048-token prefill, default pipeline, each default-on pass off, default again.
#            8B bf16: ~2.5 min plan, ~5 piecewise; fp8 adds ~2.5 | ~4.5 (pass_table.py
#            prints its own bound first)
#   steptime benchmarks/decode_step_time.py on the 8B shape, bf16 then fp8, under the
#            engine's default lowering (a plan: cached when `8b` ran with LOWERING=plan, else
#            compiled, ~1 min more): each decode step's host phases against its device time
#            at batch 1 and 32; two JSON files in $OUT                              ~1.5 min
#   tune     `kiln tune` quick effort, TUNE_BUDGET (20) s per variant, at the 8B shapes: the
#            8 variants a Llama runs (bf16 + fp8 per-token); configs land in ir/kernels/
#            configs/<target>/ (with their record) on the device: $OUT/configs.tgz  ~3.5 min
#            (TUNE_LIMIT seconds at most, default 400)
# The 8B checkpoint (~45 s to write) is made once, in /tmp/ckpt-llama3-8b, by the first phase
# that needs it; `tune` reads only a config.json. Each phase runs under its own timeout and
# under BUDGET_S (seconds for the whole script, default none): a phase gets what is left, and
# one that would get under 30 s is skipped, so a late phase cannot outlast the call and lose
# the earlier phases' results. Logs go to $OUT/logs/, packed into $OUT/logs.tgz at the end
# (the device returns at most 8 files).
# Setup (device): the wheels (helion==1.5.0 ...) installed to /tmp/site,
# PYTHONPATH=/tmp/site:$PWD.
set -u
export KILN_CACHE_DIR=${KILN_CACHE_DIR:-/tmp/kcache} PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out}
LOWERING=${LOWERING:-piecewise}
deadline=$(( $(date +%s) + ${BUDGET_S:-1000000} ))
mkdir -p "$OUT/logs"
phases=${*:-tests 1b}

ckpt() {  # ckpt SHAPE -> folder with a random-weight checkpoint of the shape (made once)
  local dir=/tmp/ckpt-$1
  [ -f "$dir/config.json" ] || timeout 300 python3 -c "import sys; from pathlib import Path; from benchmarks.gpu_shapes import make_checkpoint as m; m(sys.argv[1], Path(sys.argv[2]))" "$1" "$dir" > "$OUT/logs/ckpt-$1.log" 2>&1 \
    || { echo "== checkpoint $1 failed" >&2; tail -5 "$OUT/logs/ckpt-$1.log" >&2; return 1; }
  echo "$dir"
}

shape_config() {  # shape_config SHAPE -> a folder holding only the shape's config.json
  local dir=/tmp/config-$1
  python3 -c "import sys, transformers as tf; from benchmarks.gpu_shapes import SHAPES; tf.LlamaConfig(**SHAPES[sys.argv[1]], max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=500000.0, architectures=['LlamaForCausalLM']).save_pretrained(sys.argv[2])" "$1" "$dir" > /dev/null 2>&1 && echo "$dir"
}

run() {  # run TAG TIMEOUT CMD...: log to $OUT/logs/TAG.log, print rc, seconds and the log's tail
  local tag=$1 limit=$2 left start; shift 2
  left=$(( deadline - $(date +%s) - 10 ))
  [ "$left" -lt 30 ] && { echo "== $tag skipped: ${left}s of BUDGET_S left"; return 1; }
  [ "$left" -lt "$limit" ] && limit=$left
  start=$(date +%s)
  timeout "$limit" "$@" > "$OUT/logs/$tag.log" 2>&1
  echo "== $tag rc=$? $(( $(date +%s) - start ))s (limit ${limit}s)"
  tail -n "${TAIL:-4}" "$OUT/logs/$tag.log" | cut -c1-400
}

shape_phase() {  # shape_phase NAME SHAPE: bf16 and fp8 compiled, measured and compared
  local ck; ck=$(ckpt "$2") || return 1
  TAIL=40 run "quality-$1" 420 python3 -m benchmarks.fp8_quality "$ck" --lowering "$LOWERING" \
    --profile --out "$OUT/quality-$1-$LOWERING.json"
}

passes_phase() {  # the pass on/off table through compiled artifacts, one process
  local shape=${PASS_SHAPE:-llama3-8b} groups=${PASS_GROUPS:-bf16,fp8} ck
  local tag=passes-${groups//,/-}-$LOWERING  # the device returns names of [A-Za-z0-9._-] only
  ck=$(ckpt "$shape") || return 1
  TAIL=30 run "$tag" 590 python3 -m benchmarks.pass_table --shape "$shape" --ckpt "$ck" \
    --groups "$groups" --lowering "$LOWERING" --out "$OUT/$tag"
}

steptime_phase() {  # where a decode step's time goes, bf16 and fp8, 8B shape
  local ck; ck=$(ckpt llama3-8b) || return 1
  TAIL=3 run steptime-bf16 200 python3 -m benchmarks.decode_step_time "$ck" \
    --out "$OUT/steptime-8b-bf16.json"
  TAIL=3 run steptime-fp8 240 python3 -m benchmarks.decode_step_time "$ck" --quantization fp8 \
    --out "$OUT/steptime-8b-fp8.json"
}

tune_phase() {  # kiln tune at the 8B shapes; the configs it writes, as one file
  local ck=/tmp/ckpt-llama3-8b
  [ -f $ck/config.json ] || ck=$(shape_config llama3-8b)  # tuning reads config.json only
  TAIL=30 run tune "${TUNE_LIMIT:-400}" python3 -m kiln tune "$ck" --target auto --effort quick \
    --budget-seconds "${TUNE_BUDGET:-20}"
  tar czf "$OUT/configs.tgz" ir/kernels/configs
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
    tune) tune_phase ;;
    steptime) steptime_phase ;;
    *) echo "unknown phase $phase (tests fp8gemm 1b 8b passes steptime tune)"; exit 2 ;;
  esac
done
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$OUT/logs"
