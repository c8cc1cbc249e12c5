"""benchmarks/fp8_quality.py: what its agreement, cosine and speed ratios count (the engines
themselves need a GPU)."""

from __future__ import annotations

import pytest
import torch

from benchmarks.fp8_quality import agreement, compare


def test_agreement_counts_equal_positions_and_the_common_prefix():
    bf16 = [[1, 2, 3, 4], [5, 6, 7, 8]]
    fp8 = [[1, 2, 9, 4], [0, 6, 7, 8]]
    assert agreement(fp8, bf16) == {"token_agreement": 6 / 8, "mean_common_prefix": 1.0}


def test_compare_reports_cosine_and_fp8_over_bf16_itl_per_batch():
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    outputs = {
        "bf16": ([[1, 2]], logits),
        "fp8": ([[1, 2]], torch.tensor([[1.0, 0.0], [1.0, 1.0]])),
    }
    runs = {
        "bf16": {
            "bench": [{"batch_size": 1, "itl_p50_ms": 5.0}, {"batch_size": 32, "itl_p50_ms": 8.0}]
        },
        "fp8": {
            "bench": [{"batch_size": 1, "itl_p50_ms": 4.0}, {"batch_size": 32, "itl_p50_ms": 8.8}]
        },
    }
    res = compare(runs, outputs, 1, 2)
    assert res["token_agreement"] == 1.0
    assert res["logit_cosine_min"] == pytest.approx(2**-0.5)
    assert res["logit_cosine_mean"] == pytest.approx((1 + 2**-0.5) / 2)
    assert res["fp8_over_bf16_itl"] == pytest.approx({"bs1": 0.8, "bs32": 1.1})
