"""The regex-free AOTInductor header copy: one function replaced, the rest unchanged.
(Every CPU package test compiles against it and runs its parser on "cpu" at load.)"""

from __future__ import annotations

from pathlib import Path

from lowering.aoti_headers import HEADER, SIGNATURE, patched_include_dir, torch_include_dir


def test_patched_headers_replace_only_the_device_parser(tmp_path):
    out = patched_include_dir(tmp_path)
    assert patched_include_dir(tmp_path) == out  # reused, not rebuilt
    original = (torch_include_dir() / HEADER).read_text()
    patched = (out / HEADER).read_text()
    head, tail = patched.split(SIGNATURE, 1)
    parser, renamed = tail.split("inline void kiln_unused_parse_device_str_regex(", 1)
    assert "std::regex" not in parser and "regex_match" not in parser
    assert "std::regex re(" in renamed  # the original, kept under another name
    assert head + SIGNATURE + renamed == original
    folder, copy = (torch_include_dir() / HEADER).parent, (out / HEADER).parent
    for f in folder.iterdir():
        if f.is_file() and f.name != Path(HEADER).name:
            assert (copy / f.name).read_bytes() == f.read_bytes()


def test_unknown_gpu_lowering_is_a_clear_error(monkeypatch):
    import pytest

    from ir.targets import get_target
    from kiln.errors import KilnError
    from lowering.compile import CompileOptions

    monkeypatch.setenv("KILN_GPU_LOWERING", "jit")
    assert CompileOptions().lookup_options(get_target("h100"))["gpu_lowering"] == "jit"
    monkeypatch.setenv("KILN_GPU_LOWERING", "fast")
    with pytest.raises(KilnError, match="KILN_GPU_LOWERING='fast': choose one of aoti, jit"):
        CompileOptions().lookup_options(get_target("h100"))
