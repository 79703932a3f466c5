"""Render the registry icon (docs/icon.png): the example room's depth in the pack's spectral colour map, 400x400.

The depth is the analytic scene behind example_inputs/ppd_example.png, made PPD-like (log(1 + d), normalised
by its 2 % and 98 % quantiles) and drawn by the same renderer as PPD Depth Render. Run from the repository root:
``python tools/make_icon.py [out.png]``.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from comfyui_ppd.imaging import render_depth  # noqa: E402
from tests.support.scenes import room_view, to_ppd  # noqa: E402

SIZE = 400                                                          # the registry's largest square icon


def render_icon(size: int = SIZE) -> Image.Image:
    """The room's PPD-style depth as an RGB image, size x size, near red and far violet."""
    depth = to_ppd(room_view(size, size)[1])[None, None]             # (1,1,H,W), larger = farther
    rgb, _ = render_depth(depth, mode="colormap", cmap="spectral")   # (1,3,H,W) in [0,1]
    return Image.fromarray((rgb[0].permute(1, 2, 0) * 255).round().byte().numpy())


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "icon.png"
    render_icon().save(out, optimize=True)
    print(f"wrote {out}")
