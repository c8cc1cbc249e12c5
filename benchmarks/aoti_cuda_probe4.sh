#!/usr/bin/env bash
# Probe 4: the AOTI CUDA crash is in the wrapper's std::regex (parse_device_str). Is it symbol
# interposition against libtorch's own regex instantiations? Try linking with -Bsymbolic.
set -u
TL=$(python3 -c "import torch,os;print(os.path.dirname(torch.__file__))")
echo "== g++ $(g++ -dumpfullversion); torch built with: $(python3 -c 'import torch;print(torch.__config__.show())' | grep -o 'GCC [0-9.]*' | head -1)"
echo "== libtorch regex exports"; nm -DC --defined-only $TL/lib/libtorch_cpu.so | grep -c "regex_traits"
echo "== pyc"; ls $TL/__pycache__ 2>/dev/null | head -2; ls -ld $TL
for i in 1 2; do /usr/bin/time -f "import torch (pycache prefix) %e s" env PYTHONPYCACHEPREFIX=/tmp/pyc python3 -c "import torch" 2>&1 | tail -1; done
/usr/bin/time -f "import torch %e s" python3 -c "import torch" 2>&1 | tail -1
cat > /tmp/gxx <<'W'
#!/bin/sh
exec g++ "$@" -Wl,-Bsymbolic
W
chmod +x /tmp/gxx
rm -rf /tmp/probe2 /tmp/probe2.pt2
echo "== default build, crash frames"
timeout 200 python3 benchmarks/aoti_cuda_probe2.py build >/dev/null 2>&1
SO=$(find /tmp/probe2 -name "*.so" | head -1)
nm -DC --defined-only "$SO" | grep -c regex_traits
timeout 120 cuda-gdb -batch -ex run -ex "bt 6" --args python3 benchmarks/aoti_cuda_probe2.py A 2>&1 | grep -E "^#|SIG" | cut -c1-220 | head -10
echo "== -Bsymbolic build"
rm -rf /tmp/probe2 /tmp/probe2.pt2 /tmp/torchinductor_root
CXX=/tmp/gxx timeout 200 python3 benchmarks/aoti_cuda_probe2.py build 2>&1 | tail -2
timeout 100 python3 -X faulthandler benchmarks/aoti_cuda_probe2.py A 2>&1 | tail -2
