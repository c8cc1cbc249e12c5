"""A CUDA driver with libcuda stubbed, for the cubin launcher on a host without a GPU.

`RecordingDriver` is the launcher's real `CudaDriver` with its library swapped for `FakeLibcuda`:
loading a cubin hands out a numbered function handle and `cuLaunchKernel` records its
arguments (or only counts them), so everything above the foreign call (choosing the cubin,
packing the parameters, reading the stream) runs as it does on a GPU. CPU or meta tensors stand
in for device memory: their `data_ptr()` is what gets packed.
"""

from __future__ import annotations

from runtime.cubin_launcher import CudaDriver


class FakeLibcuda:
    """libcuda's `cuLaunchKernel` as a recorder: `launches` holds each call's arguments
    (`record=True`) and `count` the calls."""

    def __init__(self, record: bool = True):
        self.record, self.count = record, 0
        self.launches: list[tuple] = []

    def cuLaunchKernel(self, *args) -> int:  # noqa: N802 (the driver's name)
        self.count += 1
        if self.record:
            self.launches.append(args)
        return 0


class RecordingDriver(CudaDriver):
    """The launcher's driver over `FakeLibcuda`; `functions` maps each handle to the kernel
    name it was loaded for, and every launch goes on stream `stream`."""

    def __init__(self, record: bool = True, stream: int = 7):
        self.lib = FakeLibcuda(record)
        self.stream = stream
        self.functions: dict[int, str] = {}

    def load_function(self, cubin: bytes, name: str, shared: int) -> int:
        handle = 0x1000 + 16 * len(self.functions)
        self.functions[handle] = name
        return handle

    def current_stream(self, device_index: int | None) -> int:
        return self.stream
