"""Image-side utilities: processing sizes, OpenCV-equivalent resizing, colormaps, normalisation,
safe file writers (PNG, NPY, OpenEXR) and image loading. Torch, numpy and Pillow only."""
from __future__ import annotations

import functools
import math
import os
import struct
import uuid
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError

DEFAULT_AREA = 1024 * 768  # the official processing area (pixels)

# ----------------------------------------------------------------------------- processing sizes


def _check_hw(height: int, width: int) -> None:
    if int(height) != height or int(width) != width or height < 1 or width < 1:
        raise InputError(f"image size must be positive whole numbers, got {height}x{width}")


def processing_scale(height: int, width: int, area: int = DEFAULT_AREA) -> float:
    """The official scale sqrt(area / (H*W)); below 1 the official code uses the area filter."""
    _check_hw(height, width)
    if area < 1:
        raise InputError(f"processing area must be positive, got {area}")
    return math.sqrt(area / (height * width))


def _snap(side: float, multiple: int) -> int:
    # Python round() is half-to-even, as in the official code.
    return max(multiple, multiple * round(side / multiple))


def processing_size(height: int, width: int, area: int = DEFAULT_AREA,
                    multiple: int = 16) -> tuple[int, int]:
    """Official PPD size: keep the aspect, scale to about `area` pixels, sides multiples of 16."""
    scale = processing_scale(height, width, area)
    return _snap(height * scale, multiple), _snap(width * scale, multiple)


def long_side_size(height: int, width: int, long_side: int, multiple: int = 16) -> tuple[int, int]:
    """Aspect-keeping size whose longer side is about `long_side`; sides multiples of `multiple`."""
    _check_hw(height, width)
    if long_side < 1:
        raise InputError(f"long side must be a positive number of pixels, got {long_side}")
    scale = long_side / max(height, width)
    return _snap(height * scale, multiple), _snap(width * scale, multiple)


