"""Whole-image depth vs tiled depth of one image: flying pixels at edges and a side-by-side PNG.

    python -m comfyui_ppd.tiles_compare OUT_WHOLE/photo_depth.npy OUT_TILED/photo_depth.npy side_by_side.png

The first file is `predict`'s depth (at the processing size), the second `predict --tiles`'s (at the input
size); both are compared on the input grid (the first resized bilinearly, as every full-size output is).
Top row: depth (spectral), bottom row: flying pixels in red.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from . import imaging, outputs
from .depth3d import camera_intrinsics
from .errors import PPDError
from .io import images


def compare(whole: torch.Tensor, tiled: torch.Tensor, fov_deg: float = 60.0) -> tuple[list[dict], np.ndarray]:
    """Flying-pixel numbers of both (h,w) PPD depths on the tiled one's grid, and the (2H, 2W, 3) panel in [0, 1]."""
    h, w = tiled.shape
    whole = imaging.resize_depth(whole.float()[None, None], (h, w))[0, 0]
    focal = float(camera_intrinsics(h, w, fov_deg=fov_deg)[0, 0])
    numbers, columns = [], []
    for depth in (whole, tiled.float()):
        result, heat = outputs.evaluate_edges(depth, "ppd", focal, drop_invalid=True)
        rgb, _ = imaging.render_depth(depth[None, None], "colormap", "spectral")
        numbers.append(result)
        columns.append(torch.cat([rgb[0].permute(1, 2, 0), heat]).numpy())
    return numbers, np.concatenate(columns, 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m comfyui_ppd.tiles_compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("whole", help="the plain predict's <name>_depth.npy")
    p.add_argument("tiled", help="predict --tiles' <name>_depth.npy")
    p.add_argument("out", help="side-by-side PNG to write (not overwritten)")
    p.add_argument("--fov", type=float, default=60.0, help="horizontal field of view in degrees (default 60)")
    args = p.parse_args(argv)
    try:
        whole, tiled = (torch.from_numpy(np.load(f)) for f in (args.whole, args.tiled))
        numbers, panel = compare(whole, tiled, args.fov)
        images.write_png8_rgb(Path(args.out), panel)
    except (OSError, ValueError, PPDError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, r in zip(("whole image", "tiled"), numbers):
        print(f"{name:>11}: flying pixels {100 * r['edge_ratio']:.1f}% of {r['edge_count']:,} edge px "
              f"({r['flying_count']:,} px)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
