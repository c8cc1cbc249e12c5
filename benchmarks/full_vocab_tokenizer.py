"""Give a shape checkpoint a tokenizer that covers its whole vocabulary.

Shape checkpoints carry the demo's 512-entry tokenizer while their models emit ids up to
`vocab_size`; ids the tokenizer lacks decode to nothing. Serving benchmarks should also run
with every id decoding to text, as a real model's do: this writes DST with links to SRC's
files and a tokenizer.json whose byte-level BPE vocabulary gains one word per missing id
(" w<id>"; no merge produces them, so encoding is unchanged).

    python benchmarks/full_vocab_tokenizer.py /tmp/ckpt-llama3.2-1b /tmp/ckpt-llama3.2-1b-fullvocab
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SPACE = "\u0120"  # byte-level BPE's spelling of " "


def widen(src: Path, dst: Path) -> int:
    """Write DST; returns how many ids were added to the tokenizer."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        link = dst / f.name
        if f.name != "tokenizer.json" and not link.exists():
            link.symlink_to(f.resolve())
    tok = json.loads((src / "tokenizer.json").read_text())
    vocab_size = json.loads((src / "config.json").read_text())["vocab_size"]
    vocab = tok["model"]["vocab"]
    # Special tokens join the model vocabulary at their ids: `tokenizers` renumbers added
    # tokens that the model vocabulary lacks to follow it, which would move them.
    vocab.update({a["content"]: a["id"] for a in tok.get("added_tokens", [])})
    missing = sorted(set(range(vocab_size)) - set(vocab.values()))
    vocab.update({f"{SPACE}w{i}": i for i in missing})
    (dst / "tokenizer.json").write_text(json.dumps(tok))
    return len(missing)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[-1])
    print(f"added {widen(Path(sys.argv[1]), Path(sys.argv[2]))} ids")
