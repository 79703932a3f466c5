"""Fake of `comfy.model_management`: device choice, memory queries, a loaded-model list, interrupts."""
from __future__ import annotations

import os
import threading

import torch


class InterruptProcessingException(Exception):
    """Raised inside a node when the user interrupts the prompt."""


OOM_EXCEPTION = torch.cuda.OutOfMemoryError
current_loaded_models: list = []
_interrupt_lock = threading.RLock()
_interrupted = False


def get_torch_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device(torch.cuda.current_device())
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def unet_offload_device() -> torch.device:
    return torch.device("cpu")


def intermediate_device() -> torch.device:
    return torch.device("cpu")


def is_device_cpu(device) -> bool:
    return getattr(device, "type", None) == "cpu"


def is_device_mps(device) -> bool:
    return getattr(device, "type", None) == "mps"


def get_free_memory(dev=None, torch_free_too=False):
    """Free bytes on `dev` (RAM for cpu/mps); with torch_free_too also torch's reusable cache."""
    dev = get_torch_device() if dev is None else dev
    if getattr(dev, "type", None) in ("cpu", "mps"):
        free = torch_free = _ram_bytes("MemAvailable")
    else:
        stats = torch.cuda.memory_stats(dev)
        torch_free = stats["reserved_bytes.all.current"] - stats["active_bytes.all.current"]
        free = torch.cuda.mem_get_info(dev)[0] + torch_free
    return (free, torch_free) if torch_free_too else free


def get_total_memory(dev=None, torch_total_too=False):
    """Total bytes on `dev` (RAM for cpu/mps); with torch_total_too also what torch has reserved."""
    dev = get_torch_device() if dev is None else dev
    if getattr(dev, "type", None) in ("cpu", "mps"):
        total = torch_total = _ram_bytes("MemTotal")
    else:
        torch_total = torch.cuda.memory_stats(dev)["reserved_bytes.all.current"]
        total = torch.cuda.mem_get_info(dev)[1]
    return (total, torch_total) if torch_total_too else total


def module_size(module: torch.nn.Module) -> int:
    """Bytes of the module's state dict (parameters and buffers)."""
    return sum(t.nelement() * t.element_size() for t in module.state_dict().values())


def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                    force_full_load=False) -> None:
    """Move every patcher's model to its load device (always a full load) and remember it as loaded."""
    global current_loaded_models
    for patcher in models:
        patcher.patch_model(patcher.load_device)
        current_loaded_models = [m for m in current_loaded_models if m is not patcher]
        current_loaded_models.insert(0, patcher)


def free_memory(memory_required, device, keep_loaded=[]):  # noqa: B006 (ComfyUI's own default)
    """Offload loaded models on `device` (oldest first, sparing keep_loaded) until enough is free."""
    unloaded = []
    for patcher in reversed(list(current_loaded_models)):
        if patcher.load_device != device or any(patcher is k for k in keep_loaded):
            continue
        if get_free_memory(device) > memory_required:
            break
        patcher.detach()
        current_loaded_models.remove(patcher)
        unloaded.append(patcher)
    return unloaded


def unload_all_models() -> None:
    free_memory(1e30, get_torch_device())


def soft_empty_cache(force=False) -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif torch.backends.mps.is_available():
        torch.mps.empty_cache()


def should_use_fp16(device=None, model_params=0, prioritize_performance=True, manual_cast=False) -> bool:
    """False on CPU, True on MPS, on CUDA from compute capability 7 (ComfyUI's rule, minus card lists)."""
    device = get_torch_device() if device is None else device
    if is_device_cpu(device) or is_device_mps(device):
        return is_device_mps(device)
    return torch.cuda.get_device_properties(device).major >= 7


def should_use_bf16(device=None, model_params=0, prioritize_performance=True, manual_cast=False) -> bool:
    """False on CPU, True on MPS, on CUDA from compute capability 8."""
    device = get_torch_device() if device is None else device
    if is_device_cpu(device) or is_device_mps(device):
        return is_device_mps(device)
    return torch.cuda.get_device_properties(device).major >= 8


def interrupt_current_processing(value=True) -> None:
    global _interrupted
    with _interrupt_lock:
        _interrupted = value


def processing_interrupted() -> bool:
    with _interrupt_lock:
        return _interrupted


def throw_exception_if_processing_interrupted() -> None:
    """Raise InterruptProcessingException once per interrupt (the flag is cleared, as in ComfyUI)."""
    global _interrupted
    with _interrupt_lock:
        if _interrupted:
            _interrupted = False
            raise InterruptProcessingException()


def _ram_bytes(field: str) -> int:
    """MemAvailable / MemTotal from /proc/meminfo, else from sysconf (macOS, other POSIX)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    pages = "SC_AVPHYS_PAGES" if field == "MemAvailable" else "SC_PHYS_PAGES"
    return os.sysconf(pages) * os.sysconf("SC_PAGE_SIZE")
