"""Image files: reading photos as (1,3,H,W) tensors; 16-bit PNG, 8-bit RGB PNG, NPY and OpenEXR writers."""
from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError
from .files import atomic_write


def _as_array(x: object, ndim: int, what: str, last: int | None = None) -> np.ndarray:
    a = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim != ndim or (last is not None and a.shape[-1] != last) or a.size == 0:
        want = "(H,W)" if last is None else f"(H,W,{last})"
        raise InputError(f"{what} must have shape {want}, got {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise InputError(f"{what} must be float values, got {a.dtype}")
    return a


def _unit_ints(a: np.ndarray, top: int, dtype: type) -> np.ndarray:
    # float32 holds every integer up to 2^24 exactly, so rounding v*65535 needs no float64 copy
    return np.round(np.clip(np.nan_to_num(a.astype(np.float32)), 0, 1) * np.float32(top)).astype(dtype)


def write_png16(path: str | os.PathLike, values: object, overwrite: bool = False,
                compress_level: int | None = None) -> Path:
    """16-bit greyscale PNG of (H,W) values in [0,1]: round(v*65535); NaN -> 0, clipped.
    `compress_level` 0-9 trades size for speed (None: PIL's default, 6)."""
    a = _unit_ints(_as_array(values, 2, "PNG16 values"), 65535, np.uint16)
    img = Image.fromarray(a)  # mode I;16
    options = {} if compress_level is None else {"compress_level": compress_level}
    return atomic_write(path, lambda f: img.save(f, format="PNG", **options), overwrite)


def write_png8_rgb(path: str | os.PathLike, rgb: object, overwrite: bool = False) -> Path:
    """8-bit RGB PNG of (H,W,3) values in [0,1]: round(v*255)."""
    img = Image.fromarray(_unit_ints(_as_array(rgb, 3, "RGB image", last=3), 255, np.uint8))
    return atomic_write(path, lambda f: img.save(f, format="PNG"), overwrite)


def write_npy(path: str | os.PathLike, array: object, overwrite: bool = False) -> Path:
    """float32 .npy of any array (e.g. depth at the input size, like the official --save_npy)."""
    a = array.detach().cpu().float().numpy() if isinstance(array, torch.Tensor) else array
    a = np.asarray(a, dtype=np.float32)
    return atomic_write(path, lambda f: np.save(f, a), overwrite)


def _exr_attr(name: str, kind: str, value: bytes) -> bytes:
    return name.encode() + b"\0" + kind.encode() + b"\0" + struct.pack("<i", len(value)) + value


def _exr_bytes(depth: np.ndarray) -> bytes:
    """Single-part scanline OpenEXR, NO_COMPRESSION, one FLOAT channel "Y" (see write_exr)."""
    h, w = depth.shape
    box = struct.pack("<4i", 0, 0, w - 1, h - 1)
    channels = b"Y\0" + struct.pack("<i4B2i", 2, 0, 0, 0, 0, 1, 1) + b"\0"  # FLOAT, sampling 1x1
    header = b"".join((
        struct.pack("<2i", 20000630, 2),  # magic, version 2, single-part scanline
        _exr_attr("channels", "chlist", channels),
        _exr_attr("compression", "compression", b"\0"),  # NO_COMPRESSION
        _exr_attr("dataWindow", "box2i", box),
        _exr_attr("displayWindow", "box2i", box),
        _exr_attr("lineOrder", "lineOrder", b"\0"),  # INCREASING_Y
        _exr_attr("pixelAspectRatio", "float", struct.pack("<f", 1.0)),
        _exr_attr("screenWindowCenter", "v2f", struct.pack("<2f", 0.0, 0.0)),
        _exr_attr("screenWindowWidth", "float", struct.pack("<f", 1.0)),
        b"\0",
    ))
    row_bytes = 4 * w
    first = len(header) + 8 * h
    offsets = struct.pack(f"<{h}Q", *(first + y * (8 + row_bytes) for y in range(h)))
    rows = np.ascontiguousarray(depth, dtype="<f4")
    chunks = b"".join(struct.pack("<2i", y, row_bytes) + rows[y].tobytes() for y in range(h))
    return header + offsets + chunks


def write_exr(path: str | os.PathLike, depth: object, overwrite: bool = False) -> Path:
    """Uncompressed float32 OpenEXR of an (H,W) depth map, values written unchanged.

    The channel is "Y" (luminance): Blender, Nuke, tev, DJV and image viewers show it as a grey
    image, whereas a lone "Z" is often treated as an auxiliary depth pass that shows black. PPD
    depth is relative anyway; shuffle Y into depth.Z in the compositor if a Z pass is wanted."""
    data = _exr_bytes(_as_array(depth, 2, "EXR depth"))
    return atomic_write(path, lambda f: f.write(data), overwrite)




def _pil_to_array(img: Image.Image) -> np.ndarray:
    """(H,W,3) float32 in [0,1]; 16-bit greyscale keeps its precision, alpha is dropped."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        grey = np.asarray(img).astype(np.float32) / 65535.0
    elif img.mode == "F":
        grey = np.asarray(img, dtype=np.float32)
    else:
        return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return np.repeat(np.clip(grey, 0, 1)[..., None], 3, axis=2)


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Read an image file as (1,3,H,W) float32 RGB in [0,1] (EXIF rotation applied, first frame)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder, not an image file; give one image (`predict` of the command line "
                         "takes folders).")
    if not path.is_file():
        raise InputError(f"image not found: {path}. Check the path and file name.")
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty (0 bytes), as an interrupted copy or download leaves it. Copy or "
                         "export the image again.")
    try:
        with Image.open(path) as img:
            arr = _pil_to_array(ImageOps.exif_transpose(img))
    except UnidentifiedImageError as e:
        raise InputError(f"cannot read {path} as an image ({e}). Use a PNG, JPEG, WebP, TIFF or "
                         "BMP file.") from e
    except (OSError, ValueError) as e:       # a known format that fails part-way: truncated or damaged
        raise InputError(f"{path} is damaged or incomplete ({e}). Copy or export the image again.") from e
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None].contiguous()
