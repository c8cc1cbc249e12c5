import json

import pytest
import torch

from ir.registry import TargetLike, choose
from ir.targets import TARGETS, Target, get_target, target_for_device
from kiln.errors import KilnError


def test_known_targets_describe_their_hardware():
    h100, h200, b200 = get_target("h100"), get_target("h200"), get_target("b200")
    assert (h100.arch, h100.compute_capability, h100.sm_count) == ("sm_90a", (9, 0), 132)
    assert (h200.arch, h200.sm_count, h200.memory_bytes) == ("sm_90a", 132, 141 * 10**9)
    assert (b200.arch, b200.compute_capability, b200.sm_count) == ("sm_100a", (10, 0), 148)
    assert b200.has_fp4 and not h100.has_fp4 and h100.has_fp8
    assert (
        h100.memory_bandwidth_bytes_s
        < h200.memory_bandwidth_bytes_s
        < b200.memory_bandwidth_bytes_s
    )
    assert get_target("cpu").device_type == "cpu" and get_target("cpu").arch is None


def test_unknown_target_lists_valid_names():
    with pytest.raises(KilnError, match="h100, h200, b200"):
        get_target("a100")


def test_names_are_case_insensitive():
    assert get_target("H100") is TARGETS["h100"]


def test_auto_is_the_host():
    expected = "cpu" if not torch.cuda.is_available() else get_target("auto").name
    assert get_target("auto").name == expected


@pytest.mark.parametrize(
    "capability, memory, name",
    [((9, 0), 80 * 10**9, "h100"), ((9, 0), 141 * 10**9, "h200"), ((10, 0), 192 * 10**9, "b200"),
     ((8, 0), 80 * 10**9, "cpu")],
)  # fmt: skip
def test_device_mapping(capability, memory, name):
    assert target_for_device(capability, memory).name == name


def test_to_json_is_canonical_and_distinguishes_targets():
    blobs = {t.to_json() for t in TARGETS.values()}
    assert len(blobs) == len(TARGETS)
    blob = get_target("b200").to_json()
    data = json.loads(blob)
    assert data["arch"] == "sm_100a" and data["compute_capability"] == [10, 0]
    assert list(data) == sorted(data)  # one spelling: keys sorted
    # Every field is in it: the target rebuilt from its JSON is the same target.
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    assert Target(**fields) == get_target("b200") and Target(**fields).to_json() == blob


def test_satisfies_target_like_and_drives_dispatch():
    target: TargetLike = get_target("h100")
    import ir.kernels  # noqa: F401

    assert choose("rms_norm", target).chosen.provider == "helion"
    cpu_choice = choose("rms_norm", get_target("cpu"))
    assert cpu_choice.chosen.provider != "helion"
    assert ("helion", "needs a CUDA target (target cpu is cpu)") in cpu_choice.rejected


def test_inconsistent_descriptor_is_rejected():
    with pytest.raises(ValueError, match="arch"):
        Target("x", "cuda", None, None, 1, 1, 1.0, False, False, 32)
    with pytest.raises(ValueError, match="device_type"):
        Target("x", "tpu", None, None, 1, 1, 1.0, False, False, 32)
