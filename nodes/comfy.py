"""Everything the nodes need from ComfyUI, in one place: the real modules when ComfyUI is running,
otherwise small stand-ins with the same names and signatures (ComfyUI 0.3.64), for tests and scripts.

Nodes import from here only: `from .comfy import folder_paths, mm, ModelPatcher, ProgressBar`.
The stand-ins keep behaviour that callers rely on (save-path counters, folder registration,
moving a patched model to its load device, interruption from a progress bar) and nothing else.
"""
from __future__ import annotations

import os
import tempfile
import threading
import time
from typing import Any

import torch

try:  # inside ComfyUI these are top-level modules of the checkout
    import comfy.model_management as _real_mm
    import comfy.model_patcher as _real_model_patcher
    import comfy.utils as _real_utils
    import folder_paths as _real_folder_paths

    REAL_COMFY = True
except ImportError:
    REAL_COMFY = False

__all__ = [
    "REAL_COMFY", "folder_paths", "mm", "ModelPatcher", "ProgressBar", "InterruptProcessingException",
    "throw_exception_if_processing_interrupted", "register_model_folder",
    "StandinFolderPaths", "StandinModelManagement", "StandinModelPatcher", "StandinProgressBar",
]


# --------------------------------------------------------------------------- folder_paths


class StandinFolderPaths:
    """Stand-in for ComfyUI's `folder_paths` module, rooted at `base_dir` (models/, input/, output/, temp/)."""

    supported_pt_extensions: set[str] = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}

    def __init__(self, base_dir: str | os.PathLike | None = None) -> None:
        base = os.fspath(base_dir) if base_dir is not None else _default_base_dir()
        self.base_path = os.path.abspath(base)
        self.models_dir = os.path.join(self.base_path, "models")
        # folder name -> (search paths, allowed extensions); an empty set allows every file
        self.folder_names_and_paths: dict[str, tuple[list[str], set[str]]] = {}
        self.output_directory = os.path.join(self.base_path, "output")
        self.temp_directory = os.path.join(self.base_path, "temp")
        self.input_directory = os.path.join(self.base_path, "input")

    def set_output_directory(self, output_dir: str) -> None:
        self.output_directory = output_dir

    def set_temp_directory(self, temp_dir: str) -> None:
        self.temp_directory = temp_dir

    def set_input_directory(self, input_dir: str) -> None:
        self.input_directory = input_dir

    def get_output_directory(self) -> str:
        return self.output_directory

    def get_temp_directory(self) -> str:
        return self.temp_directory

    def get_input_directory(self) -> str:
        return self.input_directory

    def get_annotated_filepath(self, name: str, default_dir: str | None = None) -> str:
        """`"x.png [output]"` -> <output>/x.png; no annotation -> default_dir, else the input folder."""
        for tag, folder in (("[output]", self.output_directory), ("[input]", self.input_directory),
                            ("[temp]", self.temp_directory)):
            if name.endswith(tag):
                return os.path.join(folder, name[: -len(tag) - 1])
        return os.path.join(default_dir if default_dir is not None else self.input_directory, name)

    def add_model_folder_path(self, folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
        """Add a search path; a new folder name gets an empty extension set (matches every file)."""
        if folder_name not in self.folder_names_and_paths:
            self.folder_names_and_paths[folder_name] = ([full_folder_path], set())
            return
        paths = self.folder_names_and_paths[folder_name][0]
        if full_folder_path in paths:
            if is_default and paths[0] != full_folder_path:
                paths.remove(full_folder_path)
                paths.insert(0, full_folder_path)
        elif is_default:
            paths.insert(0, full_folder_path)
        else:
            paths.append(full_folder_path)

    def get_folder_paths(self, folder_name: str) -> list[str]:
        return list(self.folder_names_and_paths[folder_name][0])

    def get_filename_list(self, folder_name: str) -> list[str]:
        """Sorted relative paths (sub-folders included) of the allowed files under every search path."""
        paths, extensions = self.folder_names_and_paths[folder_name]
        found: set[str] = set()
        for root in paths:
            for dirpath, subdirs, files in os.walk(root, followlinks=True):
                subdirs[:] = [d for d in subdirs if d != ".git"]
                for name in files:
                    if not extensions or os.path.splitext(name)[1].lower() in extensions:
                        found.add(os.path.relpath(os.path.join(dirpath, name), root))
        return sorted(found)

    def get_full_path(self, folder_name: str, filename: str) -> str | None:
        """The first search path holding `filename` (a file), or None; `..` cannot climb out."""
        if folder_name not in self.folder_names_and_paths:
            return None
        filename = os.path.relpath(os.path.join("/", filename), "/")
        for root in self.folder_names_and_paths[folder_name][0]:
            candidate = os.path.join(root, filename)
            if os.path.isfile(candidate):
                return candidate
        return None

    def get_full_path_or_raise(self, folder_name: str, filename: str) -> str:
        full_path = self.get_full_path(folder_name, filename)
        if full_path is None:
            raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
        return full_path

    def get_save_image_path(self, filename_prefix: str, output_dir: str, image_width=0, image_height=0
                            ) -> tuple[str, str, int, str, str]:
        """(folder, filename, counter, subfolder, prefix): files are `<filename>_<counter:05>_.<ext>`;
        the counter follows the highest existing one, sub-folders are created, escaping output_dir raises."""
        if "%" in filename_prefix:
            filename_prefix = _expand_prefix_tokens(filename_prefix, image_width, image_height)
        subfolder = os.path.dirname(os.path.normpath(filename_prefix))
        filename = os.path.basename(os.path.normpath(filename_prefix))
        full_output_folder = os.path.join(output_dir, subfolder)
        if os.path.commonpath((output_dir, os.path.abspath(full_output_folder))) != output_dir:
            raise Exception("Saving image outside the output folder is not allowed: "
                            f"{os.path.abspath(full_output_folder)} is not inside {output_dir}")
        try:
            existing = os.listdir(full_output_folder)
        except FileNotFoundError:
            os.makedirs(full_output_folder, exist_ok=True)
            existing = []
        counters = [_saved_counter(name, filename) for name in existing]
        counter = max((c for c in counters if c is not None), default=0) + 1
        return full_output_folder, filename, counter, subfolder, filename_prefix


def _default_base_dir() -> str:
    """$PPD_COMFY_BASE, else a folder in the system temp dir (never the repository)."""
    return os.environ.get("PPD_COMFY_BASE") or os.path.join(tempfile.gettempdir(), "comfyui_ppd_standin")


def _saved_counter(name: str, filename: str) -> int | None:
    """The counter of `<filename>_<digits>..._...`, 0 when the digits are missing, None for other names."""
    head, rest = name[: len(filename) + 1], name[len(filename) + 1:]
    if os.path.normcase(head[:-1]) != os.path.normcase(filename) or head[-1:] != "_":
        return None
    digits = rest.split("_")[0]
    return int(digits) if digits.isdigit() else 0


def _expand_prefix_tokens(prefix: str, width: int, height: int) -> str:
    """%width%, %height%, %year%, %month%, %day%, %hour%, %minute%, %second% as ComfyUI expands them."""
    now = time.localtime()
    values = {"width": width, "height": height, "year": now.tm_year, "month": f"{now.tm_mon:02}",
              "day": f"{now.tm_mday:02}", "hour": f"{now.tm_hour:02}", "minute": f"{now.tm_min:02}",
              "second": f"{now.tm_sec:02}"}
    for key, value in values.items():
        prefix = prefix.replace(f"%{key}%", str(value))
    return prefix


# --------------------------------------------------------------------------- model_management


class StandinModelManagement:
    """Stand-in for `comfy.model_management`: device choice, memory queries, a loaded-model list, interrupts."""

    class InterruptProcessingException(Exception):
        """Raised inside a node when the user interrupts the prompt."""

    OOM_EXCEPTION = torch.cuda.OutOfMemoryError

    def __init__(self) -> None:
        self.current_loaded_models: list[StandinModelPatcher] = []
        self._interrupt_lock = threading.RLock()
        self._interrupted = False

    def get_torch_device(self) -> torch.device:
        if torch.cuda.is_available():
            return torch.device(torch.cuda.current_device())
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")

    def unet_offload_device(self) -> torch.device:
        return torch.device("cpu")

    def intermediate_device(self) -> torch.device:
        return torch.device("cpu")

    def is_device_cpu(self, device) -> bool:
        return getattr(device, "type", None) == "cpu"

    def is_device_mps(self, device) -> bool:
        return getattr(device, "type", None) == "mps"

    def get_free_memory(self, dev=None, torch_free_too=False):
        """Free bytes on `dev` (RAM for cpu/mps); with torch_free_too also torch's reusable cache."""
        dev = self.get_torch_device() if dev is None else dev
        if getattr(dev, "type", None) in ("cpu", "mps"):
            free = torch_free = _ram_bytes("MemAvailable")
        else:
            stats = torch.cuda.memory_stats(dev)
            torch_free = stats["reserved_bytes.all.current"] - stats["active_bytes.all.current"]
            free = torch.cuda.mem_get_info(dev)[0] + torch_free
        return (free, torch_free) if torch_free_too else free

    def get_total_memory(self, dev=None, torch_total_too=False):
        """Total bytes on `dev` (RAM for cpu/mps); with torch_total_too also what torch has reserved."""
        dev = self.get_torch_device() if dev is None else dev
        if getattr(dev, "type", None) in ("cpu", "mps"):
            total = torch_total = _ram_bytes("MemTotal")
        else:
            torch_total = torch.cuda.memory_stats(dev)["reserved_bytes.all.current"]
            total = torch.cuda.mem_get_info(dev)[1]
        return (total, torch_total) if torch_total_too else total

    def module_size(self, module: torch.nn.Module) -> int:
        """Bytes of the module's state dict (parameters and buffers)."""
        return sum(t.nelement() * t.element_size() for t in module.state_dict().values())

    def load_models_gpu(self, models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                        force_full_load=False) -> None:
        """Move every patcher's model to its load device (always a full load) and remember it as loaded."""
        for patcher in models:
            patcher.patch_model(patcher.load_device)
            self.current_loaded_models = [m for m in self.current_loaded_models if m is not patcher]
            self.current_loaded_models.insert(0, patcher)

    def free_memory(self, memory_required, device, keep_loaded=[]):  # noqa: B006 (ComfyUI's own default)
        """Offload loaded models on `device` (oldest first, sparing keep_loaded) until enough is free."""
        unloaded = []
        for patcher in reversed(list(self.current_loaded_models)):
            if patcher.load_device != device or any(patcher is k for k in keep_loaded):
                continue
            if self.get_free_memory(device) > memory_required:
                break
            patcher.detach()
            self.current_loaded_models.remove(patcher)
            unloaded.append(patcher)
        return unloaded

    def unload_all_models(self) -> None:
        self.free_memory(1e30, self.get_torch_device())

    def soft_empty_cache(self, force=False) -> None:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        elif torch.backends.mps.is_available():
            torch.mps.empty_cache()

    def should_use_fp16(self, device=None, model_params=0, prioritize_performance=True, manual_cast=False) -> bool:
        """False on CPU, True on MPS, on CUDA from compute capability 7 (ComfyUI's rule, minus card lists)."""
        device = self.get_torch_device() if device is None else device
        if self.is_device_cpu(device) or self.is_device_mps(device):
            return self.is_device_mps(device)
        return torch.cuda.get_device_properties(device).major >= 7

    def should_use_bf16(self, device=None, model_params=0, prioritize_performance=True, manual_cast=False) -> bool:
        """False on CPU, True on MPS, on CUDA from compute capability 8."""
        device = self.get_torch_device() if device is None else device
        if self.is_device_cpu(device) or self.is_device_mps(device):
            return self.is_device_mps(device)
        return torch.cuda.get_device_properties(device).major >= 8

    def interrupt_current_processing(self, value=True) -> None:
        with self._interrupt_lock:
            self._interrupted = value

    def processing_interrupted(self) -> bool:
        with self._interrupt_lock:
            return self._interrupted

    def throw_exception_if_processing_interrupted(self) -> None:
        """Raise InterruptProcessingException once per interrupt (the flag is cleared, as in ComfyUI)."""
        with self._interrupt_lock:
            if self._interrupted:
                self._interrupted = False
                raise self.InterruptProcessingException()


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


# --------------------------------------------------------------------------- model_patcher, utils


class StandinModelPatcher:
    """Stand-in for comfy.model_patcher.ModelPatcher: owns the devices of one nn.Module, no weight patches."""

    def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False) -> None:
        self.model = model
        self.load_device = load_device
        self.offload_device = offload_device
        self.size = size
        self.weight_inplace_update = weight_inplace_update
        self.parent: StandinModelPatcher | None = None
        if getattr(model, "device", None) is None:  # ComfyUI tracks the module's device on the module
            model.device = offload_device
        if not hasattr(model, "model_loaded_weight_memory"):
            model.model_loaded_weight_memory = 0
        self.model_size()

    def model_size(self) -> int:
        if self.size <= 0:
            self.size = STANDIN_MM.module_size(self.model)
        return self.size

    def loaded_size(self) -> int:
        return self.model.model_loaded_weight_memory

    def model_dtype(self):
        return self.model.get_dtype() if hasattr(self.model, "get_dtype") else None

    def current_loaded_device(self):
        return self.model.device

    def is_clone(self, other) -> bool:
        return getattr(other, "model", None) is self.model

    def clone(self) -> StandinModelPatcher:
        twin = self.__class__(self.model, self.load_device, self.offload_device, self.size,
                              weight_inplace_update=self.weight_inplace_update)
        twin.parent = self
        return twin

    def patch_model(self, device_to=None, lowvram_model_memory=0, load_weights=True, force_patch_weights=False):
        """Move the model to device_to (full load) and return it."""
        if load_weights and device_to is not None:
            self._move(device_to, self.model_size())
        return self.model

    def unpatch_model(self, device_to=None, unpatch_weights=True) -> None:
        if unpatch_weights and device_to is not None:
            self._move(device_to, 0)

    def detach(self, unpatch_all=True):
        """Send the model back to its offload device (what ComfyUI does when it frees memory)."""
        if unpatch_all:
            self.unpatch_model(self.offload_device, unpatch_weights=True)
        return self.model

    def _move(self, device, loaded_bytes: int) -> None:
        self.model.to(device)
        self.model.device = device
        self.model.model_loaded_weight_memory = loaded_bytes


