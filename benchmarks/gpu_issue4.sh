#!/usr/bin/env bash
# Issue 4's GPU evidence for one shape in one device call (8B: about 8 minutes on an H200):
#   the checkpoint (random bf16 weights), a cold AOTInductor compile for this GPU, the
#   reference-attention noise-floor run, the compiled-vs-reference check (bf16 and fp32),
#   the warm start phase by phase, and where `import torch` spends its time on this image.
# Usage (device): carry .whl, install it to /tmp/site, PYTHONPATH=/tmp/site:$PWD, then
#   bash benchmarks/gpu_issue4.sh [SHAPE] [QUANT]        results land in $OUT
set -u
shape=${1:-llama3-8b}; quant=${2:-none}
export KILN_CACHE_DIR=/tmp/kcache PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out}
ck=/tmp/ckpt-$shape; tag=$shape-$quant
qa=""; [ "$quant" = none ] || qa="--quantization $quant"
[ -d $ck ] || python3 -c "from pathlib import Path; from benchmarks.gpu_shapes import make_checkpoint as m; m('$shape', Path('$ck'))" > /dev/null 2>&1 || exit 1
check() { timeout ${2:-300} python3 benchmarks/gpu_compile_check.py $ck $qa --out $OUT/$tag-$1.json --phase $1 --rows /tmp/rows-$shape.pt > $OUT/$tag-$1.log 2>&1; echo "$1 rc=$?"; tail -1 $OUT/$tag-$1.log | cut -c1-1500; }
check compile 400
[ "$quant" = none ] && check refattn 200
check check 300
[ "$quant" = none ] || exit 0
timeout 150 python3 -m kiln bench startup $ck --runs 3 --timeout 60 --json-out $OUT/$tag-startup.json 2>&1 | tail -18
python3 -X importtime -c "import torch" 2> $OUT/importtime-torch.txt
sort -t'|' -k2 -n -r $OUT/importtime-torch.txt | head -12
