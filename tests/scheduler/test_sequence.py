"""Sequence: validation, token views, and that the scheduler package stays torch-free."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kiln.errors import KilnError
from scheduler import Sequence, SequenceStatus


def test_all_tokens_are_prompt_then_outputs_and_prompt_is_copied():
    prompt = [11, 12, 13]
    seq = Sequence("r1", prompt, max_tokens=4)
    prompt.append(99)
    seq.output_token_ids += [21, 22]
    assert seq.all_token_ids == [11, 12, 13, 21, 22]
    assert (seq.num_prompt_tokens, seq.num_tokens) == (3, 5)
    assert seq.num_uncomputed_tokens == 5
    assert seq.status is SequenceStatus.WAITING and seq.arrival is None
    assert seq.finish_reason is None and not seq.is_finished


@pytest.mark.parametrize(
    ("prompt", "max_tokens", "match"), [([], 4, "prompt is empty"), ([5], 0, "max_tokens=0")]
)
def test_bad_requests_raise_kiln_error(prompt, max_tokens, match):
    with pytest.raises(KilnError, match=match):
        Sequence("r1", prompt, max_tokens=max_tokens)


def test_scheduler_package_does_not_import_torch():
    code = "import sys, scheduler; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_token_ids_slices_prompt_then_outputs_without_joining_them():
    seq = Sequence("s", [1, 2, 3], max_tokens=8)
    seq.output_token_ids.extend([4, 5])
    every = seq.all_token_ids
    for start in range(6):
        for stop in range(start, 7):
            assert seq.token_ids(start, stop) == every[start:stop], (start, stop)
