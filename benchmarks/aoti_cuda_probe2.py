"""Probe 2: which way of loading an AOTInductor CUDA build works on this host?

A: the .pt2 package through torch._C._aoti.AOTIModelPackageLoader (segfaulted in probe 1);
B: the package unzipped by hand, its .so run by AOTIModelContainerRunnerCuda;
C: the same with the cubin folder given explicitly.
Each variant runs in its own subprocess; the exit code and last line are printed.
"""

import glob
import os
import subprocess
import sys
import zipfile

import torch

PKG = "/tmp/probe2.pt2"


def build() -> None:
    class M(torch.nn.Module):
        def forward(self, x, w):
            return (x * w).sum(-1, keepdim=True) + x

    args = (torch.randn(5, 64, device="cuda"), torch.randn(64, device="cuda"))
    ep = torch.export.export(M(), args, strict=False)
    torch._inductor.aoti_compile_and_package(ep, package_path=PKG)
    with zipfile.ZipFile(PKG) as z:
        z.extractall("/tmp/probe2")
        print("\n".join(n for n in z.namelist() if not n.endswith((".json",))))


def run(variant: str) -> None:
    x, w = torch.randn(5, 64, device="cuda"), torch.randn(64, device="cuda")
    if variant == "A":
        loader = torch._C._aoti.AOTIModelPackageLoader(PKG, "model", False, 1, -1)
        out = loader.boxed_run([x, w])
    else:
        so = glob.glob("/tmp/probe2/**/*.so", recursive=True)[0]
        cubin_dir = os.path.dirname(so) if variant == "C" else ""
        runner = torch._C._aoti.AOTIModelContainerRunnerCuda(so, 1, "cuda", cubin_dir)
        out = runner.run([x, w])
    ref = (x * w).sum(-1, keepdim=True) + x
    print("ok", variant, (out[0] - ref).abs().max().item())


if __name__ == "__main__":
    if len(sys.argv) > 1:
        build() if sys.argv[1] == "build" else run(sys.argv[1])
    else:
        b = subprocess.run([sys.executable, __file__, "build"], capture_output=True, text=True)
        print("build rc", b.returncode, b.stdout[-800:], b.stderr.strip().splitlines()[-1:])
        for v in ("A", "B", "C"):
            r = subprocess.run(
                [sys.executable, "-X", "faulthandler", __file__, v], capture_output=True, text=True
            )
            print(
                v, "rc", r.returncode, r.stdout.strip()[-200:], r.stderr.strip().splitlines()[-3:]
            )
