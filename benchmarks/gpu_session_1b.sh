#!/usr/bin/env bash
# One device call: the Llama-3.2-1B shape compiled for this GPU (bf16 and fp8), each checked
# against the reference engine; then the AOTInductor link line and the .so's libstdc++ content.
set -u
export KILN_CACHE_DIR=/tmp/kcache PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out}
python3 -c "from pathlib import Path; from benchmarks.gpu_shapes import make_checkpoint as m; m('llama3.2-1b', Path('/tmp/ckpt-1b'))" || exit 1
for q in none fp8; do
  qa=""; [ "$q" = none ] || qa="--quantization $q"
  timeout 300 python3 benchmarks/gpu_compile_check.py /tmp/ckpt-1b --phase compile $qa --out $OUT/1b_${q}_compile.json 2>&1 | grep -v -i warn | tail -4
  timeout 200 python3 benchmarks/gpu_compile_check.py /tmp/ckpt-1b --phase check $qa --out $OUT/1b_${q}_check.json 2>&1 | grep -v -i warn | tail -4
done
echo "== AOTI link line"
printf '#!/bin/sh\necho "$@" >> /tmp/cxx.log\nexec g++ "$@"\n' > /tmp/gxx-log; chmod +x /tmp/gxx-log
rm -rf /tmp/probe2 /tmp/probe2.pt2 /tmp/torchinductor_root
CXX=/tmp/gxx-log timeout 200 python3 benchmarks/aoti_cuda_probe2.py build > /dev/null 2>&1
grep -- "-shared" /tmp/cxx.log | tr ' ' '\n' | grep -E "^-[lLW]|static|\.a$|\.o$|^-shared|nostd" | sort | uniq | tr '\n' ' '; echo
SO=$(find /tmp/probe2 -name "*.so" | head -1)
readelf -d "$SO" | grep NEEDED
echo "locale symbols defined in the .so: $(nm -C --defined-only "$SO" | grep -c 'std::locale::')"
