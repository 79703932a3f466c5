"""What every benchmark shares: device synchronisation, wall time and peak memory of a call, random weights,
size parsing and the device's name.

Peak memory: CUDA max_memory_allocated, CPU peak RSS (VmHWM, reset per call through /proc/self/clear_refs);
"activation" is the peak minus the memory before the call.
"""
from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch

from .. import runtime

NAMES = {dtype: name for name, dtype in runtime.DTYPES.items()}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _proc_status(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class MemoryMeter:
    """Peak memory of a call: CUDA allocator statistics, or the process's peak RSS on the CPU (Linux)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def current(self) -> int | None:
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device)
        return _proc_status("VmRSS") if self.device.type == "cpu" else None

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.device.type == "cpu":
            try:
                Path("/proc/self/clear_refs").write_text("5")      # resets VmHWM to the current RSS
            except OSError:
                pass

    def peak(self) -> int | None:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        return _proc_status("VmHWM") if self.device.type == "cpu" else None


@dataclass
class Sample:
    seconds: float
    peak: int | None
    activation: int | None


def measure(fn: Callable[[], object], device: torch.device, meter: MemoryMeter) -> Sample:
    """Wall time of fn() with the device synchronised, and its peak memory above the memory before."""
    synchronize(device)
    meter.reset()
    before = meter.current()
    start = time.perf_counter()
    fn()
    synchronize(device)
    seconds = time.perf_counter() - start
    peak = meter.peak()
    return Sample(seconds, peak, None if peak is None or before is None else max(0, peak - before))


M = TypeVar("M", bound=torch.nn.Module)


def random_init(model: M, dtype: torch.dtype, keep: tuple[str, ...] = ()) -> M:
    """N(0, 0.02) matrices, zero biases, unit norm weights, 1e-5 layer scale (parameters named in `keep`
    untouched); then cast to `dtype`, eval mode, no gradients."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in keep:
                continue
            if name.endswith("gamma"):
                p.fill_(1e-5)
            elif "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.normal_(0.0, 0.02)
    return model.to(dtype).eval().requires_grad_(False)


def parse_size(text: str, multiple: int, example: str) -> tuple[int, int]:
    """'WIDTHxHEIGHT' (multiples of `multiple`) -> (height, width)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like {example} (width x height), got {text!r}") from None
    if w <= 0 or h <= 0 or w % multiple or h % multiple:
        raise argparse.ArgumentTypeError(f"width and height must be positive multiples of {multiple}, got {text!r}")
    return h, w


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        name = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{device.type} ({name}, {torch.get_num_threads()} threads)"