def encoder_input_size(height: int, width: int) -> tuple[int, int]:
    """Size fed to the ViT-14 semantic encoders: one 14 px patch per 16 px DiT patch."""
    return (height // 16) * 14, (width // 16) * 14


# ----------------------------------------------------------------------------- resizing


def _check_float_4d(x: object, what: str, channels: int | None = None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{what} must be a torch tensor, got {type(x).__name__}")
    if x.dim() != 4 or (channels is not None and x.shape[1] != channels):
        c = "C" if channels is None else str(channels)
        raise InputError(f"{what} must have shape (B,{c},H,W), got {tuple(x.shape)}; "
                         "convert ComfyUI images (B,H,W,C) with .permute(0, 3, 1, 2)")
    if not x.is_floating_point():
        raise InputError(f"{what} must be a float tensor in [0,1], got {x.dtype}; "
                         "convert with .float() / 255")
    if x.shape[-2] < 1 or x.shape[-1] < 1:
        raise InputError(f"{what} is empty: shape {tuple(x.shape)}")
    return x


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise InputError(f"size must be (height, width), got {size!r}") from None
    if h < 1 or w < 1:
        raise InputError(f"size must be positive, got {h}x{w}")
    return h, w


def _area_weights(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) box-filter matrix: overlap of output cell [o*s, (o+1)*s] with pixel j, over s."""
    s = n_in / n_out
    lo = torch.arange(n_out, dtype=torch.float64)[:, None] * s
    j = torch.arange(n_in, dtype=torch.float64)[None, :]
    overlap = (torch.minimum(lo + s, j + 1) - torch.maximum(lo, j)).clamp_min(0)
    overlap[overlap <= 1e-3] = 0  # OpenCV ignores slivers up to 1e-3 px; this also drops float noise
    return overlap / s


def _work_dtype(image: torch.Tensor) -> torch.dtype:
    return torch.float64 if image.dtype == torch.float64 else torch.float32


def resize_to(image: torch.Tensor, size: tuple[int, int], *, downscale: bool) -> torch.Tensor:
    """Resize (B,C,H,W) to `size` like the official OpenCV call: area filter when downscaling,
    else bicubic (A=-0.75, align_corners=False, clamped borders) clipped to [0,1]."""
    image = _check_float_4d(image, "image")
    h, w = _check_size(size)
    x = image.to(_work_dtype(image))
    if downscale:
        # Exact fractional box average = OpenCV INTER_AREA; separable, applied as two matmuls.
        wy = _area_weights(x.shape[-2], h).to(x.device, x.dtype)  # (h, H)
        wx = _area_weights(x.shape[-1], w).to(x.device, x.dtype)  # (w, W)
        out = wy @ (x @ wx.T)  # (B,C,h,w)
    else:
        # Official uint8 cubic saturates to 0..255, hence the clamp.
        out = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False).clamp_(0, 1)
    return out.to(image.dtype)


def resize_keep_aspect(image: torch.Tensor, area: int = DEFAULT_AREA, long_side: int | None = None,
                       multiple: int = 16) -> torch.Tensor:
    """Official PPD preprocessing resize of (B,C,H,W); `long_side` replaces the area rule.

    The filter follows the official *scalar* scale: scale < 1 means area (886x887 -> 880x880 is
    cubic). Known difference: when scale < 1 but a side still grows (scales within ~1% of 1 or sides
    under 16 px) OpenCV switches to a 2-tap filter; we keep the box filter."""
    image = _check_float_4d(image, "image")
    height, width = image.shape[-2:]
    if long_side is None:
        scale = processing_scale(height, width, area)
        size = processing_size(height, width, area, multiple)
    else:
        size = long_side_size(height, width, long_side, multiple)
        scale = long_side / max(height, width)
    return resize_to(image, size, downscale=scale < 1)


def resize_depth(depth: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize (B,1,h,w) depth, e.g. back to the input size; bilinear as in the official run.py."""
    depth = _check_float_4d(depth, "depth", channels=1)
    size = _check_size(size)
    if mode == "bilinear":
        return F.interpolate(depth, size=size, mode="bilinear", align_corners=False)
    if mode == "nearest":  # pixel-centre aligned nearest neighbour (no half-pixel shift)
        return F.interpolate(depth, size=size, mode="nearest-exact")
    raise InputError(f"unknown depth resize mode {mode!r}; use 'bilinear' or 'nearest'")


# ----------------------------------------------------------------------------- colormaps

# Anchor colours (sRGB hex). Turbo/viridis/inferno: entries 0, 8, ..., 248, 255 of the published
# 256-entry tables (Google Turbo; BIDS viridis/inferno, CC0), linearly interpolated: <= 2.2/255 off.
_EVERY_8TH = tuple(i / 255 for i in (*range(0, 256, 8), 255))
_ANCHORS: dict[str, tuple[tuple[float, ...], str]] = {
    "turbo": (_EVERY_8TH,
              "30123b 392a73 4040a2 4456c7 466be3 4680f6 4294ff 37a8fa 28bceb 1ccdd8 18ddc2 "
              "1fe9af 32f298 4ef97d 6dfe62 8bff4b a4fc3c b9f635 cdec34 dfdf37 eecf3a f8be39 "
              "fdac34 fe962b fb7e21 f46617 eb500e df3f08 d02f05 be2102 a91601 920b01 7a0403"),
    "viridis": (_EVERY_8TH,
                "440154 470d60 48186a 482374 472d7b 453781 424086 3e4989 3b528b 375b8d 33638d "
                "2f6b8e 2c728e 297a8e 26828e 23898e 21918c 1f988b 1fa088 22a785 28ae80 32b67a "
                "3fbc73 4ec36b 5ec962 70cf57 84d44b 98d83e addc30 c2df23 d8e219 ece51b fde725"),
    "inferno": (_EVERY_8TH,
                "000004 040312 0b0724 150b37 210c4a 2f0a5b 3d0965 4a0c6b 57106e 64156e 71196e "
                "7d1e6d 8a226a 972766 a32c61 b0315b bc3754 c73e4c d24644 db503b e45a31 eb6628 "
                "f1731d f68013 f98e09 fb9d07 fcac11 fbbc21 f9cb35 f5db4c f2ea69 f3f68a fcffa4"),
    # matplotlib 'Spectral': the 11 ColorBrewer Spectral colours at k/10, red (0) to violet (1).
    "spectral": (tuple(k / 10 for k in range(11)),
                 "9e0142 d53e4f f46d43 fdae61 fee08b ffffbf e6f598 abdda4 66c2a5 3288bd 5e4fa2"),
    "gray": ((0.0, 1.0), "000000 ffffff"),
}
COLORMAPS: tuple[str, ...] = tuple(_ANCHORS)


@functools.lru_cache(maxsize=None)
def _lut(name: str) -> torch.Tensor:
    """256-entry (256,3) float32 table: anchors linearly interpolated at i/255."""
    positions, hexes = _ANCHORS[name]
    rgb = np.array([[int(h[i:i + 2], 16) for i in (0, 2, 4)] for h in hexes.split()]) / 255.0
    x = np.arange(256) / 255.0
    table = np.stack([np.interp(x, positions, rgb[:, c]) for c in range(3)], axis=1)
    return torch.from_numpy(table.astype(np.float32))


def colormap(values: torch.Tensor, name: str = "spectral") -> torch.Tensor:
    """Map values in [0,1] (any shape) to RGB (...,3) float32 in [0,1].

    Indexing follows the official visualisation: index = uint8(values*255) (truncation, not
    rounding) into a 256-entry table. Values are clamped to [0,1]; NaN maps to index 0."""
    if name not in _ANCHORS:
        raise InputError(f"unknown colormap {name!r}; choose one of: {', '.join(COLORMAPS)}")
    if not isinstance(values, torch.Tensor) or not values.is_floating_point():
        raise InputError("colormap values must be a float tensor in [0,1]; normalise depth first "
                         "(normalize_depth)")
    index = (values.float().nan_to_num(0.0).clamp(0, 1) * 255).to(torch.long)
    return _lut(name).to(values.device)[index]


# ----------------------------------------------------------------------------- normalisation


def _quantile(v: torch.Tensor, q: float) -> torch.Tensor:
    """Linear-interpolated quantile of a 1-D tensor (like torch.quantile, without its size limit)."""
    if q <= 0:
        return v.min()
    if q >= 1:
        return v.max()
    s = v.sort().values
    pos = q * (s.numel() - 1)
    i = int(pos)
    j = min(i + 1, s.numel() - 1)
    return s[i] + (s[j] - s[i]) * (pos - i)


def normalize_depth(depth: torch.Tensor, per_image: bool = True, lo_q: float = 0.0,
                    hi_q: float = 1.0) -> torch.Tensor:
    """Map depth (B,1,H,W) or (B,H,W) to [0,1] between the lo_q and hi_q quantiles (0, 1 = min-max).

    per_image=False uses one range for the whole batch so video frames do not flicker. Non-finite
    values are ignored for the range and come out as 0; constant maps give 0."""
    if not isinstance(depth, torch.Tensor) or not depth.is_floating_point() or depth.dim() not in (3, 4):
        raise InputError("depth must be a float tensor of shape (B,1,H,W) or (B,H,W)")
    if not 0.0 <= lo_q < hi_q <= 1.0:
        raise InputError(f"quantiles must satisfy 0 <= lo_q < hi_q <= 1, got {lo_q}, {hi_q}")
    d = depth.float()
    groups = list(d) if per_image else [d]
    out = []
    for g in groups:
        ok = torch.isfinite(g)
        if not ok.any():
            out.append(torch.zeros_like(g))
            continue
        lo, hi = _quantile(g[ok], lo_q), _quantile(g[ok], hi_q)
        n = ((g - lo) / (hi - lo)).clamp(0, 1) if hi > lo else torch.zeros_like(g)
        out.append(torch.where(ok, n, torch.zeros_like(n)))
    return (torch.stack(out) if per_image else out[0]).to(depth.dtype)


RENDER_MODES = ("controlnet", "depth", "colormap")


def render_depth(depth: torch.Tensor, mode: str = "controlnet", cmap: str = "spectral", per_image: bool = True,
                 size: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """PPD depth (B,1,h,w), larger = farther -> (RGB (B,H,W,3), grey (B,H,W)) in [0,1].

    controlnet: near = white (what depth ControlNets were trained on); depth: far = white;
    colormap: `cmap` over far = 1 (spectral: near red, far violet, as the official run.py).
    Normalised per image, or over the whole batch so video frames do not flicker. `size` resizes
    (bilinear) before normalising, e.g. back to the input size.
    """
    if mode not in RENDER_MODES:
        raise InputError(f"unknown render mode {mode!r}; choose one of: {', '.join(RENDER_MODES)}")
    if size is not None and tuple(size) != tuple(depth.shape[-2:]):
        depth = resize_depth(depth, size)
    grey = normalize_depth(depth, per_image=per_image)[:, 0]                    # (B,H,W), far = 1
    if mode == "controlnet":
        grey = 1 - grey
    rgb = colormap(grey, cmap) if mode == "colormap" else grey[..., None].expand(*grey.shape, 3)
    return rgb.contiguous(), grey


# ----------------------------------------------------------------------------- writers


def atomic_write(path: str | os.PathLike, write_fn: Callable[[BinaryIO], None],
                 overwrite: bool = False) -> Path:
    """Write via `write_fn(binary_file)` to a temp file beside `path`, then rename it into place.

    Readers never see a partial file; an existing file is kept unless overwrite=True."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a file name to write to")
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists; pass overwrite=True or choose another file name")
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        if path.exists() and not overwrite:  # created meanwhile by someone else
            raise InputError(f"{path} already exists; pass overwrite=True or choose another file name")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise InputError(f"could not write {path}: {e.strerror or e}. Check that the folder is "
                         "writable and the disk has free space.") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _as_array(x: object, ndim: int, what: str, last: int | None = None) -> np.ndarray:
    a = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim != ndim or (last is not None and a.shape[-1] != last) or a.size == 0:
        want = "(H,W)" if last is None else f"(H,W,{last})"
        raise InputError(f"{what} must have shape {want}, got {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise InputError(f"{what} must be float values, got {a.dtype}")
    return a


def _unit_ints(a: np.ndarray, top: int, dtype: type) -> np.ndarray:
    return np.round(np.clip(np.nan_to_num(a.astype(np.float64)), 0, 1) * top).astype(dtype)


def write_png16(path: str | os.PathLike, values: object, overwrite: bool = False) -> Path:
    """16-bit greyscale PNG of (H,W) values in [0,1]: round(v*65535); NaN -> 0, clipped."""
    a = _unit_ints(_as_array(values, 2, "PNG16 values"), 65535, np.uint16)
    img = Image.fromarray(a)  # mode I;16
    return atomic_write(path, lambda f: img.save(f, format="PNG"), overwrite)


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


# ----------------------------------------------------------------------------- loading


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
    if not path.is_file():
        raise InputError(f"image not found: {path}. Check the path and file name.")
    try:
        with Image.open(path) as img:
            arr = _pil_to_array(ImageOps.exif_transpose(img))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise InputError(f"cannot read {path} as an image ({e}). Use a PNG, JPEG, WebP, TIFF or "
                         "BMP file.") from e
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None].contiguous()
