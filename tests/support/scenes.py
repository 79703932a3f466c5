"""Analytic depth maps for the geometry and metric tests, and the flying-pixel table.

Every scene is ray-cast exactly through the pixel centres (u + 0.5, v + 0.5) of a pinhole camera
with the principal point at the image centre, the convention of ``comfyui_ppd.depth3d``. Depth is
the z coordinate (metres, OpenCV frame). ``python -m tests.support.scenes`` prints the blur table, the metric
alignment table and the outlier-filter table (docs/metric-geometry.md); ``python -m tests.support.scenes --flicker``
the flicker table (docs/video-and-flicker.md).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

HEIGHT, WIDTH, FOV_DEG = 96, 128, 60.0
WALL_Z = 4.0


def focal(width: int = WIDTH, fov_deg: float = FOV_DEG) -> float:
    """Focal length in pixels for a horizontal field of view."""
    return (width / 2) / math.tan(math.radians(fov_deg) / 2)


def rays(height: int = HEIGHT, width: int = WIDTH, fov_deg: float = FOV_DEG) -> torch.Tensor:
    """(H, W, 3) float64 ray directions with z = 1 through every pixel centre."""
    f = focal(width, fov_deg)
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float64),
                          torch.arange(width, dtype=torch.float64), indexing="ij")
    return torch.stack([(u + 0.5 - width / 2) / f, (v + 0.5 - height / 2) / f, torch.ones_like(u)], -1)


def plane_depth(d: torch.Tensor, point: tuple, normal: tuple) -> torch.Tensor:
    """z of the hit of every ray with the plane through ``point`` with ``normal`` (inf when missed)."""
    n, p = d.new_tensor(normal), d.new_tensor(point)
    t = (n @ p) / (d @ n)
    return torch.where(t > 0, t, torch.full_like(t, math.inf))


def box_scene(height: int = HEIGHT, width: int = WIDTH) -> torch.Tensor:
    """A fronto-parallel rectangle 2 m away in front of a wall at 4 m."""
    d = rays(height, width)
    z_box = 2.0
    x, y = d[..., 0] * z_box, d[..., 1] * z_box
    inside = (x.abs() < 0.45) & ((y - 0.05).abs() < 0.35)
    return torch.where(inside, torch.full_like(x, z_box), torch.full_like(x, WALL_Z))


def sphere_scene(height: int = HEIGHT, width: int = WIDTH, radius: float = 0.6,
                 centre: tuple = (0.1, 0.0, 2.5)) -> torch.Tensor:
    """A sphere in front of a wall at 4 m."""
    d = rays(height, width)
    c = d.new_tensor(centre)
    dc, dd = d @ c, (d * d).sum(-1)
    disc = dc ** 2 - dd * (c @ c - radius ** 2)
    t = (dc - disc.clamp_min(0).sqrt()) / dd
    return torch.where(disc > 0, t, torch.full_like(t, WALL_Z))


def slanted_scene(height: int = HEIGHT, width: int = WIDTH, tilt_deg: float = 60.0) -> torch.Tensor:
    """A single plane 3 m away, tilted by ``tilt_deg`` about the x axis (a floor-like ramp)."""
    t = math.radians(tilt_deg)
    return plane_depth(rays(height, width), (0.0, 0.0, 3.0), (0.0, -math.sin(t), math.cos(t)))


SCENES = {"box": box_scene, "sphere": sphere_scene, "slanted plane": slanted_scene}


def gaussian_blur(depth: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur an (H, W) map across its discontinuities, the way a regression model smears edges."""
    r = max(1, math.ceil(3 * sigma))
    x = torch.arange(-r, r + 1, dtype=depth.dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    img = F.pad(depth[None, None], (r, r, r, r), mode="replicate")
    img = F.conv2d(img, k.view(1, 1, 1, -1))
    return F.conv2d(img, k.view(1, 1, -1, 1))[0, 0]


def down_up(depth: torch.Tensor, factor: int) -> torch.Tensor:
    """Bilinear downsample by ``factor`` and back up: the low-resolution-model smear."""
    h, w = depth.shape
    small = F.interpolate(depth[None, None], size=(h // factor, w // factor), mode="bilinear",
                          align_corners=False, antialias=True)
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0, 0]


def to_ppd(depth: torch.Tensor) -> torch.Tensor:
    """PPD's training target for a metric depth: log(1+d) normalised by its 2 % and 98 % quantiles."""
    log_d = torch.log1p(depth.double())
    lo, hi = torch.quantile(log_d.flatten(), torch.tensor([0.02, 0.98], dtype=torch.float64))
    return ((log_d - lo) / (hi - lo)).float()


def blur_table(sigmas: tuple = (1.0, 2.0, 3.0), factors: tuple = (2, 4)) -> list[dict]:
    """Flying-pixel ratio and edge Chamfer of every scene: exact, Gaussian-blurred, bilinear down-up."""
    from comfyui_ppd.metrics import edge_point_metrics, flying_pixel_ratio

    rows = []
    for name, render in SCENES.items():
        gt = render().float()
        variants = ([("exact", gt)] + [(f"blur r{s:g}", gaussian_blur(gt, s)) for s in sigmas]
                    + [(f"down-up x{k}", down_up(gt, k)) for k in factors])
        for label, pred in variants:
            fly = flying_pixel_ratio(pred, focal())
            ev = edge_point_metrics(pred, gt, focal(), kind="depth")
            rows.append({"scene": name, "depth": label, "edge_ratio": fly["edge_ratio"],
                         "flying": fly["flying_count"], "chamfer_mm": 1000 * ev["chamfer"],
                         "abs_rel": ev["abs_rel"]})
    return rows


def markdown_table(headers: list[str], text_columns: int, rows: list[list[str]]) -> str:
    """A Markdown table: the first `text_columns` columns left-aligned, the others right-aligned."""
    rule = ["---"] * text_columns + ["---:"] * (len(headers) - text_columns)
    lines = ["| " + " | ".join(cells) + " |" for cells in [headers, *rows]]
    return "\n".join([lines[0], "|" + "|".join(rule) + "|", *lines[1:]])


def format_table(rows: list[dict]) -> str:
    """Markdown table of ``blur_table`` rows."""
    return markdown_table(["scene", "depth", "flying / edge band", "flying px", "edge Chamfer (mm)", "AbsRel"], 2,
                          [[r["scene"], r["depth"], f"{100 * r['edge_ratio']:.1f}%", str(r["flying"]),
                            f"{r['chamfer_mm']:.1f}", f"{r['abs_rel']:.4f}"] for r in rows])


def metric_alignment(scene: str = "sphere", outlier_fraction: float = 0.2, seed: int = 0) -> dict:
    """A known camera and metric depth through align_to_metric + unprojection, against the truth.

    PPD's depth is ``to_ppd(truth)`` (exactly affine in log(1+d)); the reference is the true depth with
    ``outlier_fraction`` of the pixels replaced by U(0.1, 50) m junk that stays inside the mask. The camera
    is given as MoGe's normalised intrinsics (fx/W, fy/H, cx = cy = 0.5).
    """
    from comfyui_ppd import align_to_metric
    from comfyui_ppd.families.moge2 import intrinsics_to_pixels, unproject_pixels
    from comfyui_ppd.families.moge2.camera import unproject_centres
    from comfyui_ppd.families.moge2.metric import fit_log_depth

    truth = SCENES[scene]()                                                  # (H, W) float64 metres
    log_d = torch.log1p(truth)
    lo, hi = torch.quantile(log_d.flatten(), torch.tensor([0.02, 0.98], dtype=torch.float64))
    ppd = to_ppd(truth)
    gen = torch.Generator().manual_seed(seed)
    junk = torch.rand(truth.shape, generator=gen, dtype=torch.float64) < outlier_fraction
    reference = torch.where(junk, 0.1 + 49.9 * torch.rand(truth.shape, generator=gen, dtype=torch.float64), truth)
    mask = torch.ones_like(truth, dtype=torch.bool)
    _, a, b, _, _ = fit_log_depth(ppd, reference.float(), mask)
    metric = align_to_metric(ppd, reference.float(), mask)
    f = focal()
    k_norm = torch.tensor([[f / WIDTH, 0, 0.5], [0, f / HEIGHT, 0.5], [0, 0, 1]], dtype=torch.float32)
    points_true = rays() * truth[..., None]                                  # pixel centres, float64
    centres = unproject_centres(metric[None], k_norm[None])[0].double()
    integer = unproject_pixels(metric, intrinsics_to_pixels(k_norm, HEIGHT, WIDTH), mask).view(HEIGHT, WIDTH, 3)
    half_pixel = 0.5 * truth / f                                             # depth2pcd's offset: j vs j + 0.5
    shift = (points_true[..., :2] - integer[..., :2]) - half_pixel[..., None]
    # The PPD map is float32: its rounding (6e-8 of values ~1) bounds how well a and b can come back.
    return {"scene": scene, "outliers": outlier_fraction, "a": a, "a_true": float(hi - lo), "b": b,
            "b_true": float(lo), "depth_rel_err": float(((metric.double() - truth) / truth).abs().max()),
            "centres_point_err_m": float((centres - points_true).norm(dim=-1).max()),
            "integer_offset_err_m": float(shift.abs().max()), "half_pixel_max_m": float(half_pixel.max())}


def format_metric_table(rows: list[dict]) -> str:
    """Markdown table of ``metric_alignment`` rows."""
    return markdown_table(["scene", "outliers in reference", "a true", "abs(a - a true)", "abs(b - b true)",
                           "max depth rel. err", "max point err, centres (m)", "depth2pcd: offset - 0.5 px (m)"], 1,
                          [[r["scene"], f"{100 * r['outliers']:.0f}%", f"{r['a_true']:.4f}",
                            f"{abs(r['a'] - r['a_true']):.1e}", f"{abs(r['b'] - r['b_true']):.1e}",
                            f"{r['depth_rel_err']:.1e}", f"{r['centres_point_err_m']:.1e}",
                            f"{r['integer_offset_err_m']:.1e}"] for r in rows])




# --- a textured room for the example inputs and the video (flicker) tests -----------------------
ROOM_WALL_Z, ROOM_FLOOR_Y = 6.0, 1.2


def _hit_box(origin: torch.Tensor, d: torch.Tensor, lo: tuple, hi: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray/axis-aligned box hit distance t (inf when missed) and the hit face's normal axis (0, 1, 2)."""
    lo_t, hi_t = d.new_tensor(lo), d.new_tensor(hi)
    inv = 1.0 / torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
    t0, t1 = (lo_t - origin) * inv, (hi_t - origin) * inv
    near, far = torch.minimum(t0, t1), torch.maximum(t0, t1)
    t_in, axis = near.max(-1)
    t_out = far.min(-1).values
    hit = (t_in <= t_out) & (t_in > 0)
    return torch.where(hit, t_in, torch.full_like(t_in, math.inf)), axis


def room_view(height: int, width: int, camera_x: float = 0.0, fov_deg: float = FOV_DEG
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray-cast a room (checkered back wall at 6 m, tiled floor, a box and a sphere) from a camera at
    (camera_x, 0, 0) looking down +z. Returns RGB (3, H, W) in [0, 1] and metric depth z (H, W), float32."""
    d = rays(height, width, fov_deg)                                         # (H, W, 3), z = 1
    o = d.new_tensor([camera_x, 0.0, 0.0])
    big = torch.full(d.shape[:2], math.inf, dtype=d.dtype)
    t_wall = torch.where(d[..., 2] > 0, (ROOM_WALL_Z - o[2]) / d[..., 2], big)
    t_floor = torch.where(d[..., 1] > 1e-9, (ROOM_FLOOR_Y - o[1]) / d[..., 1].clamp_min(1e-9), big)
    t_box, box_axis = _hit_box(o, d, (-1.3, 0.2, 3.0), (-0.3, ROOM_FLOOR_Y, 3.8))
    c = d.new_tensor([0.9, 0.45, 3.3])
    oc = o - c
    bq, cq = (d * oc).sum(-1), (oc * oc).sum() - 0.75 ** 2
    aq = (d * d).sum(-1)
    disc = bq ** 2 - aq * cq
    t_sphere = torch.where(disc > 0, (-bq - disc.clamp_min(0).sqrt()) / aq, big)
    ts = torch.stack([t_wall, t_floor, t_box, t_sphere])                     # (4, H, W)
    t, which = ts.min(0)
    p = o + d * t[..., None]                                                 # hit points (H, W, 3)
    light = d.new_tensor([-0.4, -0.8, -0.45])                                # towards the light
    light = light / light.norm()
    normal = torch.zeros_like(p)
    normal[..., 2] = -1.0                                                    # wall faces the camera
    floor = which == 1
    normal[floor] = d.new_tensor([0.0, -1.0, 0.0])
    box = which == 2
    axis_n = torch.zeros_like(p).scatter_(-1, box_axis[..., None], 1.0) * -torch.sign(d)
    normal[box] = axis_n[box]
    sphere = which == 3
    normal[sphere] = ((p - c) / 0.75)[sphere]
    shade = 0.3 + 0.7 * (normal @ light).clamp_min(0)
    checker = ((torch.floor(p[..., 0] * 2) + torch.floor(p[..., 1] * 2)) % 2)           # wall: 0.5 m tiles
    tiles = ((torch.floor(p[..., 0] * 1.5) + torch.floor(p[..., 2] * 1.5)) % 2)         # floor
    albedo = torch.stack([0.75 - 0.25 * checker, 0.72 - 0.2 * checker, 0.65 - 0.15 * checker], -1)
    albedo[floor] = torch.stack([0.55 - 0.2 * tiles, 0.4 - 0.15 * tiles, 0.3 - 0.1 * tiles], -1)[floor]
    albedo[box] = d.new_tensor([0.2, 0.45, 0.8])
    albedo[sphere] = d.new_tensor([0.85, 0.3, 0.25])
    rgb = (albedo * shade[..., None]).clamp(0, 1).permute(2, 0, 1)
    return rgb.float(), (t * d[..., 2]).float()


def pan_clip(frames: int, height: int, width: int, pan_m: float = 0.6) -> tuple[torch.Tensor, torch.Tensor]:
    """A camera panning sideways by `pan_m` metres over the room: RGB (N,3,H,W) and metric depth (N,H,W)."""
    views = [room_view(height, width, camera_x=pan_m * (i / max(frames - 1, 1) - 0.5)) for i in range(frames)]
    return torch.stack([v[0] for v in views]), torch.stack([v[1] for v in views])


def write_examples(folder: str) -> None:
    """The pack's example inputs (example_inputs/): a still of the room and a short pan as an animated WebP."""
    from pathlib import Path

    from PIL import Image

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    to_pil = lambda x: Image.fromarray((x.permute(1, 2, 0) * 255).round().byte().numpy())  # noqa: E731
    to_pil(room_view(384, 512)[0]).save(out / "ppd_example.png", optimize=True)
    frames = [to_pil(f) for f in pan_clip(8, 192, 256)[0]]
    frames[0].save(out / "ppd_frames.webp", save_all=True, append_images=frames[1:], quality=90, duration=125, loop=0)


def write_example_clip(path: str, frames: int = 24, height: int = 192, width: int = 256, fps: int = 12) -> None:
    """The pack's example video (example_inputs/ppd_clip.mp4): the room pan as H.264 (needs PyAV)."""
    import av

    clip = (pan_clip(frames, height, width)[0].permute(0, 2, 3, 1) * 255).round().byte().numpy()
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "20"}
        for rgb in clip:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())



def outlier_filter_table(height: int = 384, width: int = 512, variants: tuple = ("exact", "blur r2", "down-up x4")
                         ) -> list[dict]:
    """The statistical outlier filter (20 neighbours, 3 sigma, 9x9 image window) on each scene: flying pixels
    (metrics.flying_pixel_ratio) before and after, points removed, and the filter's time."""
    import time

    from comfyui_ppd.families.moge2.metric import window_outlier_filter
    from comfyui_ppd.metrics import flying_pixel_ratio

    f = focal(width)
    make = {"exact": lambda d: d, "blur r2": lambda d: gaussian_blur(d, 2.0), "down-up x4": lambda d: down_up(d, 4)}
    rows = []
    for name, render in SCENES.items():
        gt = render(height, width)
        for label in variants:
            depth = make[label](gt).float()
            points = rays(height, width).float() * depth[..., None]
            start = time.perf_counter()
            keep = window_outlier_filter(points, torch.ones_like(depth, dtype=torch.bool))
            seconds = time.perf_counter() - start
            before = flying_pixel_ratio(depth, f)
            after = flying_pixel_ratio(depth, f, mask=keep)
            removed = ~keep
            rows.append({"scene": name, "depth": label, "flying_before": before["flying_count"],
                         "flying_after": int((before["flying_mask"] & keep).sum()),
                         "edge_ratio_before": before["edge_ratio"], "edge_ratio_after": after["edge_ratio"],
                         "removed": int(removed.sum()), "removed_flying": int((removed & before["flying_mask"]).sum()),
                         "points": depth.numel(), "seconds": seconds})
    return rows


def format_outlier_table(rows: list[dict]) -> str:
    """Markdown table of ``outlier_filter_table`` rows."""
    return markdown_table(["scene", "depth", "flying px before", "flying px after", "points removed",
                           "of them flying", "filter time (s)"], 2,
                          [[r["scene"], r["depth"], *(str(r[k]) for k in ("flying_before", "flying_after", "removed",
                                                                          "removed_flying")), f"{r['seconds']:.2f}"]
                           for r in rows])


# --- flicker: jittered depth videos and their table ----------------------------------------------
def background_mask(depth: torch.Tensor, fov_deg: float = FOV_DEG) -> torch.Tensor:
    """Bool (N,H,W): pixels of a `pan_clip` depth video that see the back wall or the floor. A sideways pan
    leaves their depth at every pixel unchanged (the wall is fronto-parallel, the floor's depth depends on
    the row only), so they are the pan's static regions; the box and sphere move across the image."""
    d = rays(*depth.shape[-2:], fov_deg)
    up = d[..., 1]
    floor = torch.where(up > 1e-9, ROOM_FLOOR_Y / up.clamp_min(1e-9), torch.full_like(up, math.inf))
    background = torch.minimum(floor, torch.full_like(floor, ROOM_WALL_Z)).float()
    return torch.isclose(depth, background.expand_as(depth), rtol=1e-6, atol=0)


def still_clip(frames: int, height: int, width: int) -> torch.Tensor:
    """Metric depth (N,H,W) of a still camera in the room: every frame the same."""
    return room_view(height, width)[1].expand(frames, height, width).clone()


def ppd_video(depth: torch.Tensor, per_frame: bool = False) -> torch.Tensor:
    """PPD-style depth of a metric video: log(1+d) normalised by the 2 %/98 % quantiles of the whole clip (one
    affine map, so static regions stay static), or of each frame on its own (`per_frame`, the image model's way)."""
    if per_frame:
        return torch.stack([to_ppd(f) for f in depth])
    log_d = torch.log1p(depth.double())
    lo, hi = torch.quantile(log_d.flatten()[::7], torch.tensor([0.02, 0.98], dtype=torch.float64))
    return ((log_d - lo) / (hi - lo)).float()


def jitter_frames(depth: torch.Tensor, sigma_scale: float, sigma_shift: float, seed: int = 0
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """exp(l_t) * d[t] + c_t with l_t ~ N(0, sigma_scale), c_t ~ N(0, sigma_shift) per frame, frame 0 left as is
    (it is the reference the per-frame figures are measured in). -> jittered video, ls (N,), c (N,) float64."""
    gen = torch.Generator().manual_seed(seed)
    ls, c = (torch.randn(len(depth), generator=gen, dtype=torch.float64) * s for s in (sigma_scale, sigma_shift))
    ls[0], c[0] = 0.0, 0.0
    return (ls.exp()[:, None, None] * depth + c[:, None, None]).float(), ls, c


WINDOW_JITTER = ((0.0, 0.0), (0.08, -0.05), (-0.06, 0.04))   # (log-scale, shift) given to windows 0, 1, 2


def window_predictions(depth: torch.Tensor, jitter: tuple = WINDOW_JITTER) -> tuple[torch.Tensor, list[list[int]]]:
    """What a video model whose every window has its own scale/shift would predict: for the PPVD window plan
    of the video, window w holds exp(l_w) * depth[slot] + c_w -> (windows, 16, H, W) and the plan."""
    from comfyui_ppd.families.ppvd import window_plan

    plan = window_plan(len(depth))
    if len(plan) > len(jitter):
        raise ValueError(f"{len(plan)} windows but only {len(jitter)} jitters")
    return torch.stack([math.exp(ls) * depth[slots] + c for slots, (ls, c) in zip(plan, jitter)]), plan


def frame_windows(frames: int) -> list[int]:
    """The window each output frame comes from (window 0: its 16 slots, later windows: slots 3..15)."""
    from comfyui_ppd.families.ppvd import window_plan
    from comfyui_ppd.families.ppvd.align import OVERLAP

    plan = window_plan(frames)
    return ([0] * len(plan[0]) + [w for w in range(1, len(plan)) for _ in plan[w][OVERLAP:]])[:frames]


def unaligned_video(windows: torch.Tensor, frames: int) -> torch.Tensor:
    """The windows stitched without alignment (window 0 whole, later windows from slot 3), as the aligner would."""
    from comfyui_ppd.families.ppvd.align import OVERLAP

    return torch.cat([windows[0]] + [w[OVERLAP:] for w in windows[1:]])[:frames]


def flicker_table(frames: int = 24, height: int = 72, width: int = 96) -> list[dict]:
    """Flicker figures (comfyui_ppd.flicker) of exact, jittered and window-stitched PPD-style depth videos."""
    from comfyui_ppd.families.ppvd import align_windows
    from comfyui_ppd.flicker import measure_flicker

    still = ppd_video(still_clip(frames, height, width))
    pan_metric = pan_clip(frames, height, width)[1]
    pan, static = ppd_video(pan_metric), background_mask(pan_metric)
    long_metric = pan_clip(42, height // 2, width // 2)[1]                   # 3 windows of 16 (stride 13)
    long, long_static = ppd_video(long_metric), background_mask(long_metric)
    windows, _ = window_predictions(long)
    window_l = torch.tensor([WINDOW_JITTER[w][0] for w in frame_windows(42)], dtype=torch.float64)
    window_c = torch.tensor([WINDOW_JITTER[w][1] for w in frame_windows(42)], dtype=torch.float64)
    window_m = window_c - window_l.exp() * window_c[0]                     # shift in frame 0's units
    j2, j5, jp = jitter_frames(still, 0.02, 0.02), jitter_frames(still, 0.05, 0.05), jitter_frames(pan, 0.02, 0.02)
    rows: list[tuple] = [
        ("still", "exact", still, None, None),
        ("still", "jitter σ 2% / 0.02", j2[0], None, j2[1:]),
        ("still", "jitter σ 5% / 0.05", j5[0], None, j5[1:]),
        ("pan", "exact, all px", pan, None, None),
        ("pan", "exact", pan, static, None),
        ("pan", "jitter σ 2% / 0.02", jp[0], static, jp[1:]),
        ("pan", "each frame normalised alone", ppd_video(pan_metric, per_frame=True), static, None),
        ("pan 42 fr", "3 windows, not aligned", unaligned_video(windows, 42), long_static, (window_l, window_m)),
        ("pan 42 fr", "3 windows, align_windows", align_windows(windows), long_static, None),
    ]
    out = []
    for clip, depth_label, video, mask, injected in rows:
        r = measure_flicker(video, mask)
        inj = None if injected is None else (float(injected[0].std(correction=0)),
                                             r.percent_of_range(float(injected[1].std(correction=0))))
        out.append({"clip": clip, "depth": depth_label, "static": 100 * r.static_fraction.mean().item(),
                    "injected": inj, "scale_spread": r.scale_spread,
                    "shift_spread": r.percent_of_range(r.shift_spread), "scale_jump": r.scale_jump,
                    "shift_jump": r.percent_of_range(r.shift_jump), "change": r.percent_of_range(r.mean_change),
                    "residual": r.percent_of_range(r.mean_residual)})
    return out


def format_flicker_table(rows: list[dict]) -> str:
    """Markdown table of ``flicker_table`` rows."""
    lines = [("| clip | depth | static px | injected spread, scale / shift | per-frame scale spread | per-frame shift "
              "spread | scale jumps (RMS) | shift jumps (RMS) | mean abs change | after scale/shift fit |"),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        inj = r["injected"]
        inj = "-" if inj is None else f"{100 * inj[0]:.3f}% / {inj[1]:.3f}%"
        lines.append(f"| {r['clip']} | {r['depth']} | {r['static']:.0f}% | {inj} | {100 * r['scale_spread']:.3f}% "
                     f"| {r['shift_spread']:.3f}% | {100 * r['scale_jump']:.3f}% | {r['shift_jump']:.3f}% "
                     f"| {r['change']:.3f}% | {r['residual']:.3f}% |")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    if "--flicker" in sys.argv[1:]:
        print("PPD-style depth (log(1+d), 2-98 % normalised per clip), 72x96 px, 24 frames; pan 0.6 m sideways;")
        print("shift and change figures in % of the depth range, scales in % (std / RMS of log-scale x 100);")
        print("injected spread: the std over frames of the scale/shift actually drawn (frame 0 is the reference)")
        print(format_flicker_table(flicker_table()))
    else:
        print(f"{HEIGHT}x{WIDTH} px, horizontal FOV {FOV_DEG:g} deg, wall at {WALL_Z:g} m")
        print(format_table(blur_table()))
        print()
        print(format_metric_table([metric_alignment(s, o) for s in SCENES for o in (0.0, 0.2, 0.4)]))
        print()
        print("Statistical outlier filter, 512x384, 20 neighbours, 3 sigma, 9x9 window")
        print(format_outlier_table(outlier_filter_table()))
