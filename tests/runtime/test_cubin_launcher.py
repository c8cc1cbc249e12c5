"""The cubin launcher on the CPU, libcuda stubbed (`tests/runtime/fake_cuda.py`): the cubin table
picks the most specialized cubin a launch satisfies and names the mismatch when none does; a
launch packs the chosen cubin's parameters as its ABI says and goes on the current stream; the
memo of a launch site still picks, every launch, the cubin the launch's own sizes, pointers and
dtypes allow, and still refuses a launch no cubin takes."""

from __future__ import annotations

import ctypes

import pytest
import torch
import triton
import triton.language as tl

from kiln.errors import KilnError
from runtime.cubin_launcher import CubinLauncher, CubinTable
from tests.runtime.fake_cuda import RecordingDriver


@triton.jit
def _axpy(x, y, out, n, alpha, stride, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = i < n
    tl.store(out + i * stride, alpha * tl.load(x + i, mask=m) + tl.load(y + i, mask=m), mask=m)


def _meta(cubin_id: str, specialization: dict, **overrides) -> dict:
    from compile_cache.triton_abi import source_hash

    signature = {"x": "*fp32", "y": "*fp32", "out": "*fp32", "n": "i32", "alpha": "fp32",
                 "stride": "i32", "BLOCK": "constexpr"}  # fmt: skip
    constexprs = {"BLOCK": 64}
    if specialization.get("stride") == "one":
        signature["stride"], constexprs["stride"] = "constexpr", 1
    meta = {
        "id": cubin_id, "fn": "_axpy", "source_hash": source_hash(_axpy), "num_warps": 4,
        "num_stages": 2, "signature": signature, "constexprs": constexprs,
        "specialization": specialization, "scratch_params": ["global", "profile"],
        "global_scratch_size": 0, "profile_scratch_size": 0, "shared": 0,
        "kernel_name": f"_axpy_{cubin_id}",
    }  # fmt: skip
    return {**meta, **overrides}


SPECIAL = {"x": "div16", "y": "div16", "out": "div16", "n": "div16", "stride": "one"}
# The kinds of each cubin's parameters as launched: the special one has stride == 1 built in;
# both end with the two scratch pointers the build's Triton appends.
SPECIAL_KINDS = ["ptr", "ptr", "ptr", "i32", "fp32", "ptr", "ptr"]
GENERIC_KINDS = ["ptr", "ptr", "ptr", "i32", "fp32", "i32", "ptr", "ptr"]
_CTYPES = {"ptr": ctypes.c_uint64, "i32": ctypes.c_int32, "fp32": ctypes.c_float}


def _args(n=32, stride=1, offset=0, dtype=torch.float32):
    buf = torch.zeros(256, dtype=dtype)
    x = buf[offset : offset + n]
    return (x, torch.zeros(n), torch.zeros(n), n, 0.5, stride, 64)


def _launcher(*metas):
    driver = RecordingDriver()
    cubins = {m["id"]: b"" for m in metas}
    return CubinLauncher(CubinTable(list(metas)), cubins, torch.device("cpu"), driver), driver


def _launch(launcher, driver, args, grid=(1,), num_warps=4, num_stages=2) -> dict | None:
    """Launch, then read back what the driver was given (before the next launch of the same
    kernel rewrites the parameters); None when nothing was launched."""
    before = len(driver.lib.launches)
    launcher(_axpy, grid, *args, num_warps=num_warps, num_stages=num_stages)
    if len(driver.lib.launches) == before:
        return None
    function, x, y, z, bx, by, bz, shared, stream, params, extra = driver.lib.launches[-1]
    name = driver.functions[function]
    kinds = SPECIAL_KINDS if name == "_axpy_special" else GENERIC_KINDS
    slots = (ctypes.c_void_p * len(kinds)).from_address(params)
    values = [_CTYPES[k].from_address(slot).value for k, slot in zip(kinds, slots, strict=True)]
    return {"cubin": name.removeprefix("_axpy_"), "grid": (x, y, z), "block": (bx, by, bz),
            "shared": shared, "stream": stream, "values": values, "extra": extra}  # fmt: skip


def test_the_most_specialized_satisfied_cubin_is_chosen():
    table = CubinTable([_meta("generic", {}), _meta("special", SPECIAL)])
    pick = lambda *a: table.select(_axpy, _args(*a), 4, 2)[0]["id"]  # noqa: E731
    assert pick() == "special"
    assert pick(32, 2) == "generic"  # stride 2: the special cubin has stride == 1 built in
    assert pick(33) == "generic"  # n not a multiple of 16
    assert pick(32, 1, 1) == "generic"  # x is 4 bytes past an aligned address


def test_no_cubin_for_a_launch_names_the_kernel_and_the_mismatch():
    table = CubinTable([_meta("special", SPECIAL)])
    with pytest.raises(KilnError, match="no cubin of kernel _axpy.*stride=2, built for stride=1"):
        table.select(_axpy, _args(32, 2), 4, 2)
    with pytest.raises(KilnError, match="BLOCK=128, built with 64"):
        table.select(_axpy, (*_args()[:-1], 128), 4, 2)
    with pytest.raises(KilnError, match="num_warps=8, built with 4"):
        table.select(_axpy, _args(), 8, 2)


def test_a_kernel_whose_source_changed_is_refused():
    table = CubinTable([_meta("special", SPECIAL, source_hash="0" * 64)])
    with pytest.raises(KilnError, match="no cubin for kernel _axpy with this source"):
        table.select(_axpy, _args(), 4, 2)


def test_a_cooperative_kernel_is_refused_at_load():
    with pytest.raises(KilnError, match="launch_cooperative_grid"):
        CubinTable([_meta("c", {}, launch_cooperative_grid=True)])


def test_a_launch_packs_its_cubins_parameters_in_order_on_the_current_stream():
    launcher, driver = _launcher(_meta("generic", {}), _meta("special", SPECIAL))
    args = _args()
    got = _launch(launcher, driver, args, grid=(2,))
    assert got["cubin"] == "special"  # no stride: it is a constant of this cubin
    assert got["values"] == [args[0].data_ptr(), args[1].data_ptr(), args[2].data_ptr(), 32, 0.5, 0, 0]  # fmt: skip
    assert got["grid"] == (2, 1, 1) and got["block"] == (128, 1, 1)  # 4 warps
    assert got["shared"] == 0 and got["stream"] == 7 and got["extra"] is None
    got = _launch(launcher, driver, _args(32, 3), grid=(2, 3))
    assert got["cubin"] == "generic" and got["values"][3:6] == [32, 0.5, 3]
    assert got["grid"] == (2, 3, 1)


@pytest.mark.parametrize(
    "launches",
    [
        [(32, 1, 0), (33, 1, 0), (48, 1, 0), (1, 1, 0), (64, 1, 0)],  # the token count varies
        [(32, 1, 0), (32, 2, 0), (32, 1, 0), (32, 5, 0)],  # a stride that was constant varies
        [(32, 1, 0), (32, 1, 1), (32, 1, 4), (32, 1, 0)],  # x's alignment varies
    ],
)
def test_a_memoised_site_chooses_what_select_would_for_every_launch(launches):
    metas = (_meta("generic", {}), _meta("special", SPECIAL))
    launcher, driver = _launcher(*metas)
    table = CubinTable(list(metas))
    for _ in range(2):  # again, all memoised
        for n, stride, offset in launches:
            args = _args(n, stride, offset)
            want = table.select(_axpy, args, 4, 2)[0]["id"]
            got = _launch(launcher, driver, args)
            assert got["cubin"] == want, (n, stride, offset)
            assert got["values"][:4] == [args[0].data_ptr(), args[1].data_ptr(), args[2].data_ptr(), n]  # fmt: skip
            if want == "generic":
                assert got["values"][5] == stride


def test_a_memoised_site_rechooses_the_generic_cubin_when_the_token_count_no_longer_fits():
    launcher, driver = _launcher(_meta("generic", {}), _meta("special", SPECIAL))
    assert _launch(launcher, driver, _args(128))["cubin"] == "special"
    assert _launch(launcher, driver, _args(128))["cubin"] == "special"
    got = _launch(launcher, driver, _args(13))
    assert got["cubin"] == "generic" and got["values"][3] == 13
    assert _launch(launcher, driver, _args(16))["cubin"] == "special"


def test_a_memoised_site_still_refuses_a_launch_no_cubin_takes():
    launcher, driver = _launcher(_meta("special", SPECIAL))
    assert _launch(launcher, driver, _args())["cubin"] == "special"
    with pytest.raises(KilnError, match="n is not a multiple of 16"):
        _launch(launcher, driver, _args(33))
    with pytest.raises(KilnError, match="stride=2, built for stride=1"):
        _launch(launcher, driver, _args(32, 2))
    with pytest.raises(KilnError, match="BLOCK=128, built with 64"):
        _launch(launcher, driver, (*_args()[:-1], 128))
    with pytest.raises(KilnError, match="num_warps=8, built with 4"):
        _launch(launcher, driver, _args(), num_warps=8)
    with pytest.raises(KilnError, match=r"x is \*fp16, built for \*fp32"):
        _launch(launcher, driver, _args(dtype=torch.float16))
    assert _launch(launcher, driver, _args())["cubin"] == "special"


def test_an_empty_grid_launches_nothing_and_launch_options_are_refused():
    launcher, driver = _launcher(_meta("special", SPECIAL))
    assert _launch(launcher, driver, _args(), grid=(0, 4)) is None
    with pytest.raises(KilnError, match="no cubin of kernel _axpy"):
        _launch(launcher, driver, _args(32, 2), grid=(0,))  # checked even so
    with pytest.raises(KilnError, match="launch options \\['num_ctas'\\]"):
        launcher(_axpy, (1,), *_args(), num_warps=4, num_stages=2, num_ctas=2)


def test_every_launch_reads_the_current_stream():
    launcher, driver = _launcher(_meta("special", SPECIAL))
    assert _launch(launcher, driver, _args())["stream"] == 7
    driver.stream = 9  # as inside a graph capture
    assert _launch(launcher, driver, _args())["stream"] == 9


def test_scratch_pointers_are_appended_and_grow_with_the_grid():
    meta = _meta("special", SPECIAL, global_scratch_size=64)
    launcher, driver = _launcher(meta)
    pointers = []
    for grid in ((2,), (2,), (4, 2)):
        got = _launch(launcher, driver, _args(), grid=grid)
        buffer = launcher._scratch[("special", "global")][-1]
        assert buffer.numel() >= 64 * grid[0] * (grid[1] if len(grid) > 1 else 1)
        assert got["values"][-2:] == [buffer.data_ptr(), 0]  # profile scratch: none
        pointers.append(buffer.data_ptr())
    assert pointers[0] == pointers[1] != pointers[2]  # the same until the grid outgrows it
