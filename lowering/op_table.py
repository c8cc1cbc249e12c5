"""What an artifact runs per IR op: the implementation lowering put into it and its kernels.

`runnable_impls` decides, per op, what a GPU artifact can run: the dispatch table's choice
when that implementation has an in-graph form (lowering traces its kernels into the package),
else the reference (inlined, Inductor generates its code). `op_table` turns what lowering
recorded into the manifest's per-op rows; `kiln compile --json` prints them.
"""

from __future__ import annotations

from collections import Counter

REFERENCE = "reference"


def in_graph_form(op: str, provider: str):
    """The in-graph form of `op`'s `provider` implementation, or None."""
    from ir.registry import get_op

    impl = next((i for i in get_op(op).impls if i.provider == provider), None)
    return None if impl is None else impl.in_graph


def runnable_impls(ops, target) -> tuple[dict[str, str], dict[str, str]]:
    """({op: provider that will run}, {op: why the reference runs}) in an artifact for
    `target`. A CPU package calls the chosen host implementation through the dispatcher; a GPU
    artifact runs a kernel only through its in-graph form."""
    from ir.registry import choose

    runnable, why = {}, {}
    for op in sorted(ops):
        choice = choose(op, target)
        provider = choice.chosen.provider
        needs_form = target.device_type != "cpu"
        if provider != REFERENCE and needs_form and in_graph_form(op, provider) is None:
            why[op] = f"{provider} implementation has no in-graph form"
            provider = REFERENCE
        elif provider == REFERENCE:
            rejected = "; ".join(f"{p}: {w}" for p, w in choice.rejected)
            why[op] = rejected or "no kernel exists for this op"
        runnable[op] = provider
    return runnable, why


def op_table(
    counts: Counter,
    runnable: dict[str, str],
    launches: dict[str, list[tuple[str, ...]]],
    calls: list[str],
    why_reference: dict[str, str],
) -> list[dict]:
    """One row per IR op of the graph: op, count, implementation, kernels, how it runs.

    `launches[op]` holds, per traced call, the kernels its in-graph form launched (a
    "reference: why" entry where it fell back); `calls` are ops the package calls through the
    dispatcher; every other op was inlined as its reference."""
    rows = []
    for op in sorted(counts):
        per_call = launches.get(op, [])
        names = sorted({n for call in per_call for n in call if not n.startswith(REFERENCE)})
        fallbacks = sorted({n.split(": ", 1)[1] for c in per_call for n in c if ": " in n})
        row = {"op": op, "count": counts[op], "implementation": runnable[op], "kernels": names}
        if per_call:
            row["runs"] = "in graph"
        elif op in calls:
            row["runs"] = "dispatcher call"
            row["kernels"] = [f"{op} ({runnable[op]})"]
        else:
            row["runs"] = "inlined reference"
            row["implementation"] = REFERENCE
        if fallbacks:  # some calls took the reference inside the in-graph form
            row["implementation"] = f"{runnable[op]} + reference" if names else REFERENCE
            row["why_reference"] = "; ".join(fallbacks)
        elif row["implementation"] == REFERENCE and op in why_reference:
            row["why_reference"] = why_reference[op]
        rows.append(row)
    return rows


def kernel_counts(rows: list[dict], generated: str | None = "inductor") -> dict[str, int]:
    """{provider: distinct kernels} the package runs or calls (+ Inductor's generated code)."""
    kernels: dict[str, set] = {}
    for row in rows:
        if row["runs"] in ("in graph", "dispatcher call"):
            provider = row["implementation"].split(" + ")[0]
            kernels.setdefault(provider, set()).update(row["kernels"])
    counts = {p: len(k) for p, k in sorted(kernels.items()) if k}
    return {generated: 1, **counts} if generated else counts
