"""Model families keyed by HF `architectures`, and checkpoint-folder resolution."""

from __future__ import annotations

import json
from pathlib import Path

from kiln.errors import KilnError
from model_defs import llama, mistral, qwen2, qwen3
from model_defs.config import ModelConfig
from model_defs.family import ModelFamily

FAMILIES: dict[str, ModelFamily] = {
    arch: fam.FAMILY for fam in (llama, mistral, qwen2, qwen3) for arch in fam.FAMILY.architectures
}


def supported_architectures() -> list[str]:
    return sorted(FAMILIES)


def resolve_model_path(model: str | Path) -> Path:
    """A checkpoint folder, or `demo` for the embedded default model."""
    if str(model) == "demo":
        from model_defs.demo import ensure_demo_checkpoint

        return ensure_demo_checkpoint()
    path = Path(model).expanduser()
    if not path.is_dir():
        raise KilnError(
            f"model {str(model)!r} is not a checkpoint folder (or 'demo' for the embedded model)"
        )
    return path


def read_config(path: Path) -> tuple[ModelFamily, ModelConfig]:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise KilnError(f"{path} has no config.json; a HF checkpoint folder is expected")
    try:
        raw = json.loads(config_file.read_text())
    except json.JSONDecodeError as e:
        raise KilnError(f"{config_file} is not valid JSON: {e}") from None
    archs = raw.get("architectures") or []
    family = next((FAMILIES[a] for a in archs if a in FAMILIES), None)
    if family is None:
        raise KilnError(
            f"unsupported architecture {archs or '(none given)'} in {config_file}; "
            f"supported: {', '.join(supported_architectures())}"
        )
    return family, family.parse(raw)
