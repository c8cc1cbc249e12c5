"""Every code block in the pass and kernel guides is quoted from a file the tests exercise.

A python block starts with `# <path>` and the rest must appear verbatim in that file; a json
block must equal the config file named just above it; `$ kiln ...` lines must parse.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ("docs/writing-a-pass.md", "docs/writing-a-kernel.md")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def _blocks(doc: str) -> list[tuple[str, str, str]]:
    """(language, body, text before the block) for every fenced block."""
    text = (ROOT / doc).read_text()
    return [(m.group(1), m.group(2), text[: m.start()]) for m in FENCE.finditer(text)]


@pytest.mark.parametrize("doc", DOCS)
def test_python_blocks_are_quoted_from_their_files(doc):
    blocks = [b for lang, b, _ in _blocks(doc) if lang == "python"]
    assert len(blocks) >= 3
    for body in blocks:
        first, _, code = body.partition("\n")
        assert first.startswith("# "), f"{doc}: a python block must start with '# <path>'"
        path = ROOT / first[2:].strip()
        assert path.is_file(), f"{doc}: {path} does not exist"
        assert code.strip() in path.read_text(), f"{doc}: block is not in {path}:\n{code}"


@pytest.mark.parametrize("doc", DOCS)
def test_every_block_is_checked(doc):
    assert {lang for lang, _, _ in _blocks(doc)} <= {"python", "json", "text"}


@pytest.mark.parametrize("doc", DOCS)
def test_json_blocks_equal_the_config_named_above(doc):
    for lang, body, before in _blocks(doc):
        if lang == "json":
            path = re.findall(r"([\w/.-]+\.json)", before.strip().splitlines()[-1])[-1]
            assert json.loads(body) == json.loads((ROOT / path).read_text()), path


@pytest.mark.parametrize("doc", DOCS)
def test_kiln_commands_parse(doc):
    from kiln.cli import build_parser

    commands = [
        line[2:] for lang, body, _ in _blocks(doc) if lang == "text"
        for line in body.splitlines() if line.startswith("$ kiln ")
    ]  # fmt: skip
    for command in commands:
        build_parser().parse_args(shlex.split(command)[1:])
