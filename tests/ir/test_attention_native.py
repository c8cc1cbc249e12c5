"""The CPU attention implementation equals the IR reference on random paged batches."""

import pytest
import torch
from op_cases import MIXED_BATCH, make_paged_case

from ir.impls.attention_native import attention as native
from ir.ops.attention import attention as ref_op


@pytest.mark.parametrize("window", [0, 3])
@pytest.mark.parametrize(
    "batch", [MIXED_BATCH, ((9, 1), (4, 1), (17, 1)), ((6, 6),), ((1, 1),), ((20, 3), (2, 1))]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_native_attention_matches_reference(batch, window, dtype):
    torch.manual_seed(len(batch) * 7 + window)
    case = make_paged_case(
        batch, num_heads=4, num_kv_heads=2, head_size=16, block_size=4, dtype=dtype
    )
    scale = 16**-0.5
    args_ref, args_new = case.args(scale, window), case.args(scale, window)
    expected = ref_op.reference(*args_ref)
    got = native(*args_new)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got, expected, atol=tol, rtol=tol)
    torch.testing.assert_close(args_new[3], args_ref[3])  # same KV written
    torch.testing.assert_close(args_new[4], args_ref[4])
