"""`kiln generate` and `kiln ops` from the command line, including every user error."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kiln.cli import main


def kiln(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kiln", *args],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=300,
    )


def test_generate_json_round_trips_prompt():
    proc = kiln("generate", "demo", "--prompt", "héllo ✓", "--max-tokens", "16", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) == {"prompt_token_ids", "token_ids", "text"}
    assert len(out["token_ids"]) <= 16 and out["token_ids"]
    from model_defs.demo import ensure_demo_checkpoint
    from runtime.startup import load_tokenizer

    tok = load_tokenizer(ensure_demo_checkpoint())
    assert tok.decode(out["prompt_token_ids"], skip_special_tokens=True) == "héllo ✓"
    assert tok.decode(out["token_ids"]).startswith(out["text"][:1])


def test_batch_in_prompt_order_and_equal_to_alone(capsys, tmp_path):
    prompts = ["one", "a much longer prompt than the others", "3"]
    file = tmp_path / "p.jsonl"
    file.write_text("\n".join(json.dumps(p) for p in prompts[1:]) + "\n")
    assert (
        main(
            [
                "generate",
                "--prompt",
                prompts[0],
                "--prompts-file",
                str(file),
                "--max-tokens",
                "8",
                "--json",
            ]
        )
        == 0
    )
    batched = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(batched) == 3
    for prompt, got in zip(prompts, batched):
        assert main(["generate", "--prompt", prompt, "--max-tokens", "8", "--json"]) == 0
        alone = json.loads(capsys.readouterr().out)
        assert alone == got


@pytest.mark.parametrize(
    "args, message",
    [
        (["generate", "demo"], "no prompt given"),
        (["generate", "/no/such/model", "--prompt", "x"], "not a checkpoint folder"),
        (["generate", "--prompt", "x", "--temperature", "-1"], "temperature=-1.0 must be >= 0"),
        (["generate", "--prompt", "x", "--top-p", "0"], "top_p=0.0 must be in"),
        (["generate", "--prompt", "x", "--max-tokens", "0"], "max_tokens=0 must be >= 1"),
        (["generate", "--prompt", "x", "--prompts-file", "/no/file"], "does not exist"),
        (["generate", "--prompt", "x", "--max-tokens", "5000"], "exceeds the context length"),
        (["generate", "--prompt", "x", "--dtype", "int3"], "dtype='int3' is not supported"),
        (["generate", "--prompt", "x", "--kv-cache-memory", "1K"], "holds no block"),
    ],
)
def test_user_errors_are_reported(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err, err


def test_prompts_file_must_hold_json_strings(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('"ok"\n{"not": "a string"}\n')
    assert main(["generate", "--prompts-file", str(bad)]) == 2
    assert "bad.jsonl:2: each line must be one JSON string" in capsys.readouterr().err


def test_bad_size_flag_exits_nonzero(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--prompt", "x", "--kv-cache-memory", "lots"])
    assert exc.value.code != 0
    assert "bad size" in capsys.readouterr().err


def test_ops_lists_every_op(capsys):
    from ir.registry import all_ops

    assert main(["ops"]) == 0
    out = capsys.readouterr().out
    for op in all_ops():
        assert op.name in out
