"""Image maths: processing sizes, OpenCV-equivalent resizing, colormaps, depth normalisation and rendering.

Tensors are (B,C,H,W); file reading and writing live in comfyui_ppd.io."""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError

DEFAULT_AREA = 1024 * 768  # the official processing area (pixels): PPD's training resolution
DEFAULT_MULTIPLE = 16      # sides snap to PPD's coarse DiT token (DiTConfig.token_px); the pipeline passes its own

# ----------------------------------------------------------------------------- processing sizes


def _check_hw(height: int, width: int) -> None:
    if int(height) != height or int(width) != width or height < 1 or width < 1:
        raise InputError(f"image size must be positive whole numbers, got {width} x {height} (W x H)")


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
                    multiple: int = DEFAULT_MULTIPLE) -> tuple[int, int]:
    """Official PPD size: keep the aspect, scale to about `area` pixels, sides multiples of `multiple`."""
    scale = processing_scale(height, width, area)
    return _snap(height * scale, multiple), _snap(width * scale, multiple)


def long_side_size(height: int, width: int, long_side: int, multiple: int = DEFAULT_MULTIPLE) -> tuple[int, int]:
    """Aspect-keeping size whose longer side is about `long_side`; sides multiples of `multiple`."""
    _check_hw(height, width)
    if long_side < 1:
        raise InputError(f"long side must be a positive number of pixels, got {long_side}")
    scale = long_side / max(height, width)
    return _snap(height * scale, multiple), _snap(width * scale, multiple)


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
        raise InputError(f"size must be positive, got {w} x {h} (W x H)")
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
                       multiple: int = DEFAULT_MULTIPLE) -> torch.Tensor:
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


@functools.cache
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
        out.append(normalize_range(g, _quantile(g[ok], lo_q), _quantile(g[ok], hi_q)))
    return (torch.stack(out) if per_image else out[0]).to(depth.dtype)


def normalize_range(depth: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """float32 depth (any shape) -> [0,1] between `lo` and `hi` (0-d float32); non-finite -> 0, hi <= lo -> 0.
    A clip streamed frame by frame with the clip's range gets exactly normalize_depth(per_image=False)."""
    ok = torch.isfinite(depth)
    n = ((depth - lo) / (hi - lo)).clamp(0, 1) if hi > lo else torch.zeros_like(depth)
    return torch.where(ok, n, torch.zeros_like(n))


RENDER_MODES = ("controlnet", "depth", "colormap")


def render_depth(depth: torch.Tensor, mode: str = "controlnet", cmap: str = "spectral", per_image: bool = True,
                 size: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """PPD depth (B,1,h,w), larger = farther -> (RGB (B,3,H,W), grey (B,1,H,W)) in [0,1].

    controlnet: near = white (what depth ControlNets were trained on); depth: far = white;
    colormap: `cmap` over far = 1 (spectral: near red, far violet, as the official run.py).
    Normalised per image, or over the whole batch so video frames do not flicker. `size` resizes
    (bilinear) before normalising, e.g. back to the input size.
    """
    if mode not in RENDER_MODES:
        raise InputError(f"unknown render mode {mode!r}; choose one of: {', '.join(RENDER_MODES)}")
    if size is not None and tuple(size) != tuple(depth.shape[-2:]):
        depth = resize_depth(depth, size)
    grey = normalize_depth(depth, per_image=per_image)                          # (B,1,H,W), far = 1
    if mode == "controlnet":
        grey = 1 - grey
    rgb = colormap(grey[:, 0], cmap).permute(0, 3, 1, 2) if mode == "colormap" else grey.expand(-1, 3, -1, -1)
    return rgb.contiguous(), grey
