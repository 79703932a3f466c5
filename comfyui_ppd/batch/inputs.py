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
import posixpath
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import InputError
from ..io import video

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})  # what Pillow reads
VIDEO_SUFFIXES = frozenset(video.VIDEO_SUFFIXES)                                         # decoded with PyAV
LIST_SUFFIXES = frozenset({".txt", ".lst"})
NAME_MAX = 255                                          # bytes per file or folder name (ext4, APFS; NTFS: 255 chars)


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
    for part in Path(text).parts:
        if (size := len(os.fsencode(part))) > NAME_MAX:
            raise InputError(f"the name {part[:40]}... is {size} bytes long, but file systems allow at most "
                             f"{NAME_MAX} bytes per file or folder name; check the path (a line break lost, "
                             "two names run together?).")
    path = Path(text) if relative_to is None or Path(text).is_absolute() else relative_to / text
    try:
        return _expand_path(arg, text, path, exclude, relative_to, nested)
    except OSError as e:                    # permission denied, a symlink loop: a message, not a traceback
        raise InputError(f"cannot read the input {path}: {e.strerror or e}") from e


def _expand_path(arg: str, text: str, path: Path, exclude: Path | None, relative_to: Path | None,
                 nested: bool) -> list[tuple[Path, PurePosixPath]]:
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
    """The output stem, `..` folded lexically (sub/../x.png -> x); one that still starts with `..` is refused by
    `split_outside`."""
    return PurePosixPath(posixpath.normpath(relative.as_posix())).with_suffix("")


def split_outside(items: list[Item], out: Path) -> tuple[list[Item], dict[str, str]]:
    """The items whose outputs stay inside `out`, and {input: reason} for those that would not (a list line or
    pattern climbing out with `..`, a symlinked folder under `out` pointing elsewhere): refused, never written."""
    keep, refused = [], {}
    for item in items:
        target = out / item.stem
        if item.stem.is_absolute() or ".." in item.stem.parts or not _inside(target, out):
            refused[str(item.path)] = (f"its outputs would be written outside the output folder ({target}); "
                                       "name the file without '..' (or give it directly, not in a list)")
        else:
            keep.append(item)
    return keep, refused


def _read_list(path: Path, exclude: Path | None) -> list[tuple[Path, PurePosixPath]]:
    """A text file with one input per line (files, folders or patterns; relative to the list's folder)."""
    if not path.is_file():
        raise InputError(f"list file not found: {path}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")                      # a BOM (Windows Notepad) is not part of the first name
    except UnicodeDecodeError as e:
        bad_line = raw[:e.start].count(b"\n") + 1
        raise InputError(f"the list file {path} is not UTF-8 text (byte 0x{raw[e.start]:02x} on line {bad_line}); save "
                         "it with the UTF-8 encoding (in Notepad: Save As, Encoding: UTF-8).") from None
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            try:
                pairs += _expand_one(line, exclude, relative_to=path.parent, nested=True)
            except InputError as e:
                raise InputError(f"line {number} of the list file {path}: {e}") from e
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
