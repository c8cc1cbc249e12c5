#!/usr/bin/env bash
# Served vs offline on one GPU, in one call: the demo, the Llama-3.2-1B shape and the Llama-3-8B
# shape (random bf16 weights, the demo's 512-entry tokenizer over a 128,256-id vocabulary), each at
# 32 and 128 streaming clients, prompts of 128 random tokens, 64 output tokens (EOS ignored).
# The 1B also runs with a tokenizer covering its vocabulary (benchmarks/full_vocab_tokenizer.py).
# Per model `kiln bench serve` first runs the offline engine at batch 32 and 128 (a child process,
# `kiln bench throughput`), then starts `kiln serve` and the clients (4 requests per client).
# The demo and 1B are compiled (cold compile inside the offline child); the 8B runs eager with CUDA
# graphs unless COMPILE_8B=on_miss (its cold compile takes ~3 min). Needs pyzmq + msgspec: wheels in
# shared/wheels (pip download pyzmq msgspec --only-binary=:all: -d shared/wheels, for the image's
# Python). Writes $OUT/serve-<model>.{json,log} and $OUT/summary.json; about 5-6 minutes.
# Usage (device): bash benchmarks/gpu_serve.sh
set -u
export KILN_CACHE_DIR=/tmp/kcache PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out} PYTHONPATH=$PWD
python3 -c "import zmq, msgspec" 2>/dev/null ||
  pip install -q --no-index --find-links shared/wheels pyzmq msgspec || exit 1
common="--concurrency 32,128 --input-len 128 --output-len 64 --max-num-seqs 128 --max-model-len 2048"
bench() {  # NAME MODEL FLAGS...
  local name=$1; shift
  timeout ${BENCH_TIMEOUT:-200} python3 -m kiln bench serve "$@" $common \
    --json-out $OUT/serve-$name.json --db $OUT/dashboard.sqlite > $OUT/serve-$name.log 2>&1
  echo "== $name rc=$?"; tail -7 $OUT/serve-$name.log
}
bench demo demo --compile on_miss
for shape in llama3.2-1b llama3-8b; do
  ck=/tmp/ckpt-$shape
  [ -f $ck/config.json ] || python3 -c "from pathlib import Path; from benchmarks.gpu_shapes import \
make_checkpoint as m; m('$shape', Path('$ck'))" > $OUT/ckpt-$shape.log 2>&1 || { echo "ckpt $shape failed"; continue; }
  mode=on_miss; [ $shape = llama3-8b ] && mode=${COMPILE_8B:-never}
  BENCH_TIMEOUT=240 bench $shape $ck --compile $mode
  if [ $shape = llama3.2-1b ]; then  # every id decodes to text, as with a real tokenizer
    python3 benchmarks/full_vocab_tokenizer.py $ck $ck-fullvocab > /dev/null &&
      bench $shape-fullvocab $ck-fullvocab --compile on_miss  # same weights: a cache hit
  fi
done
python3 - <<'PY'
import json, os, pathlib
out = pathlib.Path(os.environ["OUT"]); summary = []
for f in sorted(out.glob("serve-*.json")):
    rows = json.loads(f.read_text())["results"]
    off = {r["batch_size"]: r for r in rows if r["engine"] == "kiln-offline"}
    for r in (r for r in rows if r["engine"] == "kiln-serve"):
        o = off.get(r["batch_size"], {})
        s = {"model": f.stem[6:], "clients": r["batch_size"], "served_tok_s": r["tok_s"],
             "offline_tok_s": o.get("tok_s"), "ratio": r.get("served_ratio"),
             "ttft_p50_ms": r["ttft_p50_ms"], "offline_ttft_p50_ms": o.get("ttft_p50_ms"),
             "itl_p50_ms": r["itl_p50_ms"], "itl_p99_ms": r["itl_p99_ms"],
             "itl_p99_over_p50": r["itl_p99_ms"] / r["itl_p50_ms"] if r["itl_p50_ms"] else None}
        if o.get("ttft_p50_ms"): s["ttft_p50_over_offline"] = r["ttft_p50_ms"] / o["ttft_p50_ms"]
        summary.append(s); print(json.dumps(s))
(out / "summary.json").write_text(json.dumps(summary, indent=1))
PY
