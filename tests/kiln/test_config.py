"""EngineConfig rejects bad values with a message naming the field and the fix."""

import pytest

from kiln.config import EngineConfig
from kiln.errors import KilnError


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"dtype": "int3"}, "dtype='int3' is not supported"),
        ({"device": "tpu"}, "device='tpu' is invalid"),
        ({"max_num_seqs": 0}, "max_num_seqs=0 must be >= 1"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization=1.5 must be in"),
        ({"compile": "sometimes"}, "compile='sometimes' is invalid"),
        ({"quantization": "int4"}, "quantization='int4' is not supported"),
        ({"tensor_parallel_size": 2}, "multi-GPU execution is not built yet"),
        ({"max_model_len": 1}, "max_model_len=1 must be >= 2"),
    ],
)
def test_bad_engine_config(kw, message):
    with pytest.raises(KilnError, match=message.replace("(", r"\(").replace(")", r"\)")):
        EngineConfig(**kw)
