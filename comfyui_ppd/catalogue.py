"""The model catalogue: the official files (names, roles, URLs, pairings) and where we look for them."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import CheckpointError

ENV_VAR = "PPD_MODELS_DIR"
ROLES = ("dit", "encoder", "video_dit", "video_encoder")
OFFICIAL_REPO = "https://github.com/gangweix/pixel-perfect-depth"
_HINT = "or run again with --download to fetch it automatically"


@dataclass(frozen=True)
class ModelFile:
    """One official weight file: its name on disk, what it is for, and where to get it."""

    name: str  # file name on disk
    role: str  # "dit" | "encoder" (image model) | "video_dit" | "video_encoder" (video model, PPVD)
    semantics: str  # "da2" | "moge2" | "pi3": which semantic encoder the DiT was trained with / this encoder is
    url: str | None  # None: no direct link, see note
    approx_size: str  # approximate, for the user's information only; never checked
    note: str


OFFICIAL_FILES: dict[str, ModelFile] = {f.name: f for f in (
    ModelFile("ppd.pth", "dit", "da2",
              "https://huggingface.co/gangweix/Pixel-Perfect-Depth/resolve/main/ppd.pth",
              "~2.0 GB",
              "Pixel-Perfect Depth DiT trained with Depth Anything v2 semantics "
              "(499,842,112 parameters, fp32). Pair it with depth_anything_v2_vitl.pth."),
    ModelFile("depth_anything_v2_vitl.pth", "encoder", "da2",
              "https://huggingface.co/depth-anything/Depth-Anything-V2-Large/resolve/main/"
              "depth_anything_v2_vitl.pth",
              "~1.3 GB",
              "Depth Anything v2 ViT-L: the semantic encoder for ppd.pth."),
    ModelFile("moge2_vitl_normal.pt", "encoder", "moge2",
              "https://huggingface.co/Ruicheng/moge-2-vitl-normal/resolve/main/model.pt",
              "~1.3 GB",
              "MoGe-2 ViT-L (normal) published as model.pt; saved under this name so it is "
              "recognisable. The semantic encoder for ppd_moge.pth, and the geometry model (metric "
              "depth, camera, normals) of the MoGe-2 nodes and `predict --metric`."),
    ModelFile("ppd_moge.pth", "dit", "moge2", None,
              "~2.0 GB",
              "Pixel-Perfect Depth DiT trained with MoGe-2 semantics. It is only on Google Drive "
              f"(no direct link): download it from the link in the official README ({OFFICIAL_REPO}) "
              "and place it in the models folder as ppd_moge.pth. Pair it with moge2_vitl_normal.pt."),
    ModelFile("ppvd.pth", "video_dit", "pi3", None,
              "~2.2 GB",
              "Pixel-Perfect Video Depth (PPVD) video DiT (561,754,944 parameters with pos_embed). It is only "
              f"on Google Drive (no direct link): open the video-model link in the official README "
              f"({OFFICIAL_REPO}) in a browser, confirm Google Drive's \"can't scan this file for viruses\" page "
              "with \"Download anyway\", and place the file in the models folder as ppvd.pth. A small HTML file "
              "saved under that name is that web page, not the model. Pair it with pi3.safetensors."),
    ModelFile("pi3.safetensors", "video_encoder", "pi3",
              "https://huggingface.co/yyfz233/Pi3/resolve/main/model.safetensors",
              "~3.8 GB",
              "Pi3 (published as model.safetensors; saved under this name so it is recognisable): the "
              "semantic encoder of the video model ppvd.pth. Only its encoder and decoder are used "
              "(757,923,840 parameters); the point, confidence and camera heads are skipped."),
)}

DEFAULT_NAMES = {"dit": "ppd.pth", "encoder": "depth_anything_v2_vitl.pth", "geometry": "moge2_vitl_normal.pt",
                 "video_dit": "ppvd.pth", "video_encoder": "pi3.safetensors"}
DEFAULT_ENCODER = {"da2": "depth_anything_v2_vitl.pth", "moge2": "moge2_vitl_normal.pt"}


def semantics_from_name(name: str) -> str | None:
    """The semantics a DiT file was probably trained with, from its name alone ("moge" -> moge2, "ppd*" -> da2).

    A hint for pairing only (a warning on mismatch): families are always detected from the keys.
    """
    name = name.lower()
    return "moge2" if "moge" in name else "da2" if name.startswith("ppd") else None


# ----------------------------------------------------------------------------------- lookup


def _comfy_models_dir(start: Path) -> Path | None:
    """<ComfyUI>/models/ppd when `start` lies under <ComfyUI>/custom_nodes/, else None."""
    for parent in start.parents:
        root = parent.parent
        if parent.name == "custom_nodes" and (
                (root / "folder_paths.py").is_file()
                or ((root / "main.py").is_file() and (root / "comfy").is_dir())):
            return root / "models" / "ppd"
    return None


def _user_cache_dir() -> Path:
    """Last-resort folder outside ComfyUI: $XDG_CACHE_HOME/comfyui-ppd or ~/.cache/comfyui-ppd."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "comfyui-ppd"


