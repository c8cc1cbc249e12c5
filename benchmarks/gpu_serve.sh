#!/usr/bin/env bash
# Served vs offline on one GPU, in one call: the demo, the Llama-3.2-1B shape (with the demo's
# 512-entry tokenizer over its 128,256-id vocabulary, and with a tokenizer covering it,
# benchmarks/full_vocab_tokenizer.py) and the Llama-3-8B shape (demo tokenizer), each at 32 and
# 128 streaming clients; random bf16 weights, prompts of 128 random tokens, 64 output tokens (EOS
# ignored), 4 requests per client. Per model `kiln bench serve` first runs the offline engine at
# batch 32 and 128 (a child process, `kiln bench throughput`, same engine flags), then starts
# `kiln serve` and the clients; it times every SSE chunk (one per engine step per request, text
# or not) as vLLM's bench does; the server caps the prefill of steps that decode at 128 tokens
# (its GPU default), the offline engine does not.
# FULLVOCAB=0 skips the full-vocabulary 1B. Then, at 32 clients, the server alone again with
# each --max-prefill-while-decoding of BOUNDS (default "512 64"; 512, the step budget, is no
# cap; the 1B, with the full vocabulary unless FULLVOCAB=0, and the 8B): what a bound costs in
# throughput and buys in ITL p99 on this card (each skipped once VARIANT_DEADLINE_S, default
# 480 s, are used, so the whole call stays under 600 s).
# The demo and 1B are compiled (cold compile inside the offline child, then cache hits); the 8B
# is compiled too (a cold piecewise compile of ~100 s on an H200); COMPILE_8B=never runs it eager
# with CUDA graphs instead (its steps that mix prefill and decodes are then eager PyTorch).
# Needs pyzmq + msgspec: wheels in shared/wheels (pip download pyzmq msgspec
# --only-binary=:all: -d shared/wheels, for the image's Python). Writes
# $OUT/serve-<run>.{json,log} and $OUT/summary.json (the card, one row per run and load with the
# goal ratios, and every run's full record); about 6-7 minutes.
# MODELS (default "demo llama3.2-1b llama3-8b") picks the models. API_SERVERS (default "", e.g.
# "2 4") reruns each model's server alone (after its default one-API-server run) with that many
# API server processes (`kiln serve --api-servers N`), as run <model>-api<N>; the summary sets
# those rows beside the model's own offline figures.
# Usage (device): bash benchmarks/gpu_serve.sh
set -u
export KILN_CACHE_DIR=/tmp/kcache PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out} PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
python3 -c "import zmq, msgspec" 2>/dev/null ||
  pip install -q --no-index --find-links shared/wheels pyzmq msgspec || exit 1
common="--input-len 128 --output-len 64 --max-num-seqs 128 --max-model-len 2048"
bench() {  # RUN MODEL FLAGS...
  local name=$1; shift
  timeout ${BENCH_TIMEOUT:-200} python3 -m kiln bench serve "$@" $common \
    --json-out $OUT/serve-$name.json --db $OUT/dashboard.sqlite > $OUT/serve-$name.log 2>&1
  echo "== $name rc=$?"; tail -9 $OUT/serve-$name.log
}
bound() {  # RUN TOKENS MODEL FLAGS...: served only, 32 clients, another prefill bound
  local name=$1 tokens=$2; shift 2
  if [ $SECONDS -gt ${VARIANT_DEADLINE_S:-480} ]; then  # the device allows 600 s a command
    echo "== $name-prefill$tokens skipped: ${SECONDS}s used"; return 0
  fi
  BENCH_TIMEOUT=60 bench $name-prefill$tokens "$@" --concurrency 32 --no-offline \
    --max-prefill-while-decoding $tokens
}
models=${MODELS:-demo llama3.2-1b llama3-8b}
more_servers() {  # MODEL-RUN MODEL FLAGS...: the server alone, once per API_SERVERS count
  local name=$1; shift
  for n in ${API_SERVERS:-}; do
    bench $name-api$n "$@" --concurrency 32,128 --no-offline --api-servers $n
  done
}
case " $models " in *" demo "*) bench demo demo --concurrency 32,128 --compile on_miss
  more_servers demo demo --compile on_miss ;; esac