class StandinProgressBar:
    """Stand-in for comfy.utils.ProgressBar; each update checks for an interrupt like ComfyUI's server hook."""

    def __init__(self, total, node_id=None) -> None:
        self.total = total
        self.current = 0
        self.node_id = node_id

    def update_absolute(self, value, total=None, preview=None) -> None:
        if total is not None:
            self.total = total
        self.current = min(value, self.total)
        STANDIN_MM.throw_exception_if_processing_interrupted()

    def update(self, value) -> None:
        self.update_absolute(self.current + value)


STANDIN_MM = StandinModelManagement()

# --------------------------------------------------------------------------- what the nodes use

folder_paths: Any
mm: Any
if REAL_COMFY:
    folder_paths = _real_folder_paths
    mm = _real_mm
    ModelPatcher: Any = _real_model_patcher.ModelPatcher
    ProgressBar: Any = _real_utils.ProgressBar
else:
    folder_paths = StandinFolderPaths()
    mm = STANDIN_MM
    ModelPatcher = StandinModelPatcher
    ProgressBar = StandinProgressBar

InterruptProcessingException = mm.InterruptProcessingException


def throw_exception_if_processing_interrupted() -> None:
    """Raise InterruptProcessingException if the user pressed Cancel; call it in loops without a ProgressBar."""
    mm.throw_exception_if_processing_interrupted()


def register_model_folder(folder_name: str, extensions: set[str]) -> list[str]:
    """Register <models_dir>/<folder_name> for our model files, keeping paths already set (by
    extra_model_paths.yaml, applied before packs load) and restricting the folder to `extensions`."""
    default = os.path.join(folder_paths.models_dir, folder_name)
    known = folder_paths.folder_names_and_paths.get(folder_name)
    paths = list(known[0]) if known else []
    if default not in paths:
        paths.append(default)
    folder_paths.folder_names_and_paths[folder_name] = (paths, set(extensions))
    return list(paths)
