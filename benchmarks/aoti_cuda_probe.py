"""Probe: does an AOTInductor CUDA package with a kiln custom op load on this host?

Runs three tiny packages (plain, kiln.rms_norm, kiln.attention with a mutated cache input),
each compiled and then loaded in a fresh subprocess, and prints which ones load and run.
"""

import subprocess
import sys

import torch

CASE = sys.argv[1] if len(sys.argv) > 1 else None


def build(case: str, path: str) -> None:
    import ir.ops  # noqa: F401

    class M(torch.nn.Module):
        def forward(self, x, w, cache):
            if case == "plain":
                return (x * w).sum(-1, keepdim=True) + x
            if case == "rms":
                return torch.ops.kiln.rms_norm(x, w, 1e-5)
            cache.add_(1.0)  # an input mutated in place, like the KV cache
            return x + cache.sum()

    args = (
        torch.randn(5, 64, device="cuda"),
        torch.randn(64, device="cuda"),
        torch.zeros(4, device="cuda"),
    )
    ep = torch.export.export(M(), args, strict=False)
    torch._inductor.aoti_compile_and_package(ep, package_path=path)


def load(path: str) -> None:
    import ir.ops  # noqa: F401

    runner = torch._inductor.aoti_load_package(path)
    out = runner(
        torch.randn(5, 64, device="cuda"),
        torch.randn(64, device="cuda"),
        torch.zeros(4, device="cuda"),
    )
    print("ran", out[0].shape if isinstance(out, (list, tuple)) else out.shape)


if __name__ == "__main__":
    if CASE is None:
        for case in ("plain", "rms", "mutate"):
            p = f"/tmp/probe_{case}.pt2"
            b = subprocess.run(
                [sys.executable, __file__, "build", case, p], capture_output=True, text=True
            )
            r = subprocess.run(
                [sys.executable, __file__, "load", case, p], capture_output=True, text=True
            )
            print(
                case,
                "build rc",
                b.returncode,
                "load rc",
                r.returncode,
                r.stdout.strip(),
                (b.stderr + r.stderr).strip().splitlines()[-1:]
                if (b.returncode or r.returncode)
                else "",
            )
    elif CASE == "build":
        build(sys.argv[2], sys.argv[3])
    else:
        load(sys.argv[3])