def models_dirs(explicit: str | Path | None = None, *, start: Path | None = None) -> list[Path]:
    """Folders to search, best first: `explicit`, $PPD_MODELS_DIR, <ComfyUI>/models/ppd, user cache.

    `start` replaces this file's location when detecting a surrounding ComfyUI (for tests). The
    first folder is also where downloads go. Folders need not exist yet.
    """
    found: list[Path] = []
    if explicit:
        found.append(Path(explicit).expanduser())
    if os.environ.get(ENV_VAR):
        found.append(Path(os.environ[ENV_VAR]).expanduser())
    # The unresolved path keeps a symlinked pack inside ComfyUI; the resolved one covers the rest.
    here = [Path(start).absolute()] if start else [Path(__file__).absolute(), Path(__file__).resolve()]
    comfy = next((d for d in map(_comfy_models_dir, here) if d is not None), None)
    if comfy is not None:
        found.append(comfy)
    found.append(_user_cache_dir())
    unique: list[Path] = []
    for folder in found:
        if folder not in unique:
            unique.append(folder)
    return unique


def _where(entry: ModelFile, target: Path) -> str:
    """How to obtain one official file, as a sentence."""
    if entry.url is None:
        return entry.note
    return (f"Download it ({entry.approx_size}, approximate) from {entry.url} "
            f"and save it as {target / entry.name}, {_HINT}.")


def _missing(name: str, role: str, dirs: list[Path]) -> CheckpointError:
    """The error for a bare file name found in none of `dirs`."""
    searched = ", ".join(str(d) for d in dirs)
    entry = OFFICIAL_FILES.get(name)
    if entry is not None:
        fix = _where(entry, dirs[0])
        if entry.url is None:
            fix += f" Target folder: {dirs[0]}."
    else:
        options = "; ".join(f"{f.name} ({f.url or 'Google Drive, see ' + OFFICIAL_REPO})"
                            for f in OFFICIAL_FILES.values() if f.role == role)
        fix = (f"Check the file name, or use an official {role} file: {options}. "
               f"Place it in {dirs[0]}, {_HINT} (official files only).")
    found = f"no such file in {searched} (searched in this order)"
    article = "an" if role[0] in "aeiou" else "a"
    return CheckpointError(name, f"{article} {role} checkpoint", found, fix)


def find_model(name_or_path: str | Path | None, role: str, *, explicit: str | Path | None = None,
               start: Path | None = None) -> Path:
    """Locate a checkpoint: an existing path as is, a bare name in models_dirs(), or the role's default.

    With nothing given, the role's default file wins, else the one official file of that role that is
    present. Missing files raise CheckpointError saying where we looked and where to download from.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    dirs = models_dirs(explicit, start=start)
    if name_or_path:
        given = Path(name_or_path).expanduser()
        if given.is_file():
            return given
        if str(name_or_path) != given.name:  # a path, not a bare name: do not guess elsewhere
            raise CheckpointError(given, f"a {role} checkpoint file", "no file at this path",
                                  "Check the path, or give a bare file name to search "
                                  f"{', '.join(str(d) for d in dirs)}.")
        hit = next((d / given.name for d in dirs if (d / given.name).is_file()), None)
        if hit is None:
            raise _missing(given.name, role, dirs)
        return hit
    default = DEFAULT_NAMES[role]
    for name in [default] + [f.name for f in OFFICIAL_FILES.values() if f.role == role and f.name != default]:
        hit = next((d / name for d in dirs if (d / name).is_file()), None)
        if hit is not None:
            return hit
    raise _missing(default, role, dirs)


def how_to_get(name: str, target_dir: str | Path) -> str:
    """One line on getting a missing file into `target_dir`: its URL (or Google Drive how-to) and exact path."""
    target = Path(target_dir) / name
    entry = OFFICIAL_FILES.get(name)
    if entry is None:
        return f"{name}: not an official file name; put the file at {target}, or pick another file."
    if entry.url is None:
        return f"{name}: {entry.note} Exact path: {target}"
    return f"{name} ({entry.approx_size}): download {entry.url} and save it as {target}"
