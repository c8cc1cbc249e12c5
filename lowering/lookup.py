"""What a compiled artifact is keyed by, and how a warm start finds it without capturing.

Two keys (docs/cache.md "Key factors" lists every field):
- the *content key* files the artifact: the captured graph's hash, the pass pipeline (each
  enabled pass's uuid) and its toggles, dtype, quantization, tensor parallelism, token budget,
  implementation choices, target, tool versions and a hash of Kiln's code generator. Weights
  are in it only when the artifact embeds tensors derived from them (fp8, zero-padded): then
  as the sha256 of the checkpoint's weight files' bytes.
- the *pre-key* is what a start can compute from `config.json` alone: the config fields that
  shape the graph, the compile options, target, versions and the code hash (plus
  `model_defs/`, which decides the graph). A compile files its pre-key as an alias of the
  content key, so a warm start reads one small file instead of capturing the model.
Same pre-key => same graph and passes => same content key, so the alias is safe to follow.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
# Kiln's code generator: what turns a captured graph into an artifact (folders and files): the
# artifact format and Inductor options, and how `auto` dtypes and option defaults resolve.
CODEGEN_DIRS = (
    "ir",
    "passes",
    "lowering",
    "compile_cache/formats.py",
    "compile_cache/triton_abi.py",
    "kiln/config.py",
)
# What turns a config into a captured graph (the content key has the graph's hash instead).
GRAPH_DIRS = ("model_defs",)
# Config fields that never reach the graph: a fine-tune with other special tokens hits.
CONFIG_NOT_IN_GRAPH = ("bos_token_id", "eos_token_ids")
_BLOCK = 64 << 20


def code_hash(folders: tuple[str, ...], memo_dir: Path | None = None) -> str:
    """sha256 over the code in `folders`: each `.py` file's AST without docstrings (so comments,
    docstrings and formatting do not count) and each `.json` file's parsed value.

    With `memo_dir`, the result is kept under the files' (name, size, mtime) signature, so a
    warm start pays a few stat calls instead of parsing the sources."""
    entries = [_ROOT / name for name in folders]
    files = [
        f
        for entry in entries
        for f in (sorted(entry.rglob("*")) if entry.is_dir() else [entry])
        if f.suffix in (".py", ".json") and "__pycache__" not in f.parts
    ]
    stat = hashlib.sha256()
    for f in files:
        s = f.stat()
        stat.update(f"{f.relative_to(_ROOT)}|{s.st_size}|{s.st_mtime_ns}\n".encode())
    memo = memo_dir / f"code-{stat.hexdigest()[:32]}" if memo_dir else None
    if memo is not None and memo.is_file():
        return memo.read_text().strip()
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(_ROOT).as_posix()}\n".encode())
        h.update(_normalized_source(f).encode())
    digest = h.hexdigest()
    if memo is not None:
        _write_atomic(memo, digest)
    return digest


def _normalized_source(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return json.dumps(json.loads(text), sort_keys=True)
    tree = ast.parse(text)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and _is_docstring(body[0]):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, include_attributes=False)


def _is_docstring(stmt: ast.stmt) -> bool:
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Constant)
        and isinstance(stmt.value.value, str)
    )


def weights_hash(path: Path, memo_dir: Path | None = None) -> str:
    """sha256 over the checkpoint's weight files' bytes (names and contents, not mtimes).

    Each file's digest is kept under its (path, size, mtime), so a warm start of an artifact
    that embeds derived weights hashes the weights once per change, and a `touch` costs one
    re-read that finds the same content."""
    from model_defs.checkpoint_files import safetensors_files

    files = safetensors_files(path)
    with ThreadPoolExecutor(min(len(files), os.cpu_count() or 1, 8)) as pool:
        digests = list(pool.map(lambda f: _file_digest(f, memo_dir), files))
    h = hashlib.sha256()
    for f, digest in zip(files, digests, strict=True):
        h.update(f"{f.name}:{digest}\n".encode())
    return h.hexdigest()


def _file_digest(path: Path, memo_dir: Path | None) -> str:
    s = path.stat()
    sig = f"{path.resolve()}|{s.st_size}|{s.st_mtime_ns}"
    memo = memo_dir / f"file-{hashlib.sha256(sig.encode()).hexdigest()[:32]}" if memo_dir else None
    if memo is not None and memo.is_file():
        return memo.read_text().strip()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
    if memo is not None:
        _write_atomic(memo, h.hexdigest())
    return h.hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def graph_config(path: Path) -> dict:
    """The config fields that shape the captured graph (special token ids excluded)."""
    from model_defs.registry import read_config

    _, cfg = read_config(path)
    fields = asdict(cfg)
    for name in CONFIG_NOT_IN_GRAPH:
        fields.pop(name)
    return fields


def pre_factors(path: Path, options: dict, target: dict, memo_dir: Path | None) -> dict:
    """The pre-key's factors: computable from config.json and the options, no capture."""
    from compile_cache import installed_versions

    return {
        "kind": "pre-key",
        "model_config": graph_config(path),
        "options": options,
        "target": target,
        "versions": installed_versions(),
        "code": {
            "codegen": code_hash(CODEGEN_DIRS, memo_dir),
            "model_defs": code_hash(GRAPH_DIRS, memo_dir),
        },
    }


def content_factors(pre: dict, graph: dict, weights: str | None) -> dict:
    """The content key's factors. `graph`: graph_hash, passes (name, uuid per enabled pass),
    impls; `weights`: the checkpoint weights' hash when the artifact embeds derived weights."""
    options = pre["options"]
    return {
        "graph_hash": graph["graph_hash"],
        "architecture": pre["model_config"]["architecture"],
        "dtype": options["dtype"],
        "quantization": options["quantization"],
        "tensor_parallel_size": options["tensor_parallel_size"],
        "max_num_tokens": options["max_num_tokens"],
        "lowering": options["lowering"],
        "gpu_lowering": options["gpu_lowering"],
        "pass_toggles": options["passes"],
        "passes": graph["passes"],
        "impls": graph["impls"],
        "target": pre["target"],
        "versions": pre["versions"],
        "codegen": pre["code"]["codegen"],
        "weights": weights or "not embedded",
    }


def weights_alias(pre_key: str, weights: str) -> str:
    """The alias name of a pre-key for one checkpoint's weights (artifacts that embed them)."""
    return hashlib.sha256(f"{pre_key}:{weights}".encode()).hexdigest()


def find_artifact(store, pre_key: str, checkpoint: Path):
    """The cached artifact a pre-key's alias leads to, or None (no capture, no import of the
    pass machinery). An alias marked `weights` leads on through the checkpoint's weights."""
    alias = store.alias(pre_key)
    if alias is None:
        return None
    if alias.get("weights"):
        alias = store.alias(weights_alias(pre_key, weights_hash(checkpoint, store.memo_dir)))
        if alias is None:
            return None
    return store.get(alias["key"])
