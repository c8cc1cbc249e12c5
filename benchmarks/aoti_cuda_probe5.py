"""Probe 5: an AOTInductor CUDA package built against Kiln's regex-free runtime headers
(lowering/aoti_headers.py), loaded in a fresh process through the C++ package loader.
The model mutates an input in place, as Kiln's graphs do with the KV cache."""

import subprocess
import sys
import tempfile
from pathlib import Path

import torch

PKG = "/tmp/probe5.pt2"


def build() -> None:
    from lowering.aoti_headers import regex_free_aoti_runtime

    class M(torch.nn.Module):
        def forward(self, x, w, cache):
            cache.add_(1.0)
            return (x * w).sum(-1, keepdim=True) + x + cache.sum()

    args = (torch.randn(5, 64, device="cuda"), torch.randn(64, device="cuda"),
            torch.zeros(4, device="cuda"))  # fmt: skip
    ep = torch.export.export(M(), args, strict=False)
    with regex_free_aoti_runtime(Path(tempfile.mkdtemp())):
        torch._inductor.aoti_compile_and_package(ep, package_path=PKG)


def load() -> None:
    loader = torch._C._aoti.AOTIModelPackageLoader(PKG, "model", False, 1, 0)
    x, w, cache = (
        torch.randn(5, 64, device="cuda"),
        torch.randn(64, device="cuda"),
        torch.zeros(4, device="cuda"),
    )
    out = loader.boxed_run([x, w, cache])
    ref = (x * w).sum(-1, keepdim=True) + x + 4.0
    assert cache.eq(1.0).all(), cache
    print("AOTI_CUDA_OK", (out[0] - ref).abs().max().item())


if __name__ == "__main__":
    if sys.argv[1:] == ["build"]:
        build()
    elif sys.argv[1:] == ["load"]:
        load()
    else:
        for step in ("build", "load"):
            r = subprocess.run([sys.executable, __file__, step], capture_output=True, text=True)
            print(
                step,
                "rc",
                r.returncode,
                r.stdout.strip()[-300:],
                r.stderr.strip().splitlines()[-2:],
            )
