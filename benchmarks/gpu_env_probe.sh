#!/usr/bin/env bash
# What this GPU host is (runtime, driver, libcuda copies, import costs) and whether an
# AOTInductor CUDA package loads here; a cuda-gdb backtrace if it crashes.
set -u
echo "== kernel $(uname -r)"; nvidia-smi -L
echo "== libcuda copies"; find / -xdev -name "libcuda.so*" 2>/dev/null | head
for m in torch torch._inductor triton torch._dynamo; do
  python3 -X importtime -c "import $m" 2>/dev/null; /usr/bin/time -f "import $m %e s" python3 -c "import $m" 2>&1 | tail -1
done
python3 -c "import time,torch;t=time.perf_counter();torch.zeros(1,device='cuda');print('cuda init', round(time.perf_counter()-t,3))"
echo "== AOTI probe"; timeout 400 python3 benchmarks/aoti_cuda_probe.py
if [ ! -f /tmp/probe2.pt2 ]; then timeout 200 python3 benchmarks/aoti_cuda_probe2.py build >/dev/null 2>&1; fi
timeout 100 python3 -X faulthandler benchmarks/aoti_cuda_probe2.py A 2>&1 | tail -3
echo "== cuda-gdb"; timeout 120 cuda-gdb -batch -ex run -ex bt --args python3 benchmarks/aoti_cuda_probe2.py A 2>&1 | grep -v -E "^\[New Thread|^\[Thread|Warn" | tail -40
