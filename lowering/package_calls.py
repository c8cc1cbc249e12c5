"""Which IR ops a compiled AOTInductor package calls through the dispatcher, read from the
package itself, and the check that an artifact's manifest says the same.

AOTInductor serializes every call it leaves to a custom op (a "proxy executor" node) into the
package's `*.wrapper.json` as `{"node": {"target": "kiln::attention", ...}}`; those are the
calls the runtime must bind implementations for. The manifest's `calls` is copied from here
when the artifact is built, and `check_manifest_calls` compares the two for any artifact.
"""

from __future__ import annotations

import json
import zipfile
from collections import Counter
from pathlib import Path

from compile_cache.formats import AOTI, AOTI_PIECEWISE, PLAN
from kiln.errors import KilnError

NAMESPACE = "kiln::"


def package_calls(package: Path) -> dict[str, int]:
    """{IR op: number of calls} the package's generated code makes into `torch.ops.kiln`."""
    counts: Counter = Counter()
    with zipfile.ZipFile(package) as archive:
        for name in archive.namelist():
            if not name.endswith(".wrapper.json"):
                continue
            for node in json.loads(archive.read(name)).get("nodes", []):
                target = node.get("node", {}).get("target", "")
                if target.startswith(NAMESPACE):
                    counts[target.removeprefix(NAMESPACE).split(".")[0]] += 1
    return dict(sorted(counts.items()))


def artifact_calls(artifact_dir: Path, manifest: dict) -> list[str] | None:
    """The IR ops an AOTInductor artifact's packages call (one package, or one per distinct
    piece); None for other kinds."""
    if manifest.get("lowering") == AOTI:
        packages = [manifest["package"]]
    elif manifest.get("lowering") == AOTI_PIECEWISE:
        packages = [piece["package"] for piece in manifest["pieces"].values()]
    else:
        return None
    return sorted({op for p in packages for op in package_calls(Path(artifact_dir) / p)})


def check_manifest_calls(artifact_dir: Path, manifest: dict) -> None:
    """Raise KilnError unless the manifest's `calls` are exactly the ops its packages call
    (a plan artifact: unless its table is what its plan runs, `check_plan`)."""
    if manifest.get("lowering") == PLAN:
        check_plan(artifact_dir, manifest)
        return
    actual = artifact_calls(artifact_dir, manifest)
    if actual is None:
        return
    recorded = sorted(manifest.get("calls", []))
    if actual != recorded:
        raise KilnError(
            f"artifact {Path(artifact_dir).name[:12]}: its manifest says the package calls "
            f"{recorded or 'no IR op'}, but the package calls {actual or 'none'}; the runtime "
            f"binds kernels from the manifest, so recompile it (kiln cache rm, kiln compile)"
        )


def check_plan(artifact_dir: Path, manifest: dict) -> None:
    """Raise KilnError unless a plan artifact's manifest names exactly what it contains: the
    per-op table's implementation and kernels are what plan.json runs, and every cubin the
    plan launches (specialized or generic) is a file of the artifact."""
    import json

    root = Path(artifact_dir)
    plan = json.loads((root / manifest["plan_file"]).read_text())
    runs: dict[str, tuple[set, set]] = {}
    launched: set[str] = set()
    for entry in plan["entries"]:
        if "op" not in entry:
            continue
        providers, kernels = runs.setdefault(entry["op"], (set(), set()))
        providers.add(entry["provider"])
        kernels.update(entry.get("kernels", []))
        launched.update(i for ids in entry.get("launches", []) for i in ids)
    problems = []
    for row in manifest["ops"]:
        providers, kernels = runs.pop(row["op"], (set(), set()))
        if providers != {row["implementation"]}:
            problems.append(
                f"{row['op']} runs {sorted(providers)}, the table says {row['implementation']}"
            )
        if row["runs"] == "cubin" and set(row["kernels"]) != kernels:
            problems.append(
                f"{row['op']} launches {sorted(kernels)}, the table says {row['kernels']}"
            )
    problems += [f"{op} is in the plan but not in the table" for op in sorted(runs)]
    listed = {Path(p).stem for p in manifest["cubins"]}
    problems += [f"cubin {i} is launched but not listed" for i in sorted(launched - listed)]
    problems += [f"cubin {i} is listed but missing" for i in sorted(listed)
                 if not (root / "kernels" / f"{i}.cubin").is_file()]  # fmt: skip
    if problems:
        raise KilnError(
            f"artifact {root.name[:12]}: its manifest disagrees with its plan ({'; '.join(problems)}); "
            "recompile it (kiln cache rm, kiln compile)"
        )
