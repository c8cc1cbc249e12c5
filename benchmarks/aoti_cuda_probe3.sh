#!/usr/bin/env bash
# Probe 3: why does an AOTInductor CUDA .so crash on load here? Links, driver, and a preload.
set -u
python3 benchmarks/aoti_cuda_probe2.py build > /tmp/p3_build.log 2>&1 || { tail -3 /tmp/p3_build.log; exit 1; }
SO=$(find /tmp/probe2 -name "*.so" | head -1)
echo "== ldd"; ldd "$SO" | grep -i -E "cuda|not found|torch" 
echo "== ldconfig libcuda"; ldconfig -p | grep -E "libcuda\.so" | head -3
echo "== env"; env | grep -E "^LD_|CUDA" | head
DRV=$(ldconfig -p | grep -E "libcuda\.so\.1 " | head -1 | awk '{print $NF}')
for pre in "" "$DRV"; do
  echo "== load with LD_PRELOAD='$pre'"
  LD_PRELOAD="$pre" timeout 120 python3 -X faulthandler benchmarks/aoti_cuda_probe2.py B 2>&1 | grep -v Warn | tail -2
done
echo "== gdb-less backtrace via catchsegv-like: python -X faulthandler only"
