"""Where and how the engine runs: device choice, the one precision policy, memory queries, chunking, compile.

Precision policy (CLI, nodes, bench and PPDPipeline's "auto" all use `precision`):

| device | choice | weights | autocast |
|---|---|---|---|
| CUDA | auto | fp32 | bf16 (fp16 where the GPU has no bf16): the official numerics |
| CUDA | fp32 | fp32 | none |
| CUDA | fp16 / bf16 | fp16 / bf16 | the same dtype |
| MPS | auto, fp32 | fp32 | none |
| MPS | fp16 / bf16 | fp16 / bf16 | none (autocast runs on CUDA only) |
| CPU | any | fp32 (fp16/bf16 fall back with a warning) | none |

torch.compile of the DiT blocks is opt-in: blocks are compiled one by one (hooks, the Condition object and
the sampler stay plain Python) and fall back to eager execution when compilation fails.
"""
from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from .errors import InputError

log = logging.getLogger("comfyui_ppd")
CHOICES = ("auto", "fp32", "fp16", "bf16")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


# --- device ------------------------------------------------------------------------------------
def pick_device(name: str = "auto") -> torch.device:
    """"auto": CUDA, else MPS, else CPU; any other name is passed to torch.device and must be available here."""
    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError as e:
            raise InputError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:1 or mps.") from e
        mps = getattr(torch.backends, "mps", None)
        if ((device.type == "cuda" and not torch.cuda.is_available())
                or (device.type == "mps" and not (mps and mps.is_available()))):
            raise InputError(f"device {name!r} is not available to this torch ({torch.__version__}): use auto "
                             "(the best device present) or cpu, or install a torch build for that device.")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             "numbered from cuda:0.")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


# --- precision -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Precision:
    """Stored weight dtype and the autocast dtype (None: compute in the weights' dtype)."""

    weights: torch.dtype
    autocast: torch.dtype | None


def cuda_half() -> torch.dtype:
    """bf16 where the GPU supports it, else fp16."""
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast_for(device: torch.device, weights: torch.dtype) -> torch.dtype | None:
    """The policy's autocast for weights already in `weights`: see the module table (CUDA only)."""
    if device.type != "cuda":
        return None
    return cuda_half() if weights == torch.float32 else weights


class DiTPrecision:
    """Device, weight dtype and autocast context of a pipeline around a DiT `self.dit`; the pipeline's
    `autocast_dtype()` says which autocast dtype applies (None: none)."""

    dit: Any

    @property
    def device(self) -> torch.device:
        return self.dit.x_embedder.proj.weight.device

    @property
    def weight_dtype(self) -> torch.dtype:
        return self.dit.x_embedder.proj.weight.dtype

    def autocast_dtype(self) -> torch.dtype | None:
        raise NotImplementedError

    def autocast(self) -> contextlib.AbstractContextManager:
        dtype = self.autocast_dtype()
        return (contextlib.nullcontext() if dtype is None
                else torch.autocast(device_type=self.device.type, dtype=dtype))


def precision(choice: str, device: torch.device | str) -> Precision:
    """The policy (module table) for a user's choice "auto" / "fp32" / "fp16" / "bf16" on `device`."""
    device = torch.device(device)
    if choice not in CHOICES:
        raise ValueError(f"precision must be one of {', '.join(CHOICES)}, got {choice!r}")
    if choice == "auto":
        return Precision(torch.float32, autocast_for(device, torch.float32))
    weights = DTYPES[choice]
    if device.type == "cpu" and weights != torch.float32:
        log.warning("PPD: %s is not supported well on the CPU; using fp32 instead.", choice)
        weights = torch.float32
    if weights == torch.float32:
        return Precision(weights, None)
    return Precision(weights, autocast_for(device, weights))


# --- memory and chunking ---------------------------------------------------------------------------
def available_bytes(device: torch.device) -> int:
    """Bytes free on the device (CUDA driver view), or available RAM for CPU and others (never unloads)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def items_that_fit(device: torch.device, bytes_per_item: int, share: float = 0.5, cap: int = 64) -> int:
    """How many items of `bytes_per_item` fit in `share` of the available memory (1..cap)."""
    return max(1, min(cap, int(available_bytes(device) * share // max(bytes_per_item, 1))))


# --- compile ---------------------------------------------------------------------------------------
class Fallback:
    """Shared by the blocks of one DiT: after the first compile failure all of them run eagerly."""

    def __init__(self) -> None:
        self.failed = False

    def fail(self, error: Exception) -> None:
        if not self.failed:
            first_line = str(error).splitlines()[0][:200] if str(error) else ""
            warnings.warn(f"torch.compile of the DiT blocks failed, running them eagerly instead "
                          f"({type(error).__name__}: {first_line})", RuntimeWarning, stacklevel=3)
        self.failed = True


class CompiledOrEager:
    """A block's forward: the compiled function until a compile failure, then the eager one."""

    def __init__(self, compiled: Callable[..., Any], eager: Callable[..., Any], fallback: Fallback) -> None:
        self.compiled, self.eager, self.fallback = compiled, eager, fallback

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.fallback.failed:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as e:                      # no C++ compiler, unsupported op, backend crash ...
                self.fallback.fail(e)
        return self.eager(*args, **kwargs)


def compile_blocks(model: nn.Module, mode: str | None = None) -> nn.Module:
    """Compile every block of `model.blocks` in place (torch.compile, inductor); returns the same model.

    `mode` is passed to torch.compile (e.g. "max-autotune" on CUDA). Compilation happens on the first
    call for each grid shape; if it fails, every block runs eagerly and one RuntimeWarning says why.
    """
    fallback = Fallback()
    for block in cast(nn.ModuleList, model.blocks):
        eager = block.forward
        if isinstance(eager, CompiledOrEager):
            continue
        try:
            compiled = torch.compile(eager, mode=mode)
        except Exception as e:                          # e.g. torch.compile unsupported on this Python
            fallback.fail(e)
            compiled = eager
        block.forward = CompiledOrEager(compiled, eager, fallback)
    return model


def is_compiled(model: nn.Module) -> bool:
    """True when the blocks run through compile_blocks' wrapper and none has fallen back to eager."""
    blocks = cast(nn.ModuleList, model.blocks)
    return all(isinstance(b.forward, CompiledOrEager) and not b.forward.fallback.failed for b in blocks)
