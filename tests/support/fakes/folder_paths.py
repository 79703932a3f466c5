"""Fake of ComfyUI's `folder_paths` module (0.3.64 signatures) for tests run without a ComfyUI checkout.

Module-level state like the real one; rooted at $PPD_COMFY_BASE or a folder in the system temp dir.
Keeps what the nodes rely on: save-path counters, folder registration, annotated paths, model lookup.
"""
from __future__ import annotations

import os
import tempfile
import time

supported_pt_extensions: set[str] = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}

base_path = os.path.abspath(os.environ.get("PPD_COMFY_BASE")
                            or os.path.join(tempfile.gettempdir(), "comfyui_ppd_standin"))
models_dir = os.path.join(base_path, "models")
# folder name -> (search paths, allowed extensions); an empty set allows every file
folder_names_and_paths: dict[str, tuple[list[str], set[str]]] = {}
output_directory = os.path.join(base_path, "output")
temp_directory = os.path.join(base_path, "temp")
input_directory = os.path.join(base_path, "input")


def set_output_directory(output_dir: str) -> None:
    global output_directory
    output_directory = output_dir


def set_temp_directory(temp_dir: str) -> None:
    global temp_directory
    temp_directory = temp_dir


def set_input_directory(input_dir: str) -> None:
    global input_directory
    input_directory = input_dir


def get_output_directory() -> str:
    return output_directory


def get_temp_directory() -> str:
    return temp_directory


def get_input_directory() -> str:
    return input_directory


def get_annotated_filepath(name: str, default_dir: str | None = None) -> str:
    """`"x.png [output]"` -> <output>/x.png; no annotation -> default_dir, else the input folder."""
    for tag, folder in (("[output]", output_directory), ("[input]", input_directory), ("[temp]", temp_directory)):
        if name.endswith(tag):
            return os.path.join(folder, name[: -len(tag) - 1])
    return os.path.join(default_dir if default_dir is not None else input_directory, name)


def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    """Add a search path; a new folder name gets an empty extension set (matches every file)."""
    if folder_name not in folder_names_and_paths:
        folder_names_and_paths[folder_name] = ([full_folder_path], set())
        return
    paths = folder_names_and_paths[folder_name][0]
    if full_folder_path in paths:
        if is_default and paths[0] != full_folder_path:
            paths.remove(full_folder_path)
            paths.insert(0, full_folder_path)
    elif is_default:
        paths.insert(0, full_folder_path)
    else:
        paths.append(full_folder_path)


def get_folder_paths(folder_name: str) -> list[str]:
    return list(folder_names_and_paths[folder_name][0])


def get_filename_list(folder_name: str) -> list[str]:
    """Sorted relative paths (sub-folders included) of the allowed files under every search path."""
    paths, extensions = folder_names_and_paths[folder_name]
    found: set[str] = set()
    for root in paths:
        for dirpath, subdirs, files in os.walk(root, followlinks=True):
            subdirs[:] = [d for d in subdirs if d != ".git"]
            for name in files:
                if not extensions or os.path.splitext(name)[1].lower() in extensions:
                    found.add(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(found)


def get_full_path(folder_name: str, filename: str) -> str | None:
    """The first search path holding `filename` (a file), or None; `..` cannot climb out."""
    if folder_name not in folder_names_and_paths:
        return None
    filename = os.path.relpath(os.path.join("/", filename), "/")
    for root in folder_names_and_paths[folder_name][0]:
        candidate = os.path.join(root, filename)
        if os.path.isfile(candidate):
            return candidate
    return None


def get_full_path_or_raise(folder_name: str, filename: str) -> str:
    full_path = get_full_path(folder_name, filename)
    if full_path is None:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
    return full_path


def get_save_image_path(filename_prefix: str, output_dir: str, image_width=0, image_height=0
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
