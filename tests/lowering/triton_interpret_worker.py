"""Run plain kernel sources in Triton's CPU interpreter: `python this.py JOBS.pt RESULTS.pt`.

A separate process because TRITON_INTERPRET=1 must be set before triton is imported (the
stdlib's own @jit functions are wrapped at import) and Helion refuses to run with it set.
Each job is (name, source_path, entry, args); each result is (outputs, args after the call).
"""

import importlib.util
import os
import sys

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"

import torch  # noqa: E402


def run(path: str, entry: str, args: tuple):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if hasattr(module, "libdevice"):
        # The interpreter has no libdevice (extern calls come back None); tl.math has the same
        # functions (rsqrt, exp, ...) and is interpreted. Compiled cubins keep libdevice.
        import triton.language as tl

        module.libdevice = tl.math
    return getattr(module, entry)(*args)


def main(jobs_path: str, results_path: str) -> None:
    results = {}
    for name, path, entry, args in torch.load(jobs_path, weights_only=False):
        outputs = run(path, entry, args)
        results[name] = (outputs, args)
    torch.save(results, results_path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
