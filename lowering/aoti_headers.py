"""AOTInductor's runtime headers, with `parse_device_str` made regex-free.

With torch 2.11 built by g++ 13.3 (the GPU image Kiln runs on) every AOTInductor CUDA package
crashes while it loads: the model constructor parses its device string with `std::regex`, and
the regex compiler faults inside a locale facet lookup (`regex_traits::transform_primary`),
even for a one-op model.
Parsing "cuda" or "cuda:1" needs no regex. At compile time Kiln copies the installed
`aoti_runtime` headers into its cache, replaces that one function, and puts the copy first on
the include path, so the package it builds has no regex on its load path. Nothing else in the
headers changes, and the copy is rebuilt whenever torch's own header changes.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import torch

from kiln.errors import KilnError

HEADER = "torch/csrc/inductor/aoti_runtime/model_base.h"
SIGNATURE = "inline void parse_device_str("

# Same contract as the original: "cpu" | "cuda" | "xpu" | "mps", optionally ":<index>";
# device_idx is -1 when no index is given; anything else fails the runtime check.
REPLACEMENT = r"""inline void parse_device_str(
    const std::string& device_str,
    int32_t& device_type,
    int32_t& device_idx) {
  const auto colon = device_str.find(':');
  const std::string kind = device_str.substr(0, colon);
  if (kind == "cpu") {
    device_type = aoti_torch_device_type_cpu();
  } else if (kind == "cuda") {
    device_type = aoti_torch_device_type_cuda();
#ifdef USE_XPU
  } else if (kind == "xpu") {
    device_type = aoti_torch_device_type_xpu();
#endif
#ifdef USE_MPS
  } else if (kind == "mps") {
    device_type = aoti_torch_device_type_mps();
#endif
  } else {
    AOTI_RUNTIME_CHECK(false, "Invalid device: " + device_str);
  }
  device_idx = -1;
  if (colon != std::string::npos) {
    const std::string index = device_str.substr(colon + 1);
    AOTI_RUNTIME_CHECK(
        !index.empty() &&
            index.find_first_not_of("0123456789") == std::string::npos,
        "Invalid device: " + device_str);
    device_idx = std::stoi(index);
  }
}

// The original, renamed and unused (it compiles a regular expression).
inline void kiln_unused_parse_device_str_regex("""


def torch_include_dir() -> Path:
    return Path(torch.__file__).parent / "include"


def patched_include_dir(root: Path) -> Path:
    """A folder holding the patched aoti_runtime headers, to go first on the include path."""
    source_dir = torch_include_dir() / Path(HEADER).parent
    original = (torch_include_dir() / HEADER).read_text()
    if original.count(SIGNATURE) != 1:
        raise KilnError(
            f"torch {torch.__version__}'s {HEADER} no longer has exactly one {SIGNATURE!r}; "
            "update lowering/aoti_headers.py"
        )
    digest = hashlib.sha256((original + REPLACEMENT).encode()).hexdigest()[:16]
    out = root / f"aoti-headers-{digest}"
    target_dir = out / Path(HEADER).parent
    if (target_dir / Path(HEADER).name).is_file():
        return out
    tmp = root / f".aoti-headers-{digest}.tmp"
    tmp_dir = tmp / Path(HEADER).parent
    tmp_dir.mkdir(parents=True, exist_ok=True)
    for f in source_dir.iterdir():
        if f.is_file():
            (tmp_dir / f.name).write_bytes(f.read_bytes())
    (tmp_dir / Path(HEADER).name).write_text(original.replace(SIGNATURE, REPLACEMENT, 1))
    with contextlib.suppress(OSError):  # a concurrent compile may have published it already
        tmp.rename(out)
    if not (target_dir / Path(HEADER).name).is_file():
        raise KilnError(f"could not write patched AOTInductor headers under {root}")
    return out


@contextlib.contextmanager
def regex_free_aoti_runtime(root: Path):
    """While active, AOTInductor builds include the patched headers before torch's own."""
    from torch._inductor import cpp_builder

    include = str(patched_include_dir(root))
    original = cpp_builder._get_torch_related_args

    def with_patched_headers(*args, **kwargs):
        include_dirs, *rest = original(*args, **kwargs)
        return ([include, *include_dirs], *rest)

    cpp_builder._get_torch_related_args = with_patched_headers
    try:
        yield include
    finally:
        cpp_builder._get_torch_related_args = original
