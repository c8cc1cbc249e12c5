"""A checkpoint's `*.safetensors` files, read without torch: which files, and each file's header
(every tensor's dtype, shape and byte range).

The format: an 8-byte little-endian header length N, N bytes of JSON mapping each tensor name
to `{"dtype", "shape", "data_offsets": [begin, end]}` (offsets count from the first byte after
the header), then the data. Every entry is checked against the file's size and its dtype and
shape, so a truncated or corrupt shard is reported by name before any byte is copied.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from kiln.errors import KilnError

# Bytes per element of every dtype the format names.
DTYPE_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}  # fmt: skip
# The dtypes a weight may have (safetensors name -> torch name); a model converts on load.
WEIGHT_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}
MAX_HEADER_BYTES = 100 * 2**20  # the format's own limit


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a file: `offset` is absolute in the file, `nbytes` its data's length."""

    name: str
    dtype: str  # safetensors name: "BF16", "F32", ...
    shape: tuple[int, ...]
    offset: int
    nbytes: int


def safetensors_files(path: Path) -> list[Path]:
    """The weight files of checkpoint folder `path`: those its index names, else every one."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise KilnError(f"{index} is not a safetensors index (no weight_map): {e}") from None
        names = sorted(set(weight_map.values()))
        missing = [n for n in names if not (path / n).is_file()]
        if missing:
            raise KilnError(f"{index} names shards that are missing: {', '.join(missing)}")
        return [path / n for n in names]
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise KilnError(f"{path} has no *.safetensors weights (other formats are not supported)")
    return files


def read_header(file: Path) -> list[TensorEntry]:
    """Every tensor `file` holds, in header order, each checked against the file's size."""
    size = file.stat().st_size
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise KilnError(f"{file} is not a safetensors file ({size} bytes, no header)")
        (length,) = struct.unpack("<Q", head)
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise KilnError(
                f"{file} is not a safetensors file or is truncated: its header claims "
                f"{length} bytes, the file has {size}"
            )
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise KilnError(f"{file}: the safetensors header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise KilnError(f"{file}: the safetensors header is not a JSON object")
    data_start, data_len = 8 + length, size - 8 - length
    return [
        _entry(file, name, spec, data_start, data_len)
        for name, spec in header.items()
        if name != "__metadata__"
    ]


def _entry(file: Path, name: str, spec, data_start: int, data_len: int) -> TensorEntry:
    try:
        dtype, shape = spec["dtype"], tuple(int(d) for d in spec["shape"])
        begin, end = (int(o) for o in spec["data_offsets"])
    except (KeyError, TypeError, ValueError):
        raise KilnError(f"{file}: tensor {name!r} has a malformed header entry: {spec!r}") from None
    if dtype not in DTYPE_SIZES:
        raise KilnError(f"{file}: tensor {name!r} has unknown dtype {dtype!r}")
    want = math.prod(shape) * DTYPE_SIZES[dtype]
    if not 0 <= begin <= end <= data_len or end - begin != want or min(shape, default=0) < 0:
        raise KilnError(
            f"{file}: tensor {name!r} ({dtype} {list(shape)}, {want} bytes) has data offsets "
            f"[{begin}, {end}] outside the file's {data_len} data bytes or of the wrong size; "
            "the file is corrupt or truncated"
        )
    return TensorEntry(name, dtype, shape, data_start + begin, want)
