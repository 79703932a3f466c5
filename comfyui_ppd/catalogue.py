"""The model catalogue: the official files (declared by the families) and where we look for them."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from . import registry
from .errors import CheckpointError
from .family import SLOTS, ModelFile

ENV_VAR = "PPD_MODELS_DIR"
_HINT = "or run again with --download to fetch it automatically"


class _Derived(Mapping):
    """A read-only mapping computed from the registry on every access, so a registered family shows at once."""

    def __init__(self, make: Callable[[], dict]) -> None:
        self._make = make

    def __getitem__(self, key):
        return self._make()[key]

    def __iter__(self) -> Iterator:
        return iter(self._make())

    def __len__(self) -> int:
        return len(self._make())

    def __repr__(self) -> str:
        return repr(self._make())


def _official_files() -> dict[str, ModelFile]:
    found: dict[str, ModelFile] = {}
    for family in registry.families():
        for f in family.files:
            if found.setdefault(f.name, f) != f:
                raise ValueError(f"two different official files named {f.name} ({family.name})")
    return found


def _default_names() -> dict[str, str]:
    return {slot: f.name for f in _official_files().values() for slot in f.defaults}


# Every official file by name, and the default file name of each slot: both declared by the families.
OFFICIAL_FILES: Mapping[str, ModelFile] = _Derived(_official_files)
DEFAULT_NAMES: Mapping[str, str] = _Derived(_default_names)


def slot_of(name: str | Path | None) -> str | None:
    """The first slot of an official file name (ppd.pth -> dit, ppvd.pth -> video_dit), else None."""
    entry = OFFICIAL_FILES.get(Path(name).name) if name else None
    return entry.slots[0] if entry else None


def encoder_for(dit_name: str | Path, slot: str = "dit") -> str | None:
    """The default encoder file for a DiT file name: the official file's semantics, else a family's guess from
    the name, matched to the official file of that semantics in the DiT's encoder slot."""
    name = Path(dit_name).name
    entry = OFFICIAL_FILES.get(name)
    for family in (f for f in registry.families() if f.slot == slot):
        semantics = entry.semantics if entry else family.semantics_of({}, name)[0]
        match = [f.name for f in OFFICIAL_FILES.values() if f.semantics == semantics and family.encoder_slot in f.slots]
        if semantics and match:
            return next((n for n in match if n == DEFAULT_NAMES.get(family.encoder_slot)), match[0])
    return None


def video_slots() -> tuple[str, str] | None:
    """(DiT slot, encoder slot) of the video model (the first family that predicts clips), or None."""
    family = next((f for f in registry.families() if f.video), None)
    return (family.slot, family.encoder_slot) if family else None


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
        options = "; ".join(f"{f.name} ({f.url or 'Google Drive, see ' + f.page})"
                            for f in OFFICIAL_FILES.values() if role in f.slots)
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
    if role not in SLOTS:
        raise ValueError(f"role must be one of {tuple(SLOTS)}, got {role!r}")
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
    for name in [default] + [f.name for f in OFFICIAL_FILES.values() if role in f.slots and f.name != default]:
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
