"""Expand `predict` inputs (files, folders, glob patterns, `@list.txt`) into items with output stems.

An item's stem is where its outputs go, relative to --out, without the output suffix:
IN/a/b/x.jpg given as the folder IN -> stem a/b/x -> OUT/a/b/x_depth.npy, ... A file given directly
gets its bare name (x -> OUT/x_depth.npy). Order is deterministic: inputs in the order given, each
folder or pattern sorted by path. Stems that would clash (x.jpg and x.png in one folder, or the same
name from two inputs; compared case-insensitively, for macOS and Windows disks) keep the source suffix
(x.jpg, x.png -> x.jpg_depth.npy, x.png_depth.npy), and a number if that still clashes.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import InputError
from ..io import video

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})  # what Pillow reads
VIDEO_SUFFIXES = frozenset(video.VIDEO_SUFFIXES)                                         # decoded with PyAV
LIST_SUFFIXES = frozenset({".txt", ".lst"})


@dataclass(frozen=True)
class Item:
    """One input file: `index` in the run, source `path`, output `stem` (relative, posix), image or video."""

    index: int
    path: Path
    stem: PurePosixPath
    kind: str

    @property
    def name(self) -> str:
        return str(self.stem)


def kind_of(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return "image" if suffix in IMAGE_SUFFIXES else "video" if suffix in VIDEO_SUFFIXES else None


def _is_pattern(text: str) -> bool:
    return glob.has_magic(text)


def _walk(folder: Path, exclude: Path | None) -> list[Path]:
    """Media files under `folder`, recursively, sorted; hidden files/folders and `exclude` are left out."""
    found = []
    for root, dirs, files in os.walk(folder):
        root_path = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and not (exclude and _same(root_path / d, exclude)))
        found += [root_path / f for f in files if not f.startswith(".") and kind_of(Path(f))]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _pattern_base(pattern: str) -> Path:
    """The leading part of a glob pattern without wildcards: outputs mirror the tree below it."""
    parts = Path(pattern).parts
    base = []
    for part in parts:
        if _is_pattern(part):
            break
        base.append(part)
    return Path(*base) if base else Path(".")


def _expand_one(arg: str, exclude: Path | None, relative_to: Path | None = None,
                nested: bool = False) -> list[tuple[Path, PurePosixPath]]:
    """(path, stem) pairs for one argument; `relative_to` is the folder of the list file it came from."""
    text = arg[1:] if arg.startswith("@") else arg
    path = Path(text) if relative_to is None or Path(text).is_absolute() else relative_to / text
    if arg.startswith("@") or (path.suffix.lower() in LIST_SUFFIXES and path.is_file()):
        if nested:
            raise InputError(f"list files cannot name other list files: {arg}")
        return _read_list(path, exclude)
    if _is_pattern(text):
        matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
        base = _pattern_base(str(path))
        media = [p for p in matches if p.is_file() and kind_of(p) and not _inside(p, exclude)]
        if not media:
            raise InputError(f"the pattern {arg!r} matched no image or video files "
                             f"({', '.join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))}).")
        return [(p, _stem(p.relative_to(base))) for p in media]
    if path.is_dir():
        media = _walk(path, exclude)
        if not media:
            raise InputError(f"no image or video files found in the folder {path} (looked for "
                             f"{', '.join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))}, recursively).")
        return [(p, _stem(p.relative_to(path))) for p in media]
    if path.is_file():
        if relative_to is not None and _inside(path, relative_to):
            return [(path, _stem(path.relative_to(relative_to)))]
        return [(path, PurePosixPath(path.stem))]
    raise InputError(f"input image not found: {path}. Give image or video files, folders, glob patterns "
                     "(quote them) or @list.txt.")


def _inside(path: Path, folder: Path | None) -> bool:
    if folder is None:
        return False
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except (ValueError, OSError):
        return False


def _stem(relative: Path) -> PurePosixPath:
    return PurePosixPath(relative.as_posix()).with_suffix("")


def _read_list(path: Path, exclude: Path | None) -> list[tuple[Path, PurePosixPath]]:
    """A text file with one input per line (files, folders or patterns; relative to the list's folder)."""
    if not path.is_file():
        raise InputError(f"list file not found: {path}")
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            pairs += _expand_one(line, exclude, relative_to=path.parent, nested=True)
    if not pairs:
        raise InputError(f"the list file {path} names no inputs (one path per line, # for comments).")
    return pairs


def expand_inputs(args: list[str], exclude: Path | None = None) -> list[Item]:
    """Items for the command-line inputs, de-duplicated by real path, with clash-free output stems.

    `exclude` (the output folder) is never read as input, so outputs inside an input folder are safe."""
    pairs, seen = [], set()
    for arg in args:
        for path, stem in _expand_one(str(arg), exclude):
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                pairs.append((path, stem))
    stems = resolve_collisions([(stem, path.suffix) for path, stem in pairs])
    return [Item(i, path, stem, kind_of(path) or "image") for i, ((path, _), stem) in enumerate(zip(pairs, stems))]


def resolve_collisions(stems: list[tuple[PurePosixPath, str]]) -> list[PurePosixPath]:
    """Unique stems (case-insensitively): clashing ones keep their suffix, then get _2, _3... in input order."""
    def key(s: PurePosixPath) -> str:
        return str(s).casefold()

    counts: dict[str, int] = {}
    for stem, _ in stems:
        counts[key(stem)] = counts.get(key(stem), 0) + 1
    out = [stem.with_name(stem.name + suffix) if counts[key(stem)] > 1 else stem for stem, suffix in stems]
    taken: set[str] = set()
    for i, stem in enumerate(out):
        candidate, n = stem, 1
        while key(candidate) in taken:
            n += 1
            candidate = stem.with_name(f"{stem.name}_{n}")
        taken.add(key(candidate))
        out[i] = candidate
    return out
