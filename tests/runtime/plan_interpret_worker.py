"""Run a plan artifact on the CPU with Triton's interpreter standing in for the GPU:
`python this.py ARTIFACT CHECKPOINT OUT.pt` (TRITON_INTERPRET=1 must be set before Triton is
imported, hence a process of its own).

Every launch first goes through the artifact's cubin table, exactly as on a GPU (it must find
a cubin whose specialization the arguments satisfy), then runs the kernel in the interpreter.
The same prompts run through the eager reference model; both runs' logits are saved, per step.
"""

import os
import sys
from pathlib import Path

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"

import torch  # noqa: E402
import triton  # noqa: E402, F401  (before the plan loads: its kernels are Triton's, not host-only)

from model_defs.kv_cache import allocate_kv_caches  # noqa: E402
from model_defs.loader import load_model  # noqa: E402
from model_defs.registry import read_config  # noqa: E402
from model_defs.step_inputs import StepSeq  # noqa: E402
from runtime.cubin_launcher import CubinTable  # noqa: E402
from runtime.loaders import read_artifact  # noqa: E402
from runtime.loaders.plan import PlanLoader  # noqa: E402
from runtime.model_runner import ModelRunner  # noqa: E402

BLOCK, NUM_BLOCKS = 16, 32
LAUNCHES: list[str] = []  # cubin ids chosen, in launch order


def interpreter_launcher(folder: Path, ids: list[str], device: torch.device):
    import triton.language as tl

    table = CubinTable.from_folder(folder, ids)

    def launch(fn, grid, *args, num_warps, num_stages, **kwargs):
        meta, _ = table.select(fn, args, num_warps, num_stages)
        LAUNCHES.append(meta["id"])
        if "libdevice" in fn.fn.__globals__:  # the interpreter has no libdevice; tl.math has
            fn.fn.__globals__["libdevice"] = tl.math  # the same functions
        fn[tuple(grid)](*args, num_warps=num_warps, num_stages=num_stages)

    return launch


def greedy(runner: ModelRunner, prompts: list[list[int]], steps: int) -> list[torch.Tensor]:
    """Prefill every prompt in one mixed step, then `steps` decode steps of all of them and
    one of the first alone (T=1); returns each step's logits."""
    tables = [[2 * i, 2 * i + 1] for i in range(len(prompts))]
    batch = [StepSeq(p, 0, t, True) for p, t in zip(prompts, tables)]
    out = [runner.execute(batch)]
    lengths = [len(p) for p in prompts]
    for _ in range(steps):
        tokens = out[-1].argmax(-1).tolist()
        batch = [StepSeq([tok], n, t, True) for tok, n, t in zip(tokens, lengths, tables)]
        out.append(runner.execute(batch))
        lengths = [n + 1 for n in lengths]
    tok = int(out[-1][0].argmax())
    out.append(runner.execute([StepSeq([tok], lengths[0], tables[0], True)]))
    return out


def main(artifact_dir: str, checkpoint: str, out_path: str) -> None:
    torch.manual_seed(0)
    _, cfg = read_config(Path(checkpoint))
    model = load_model(Path(checkpoint), torch.float32, "cpu")
    loader = PlanLoader(read_artifact(Path(artifact_dir)), launcher_factory=interpreter_launcher)
    forward = loader.load(model, {})
    prompts = [[5, 17, 3, 99, 42], [7, 8, 9, 10, 11, 12, 13, 14, 15]]
    results = {}
    heavy = ("helion", "torch._inductor", "transformers", "passes", "lowering")
    for name, fwd, logits in (("plan", forward, forward.compute_logits),
                              ("reference", model, model.compute_logits)):  # fmt: skip
        kv = allocate_kv_caches(cfg, NUM_BLOCKS, BLOCK, torch.float32, "cpu")
        runner = ModelRunner(fwd, logits, kv, BLOCK, "cpu")
        results[name] = greedy(runner, prompts, steps=3)
        if name == "plan":  # what loading and running the plan imported
            results["imported"] = sorted(m for m in heavy if m in sys.modules)
    results["launches"] = list(LAUNCHES)
    torch.save(results, out_path)


if __name__ == "__main__":
    main(*sys.argv[1:4])