for shape in $models; do
  [ $shape = demo ] && continue
  ck=/tmp/ckpt-$shape
  [ -f $ck/config.json ] || python3 -c "from pathlib import Path; from benchmarks.gpu_shapes import \
make_checkpoint as m; m('$shape', Path('$ck'))" > $OUT/ckpt-$shape.log 2>&1 || { echo "ckpt $shape failed"; continue; }
  mode=on_miss; [ $shape = llama3-8b ] && mode=${COMPILE_8B:-on_miss}
  BENCH_TIMEOUT=240 bench $shape $ck --concurrency 32,128 --compile $mode
  more_servers $shape $ck --compile $mode
  if [ $shape = llama3.2-1b ] && [ "${FULLVOCAB:-1}" = 1 ]; then  # every id decodes to text
    python3 benchmarks/full_vocab_tokenizer.py $ck $ck-fullvocab > /dev/null &&
      bench $shape-fullvocab $ck-fullvocab --concurrency 32,128 --compile on_miss  # cache hit
  fi
done
mode8b=${COMPILE_8B:-on_miss}
for tokens in ${BOUNDS-512 64}; do
  [ -f /tmp/ckpt-llama3-8b/config.json ] && bound llama3-8b $tokens /tmp/ckpt-llama3-8b --compile $mode8b
  if [ "${FULLVOCAB:-1}" = 1 ]; then
    [ -f /tmp/ckpt-llama3.2-1b-fullvocab/config.json ] &&
      bound llama3.2-1b-fullvocab $tokens /tmp/ckpt-llama3.2-1b-fullvocab --compile on_miss
  else
    [ -f /tmp/ckpt-llama3.2-1b/config.json ] &&
      bound llama3.2-1b $tokens /tmp/ckpt-llama3.2-1b --compile on_miss
  fi
done
python3 - <<'PY'
import json, os, pathlib
out = pathlib.Path(os.environ["OUT"]); rows, records = [], {}
for f in sorted(out.glob("serve-*.json")):
    records[f.stem[6:]] = json.loads(f.read_text())
def offline(run):  # a <model>-api<N> run is set beside <model>'s offline rows
    base, _, n = run.rpartition("-api")
    rows = records.get(base if n.isdigit() else run, records[run])["results"]
    return {r["batch_size"]: r for r in rows if r["engine"] == "kiln-offline"}
for run, record in records.items():
    off = offline(run)
    for r in (r for r in record["results"] if r["engine"] == "kiln-serve"):
        o = off.get(r["batch_size"], {})
        ratio = lambda a, b: a / b if a and b else None
        s = {"run": run, "api_servers": r.get("api_servers"), "clients": r["batch_size"],
             "served_tok_s": r["tok_s"], "offline_tok_s": o.get("tok_s"),
             "served_over_offline": ratio(r["tok_s"], o.get("tok_s")),
             "ttft_p50_ms": r["ttft_p50_ms"], "offline_ttft_p50_ms": o.get("ttft_p50_ms"),
             "ttft_p50_over_offline": ratio(r["ttft_p50_ms"], o.get("ttft_p50_ms")),
             "itl_p50_ms": r["itl_p50_ms"], "itl_p99_ms": r["itl_p99_ms"],
             "itl_p99_over_p50": r.get("itl_p99_over_p50"),
             "offline_itl_p50_ms": o.get("itl_p50_ms"), "offline_itl_p99_ms": o.get("itl_p99_ms")}
        rows.append(s); print(json.dumps(s))
card = next((r["card"] for r in records.values()), None)
summary = {"card": card, "script": "benchmarks/gpu_serve.sh", "rows": rows, "records": records}
(out / "summary.json").write_text(json.dumps(summary, indent=1))
PY
