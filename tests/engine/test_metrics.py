"""Flying-pixel ratio and edge-aware point-cloud errors on exact and smeared analytic scenes."""
from __future__ import annotations

import math

import pytest
import torch

import scenes
from comfyui_ppd import metrics
from comfyui_ppd.depth3d import local_depth_range
from comfyui_ppd.errors import InputError

F_PX = scenes.focal()
OBJECTS = ["box", "sphere"]


def render(name: str) -> torch.Tensor:
    return scenes.SCENES[name]().float()


@pytest.mark.parametrize("name", OBJECTS)
def test_exact_depth_has_no_flying_pixels_and_zero_chamfer(name):
    depth = render(name)
    fly = metrics.flying_pixel_ratio(depth, F_PX)
    assert fly["edge_count"] > 100  # the object's outline is found ...
    assert fly["flying_count"] == 0  # ... and nothing on it floats
    ev = metrics.edge_point_metrics(depth, depth, F_PX)
    assert ev["edge_points"] > 100
    # identical inputs: any non-zero value is float32 rounding of point coordinates of a few metres (step
    # 4.8e-7)
    assert ev["chamfer"] == pytest.approx(0.0, abs=1e-6)
    assert ev["abs_rel"] == pytest.approx(0.0, abs=1e-6) and ev["delta1"] == 1.0


@pytest.mark.parametrize("name", OBJECTS)
def test_smeared_edges_score_worse_the_wider_the_blur(name):
    gt = render(name)
    ratios, counts, chamfers = [], [], []
    for sigma in (1.0, 2.0, 3.0):
        pred = scenes.gaussian_blur(gt, sigma)
        fly = metrics.flying_pixel_ratio(pred, F_PX)
        ratios.append(fly["edge_ratio"])
        counts.append(fly["flying_count"])
        chamfers.append(metrics.edge_point_metrics(pred, gt, F_PX)["chamfer"])
    assert ratios[0] > 0.2 and chamfers[0] > 0.05  # clearly worse than exact (0 and 0 m)
    assert ratios[0] < ratios[1] < ratios[2]
    assert counts[0] < counts[1] < counts[2]
    assert chamfers[0] < chamfers[1] < chamfers[2]


def test_bilinear_down_up_smear_is_flagged():
    gt = render("box")
    fly = metrics.flying_pixel_ratio(scenes.down_up(gt, 2), F_PX)
    assert fly["edge_ratio"] > 0.2
    assert metrics.edge_point_metrics(scenes.down_up(gt, 2), gt, F_PX)["chamfer"] > 0.05


def test_slanted_plane_has_no_edges():
    plane = render("slanted plane")
    lo, hi = local_depth_range(plane, 5)
    assert bool((hi > 1.1 * lo).any())  # steep enough that a bare jump test would fire
    for depth in (plane, scenes.gaussian_blur(plane, 2.0)):
        fly = metrics.flying_pixel_ratio(depth, F_PX)
        assert fly["edge_count"] == 0 and fly["flying_count"] == 0 and fly["edge_ratio"] == 0.0
    ev = metrics.edge_point_metrics(plane, plane, F_PX)
    assert ev["edge_points"] == 0 and math.isnan(ev["chamfer"])


def test_sensor_noise_on_surfaces_is_not_flying():
    gt = render("sphere")
    noise = 1 + 0.005 * torch.randn(gt.shape, generator=torch.Generator().manual_seed(0))
    assert metrics.flying_pixel_ratio(gt * noise, F_PX)["edge_ratio"] < 0.02


def test_flying_pixels_lie_between_the_surfaces_and_inside_the_mask():
    gt = render("box")
    pred = scenes.gaussian_blur(gt, 2.0)
    mask = torch.ones_like(gt, dtype=torch.bool)
    mask[:, : scenes.WIDTH // 2] = False
    fly = metrics.flying_pixel_ratio(pred, F_PX, mask=mask)
    flying = fly["flying_mask"]
    assert flying.any() and not (flying & ~mask).any() and fly["valid_count"] == int(mask.sum())
    assert bool((pred[flying] > 2.05).all() and (pred[flying] < 3.9).all())
    assert not (flying & ~fly["edge_mask"]).any()
    assert fly["image_ratio"] == pytest.approx(fly["flying_count"] / int(mask.sum()))


def test_ppd_kind_is_aligned_in_log_space():
    gt = render("sphere")
    ev = metrics.edge_point_metrics(scenes.to_ppd(gt), gt, F_PX, kind="ppd")
    # ppd kind: a float32 log-space fit and exp back: relative error ~ |log(1+d)| * few EPS ~ 1e-6, abs_rel <
    # 1e-5; chamfer in metres at ~5 m depth: 1e-4
    assert ev["chamfer"] < 1e-4 and ev["abs_rel"] < 1e-5 and ev["delta1"] == 1.0


def test_abs_rel_and_delta1_on_a_pattern_least_squares_cannot_remove():
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).repeat(8, 8)
    # gt = pred + 0.5 * (1, -1, -1, 1): the offset is orthogonal to 1 and to pred, so the fit is a = 1, b = 0
    gt = torch.tensor([[1.5, 1.5], [2.5, 4.5]]).repeat(8, 8)
    ev = metrics.edge_point_metrics(pred, gt, F_PX)
    # the least-squares fit is exact here (orthogonal residual) and runs in float64: 1e-9
    assert ev["scale"] == pytest.approx(1.0) and ev["shift"] == pytest.approx(0.0, abs=1e-9)
    assert ev["abs_rel"] == pytest.approx((0.5 / 1.5 + 0.5 / 1.5 + 0.5 / 2.5 + 0.5 / 4.5) / 4)
    assert ev["delta1"] == pytest.approx(0.5)  # ratios 1.5, 1.33 fail; 1.2, 1.125 pass


def test_chamfer_does_not_depend_on_the_block_size():
    gt = render("sphere")
    pred = scenes.gaussian_blur(gt, 1.0)
    big = metrics.edge_point_metrics(pred, gt, F_PX)["chamfer"]
    assert metrics.edge_point_metrics(pred, gt, F_PX, block=7)["chamfer"] == pytest.approx(big, rel=1e-9)


def test_heatmap_paints_flying_pixels_red_over_the_dimmed_background():
    gt = render("box")
    fly = metrics.flying_pixel_ratio(scenes.gaussian_blur(gt, 2.0), F_PX)["flying_mask"]
    image = torch.rand(2 * scenes.HEIGHT, 2 * scenes.WIDTH, 3, generator=torch.Generator().manual_seed(0))
    out = metrics.flying_heatmap(fly, image)
    assert out.shape == (scenes.HEIGHT, scenes.WIDTH, 3)
    assert torch.equal(out[fly], torch.tensor([1.0, 0.0, 0.0]).expand(int(fly.sum()), 3))
    assert float(out[~fly].max()) <= 0.35 + 1e-6
    grey = metrics.flying_heatmap(fly, gt)
    calm = grey[~fly]
    assert torch.equal(calm[:, 0], calm[:, 1]) and torch.equal(calm[:, 1], calm[:, 2])
    assert grey[~fly & (gt < 3)][:, 0].min() > grey[~fly & (gt > 3)][:, 0].max()  # nearer is brighter


def test_summary_is_one_line_with_the_numbers():
    gt = render("box")
    pred = scenes.gaussian_blur(gt, 1.0)
    result = {**metrics.flying_pixel_ratio(pred, F_PX), **metrics.edge_point_metrics(pred, gt, F_PX)}
    line = metrics.format_summary(result)
    assert "\n" not in line
    assert f"{100 * result['edge_ratio']:.1f}%" in line and "Chamfer" in line and "AbsRel" in line
    no_edges = metrics.edge_point_metrics(render("slanted plane"), render("slanted plane"), F_PX)
    assert "no depth edges" in metrics.format_summary(no_edges)


def test_bad_metric_inputs_are_refused():
    gt = render("box")
    with pytest.raises(InputError, match="differ in size"):
        metrics.edge_point_metrics(gt[:-1], gt, F_PX)
    with pytest.raises(InputError, match="no finite positive"):
        metrics.flying_pixel_ratio(torch.zeros_like(gt), F_PX)
    with pytest.raises(InputError, match="too small"):
        metrics.flying_pixel_ratio(gt[:4, :4], F_PX)
    with pytest.raises(InputError, match="fewer than 2"):
        metrics.edge_point_metrics(gt, torch.full_like(gt, math.nan), F_PX)
    with pytest.raises(InputError, match="selects no pixels"):
        metrics.flying_pixel_ratio(gt, F_PX, mask=torch.zeros_like(gt))


@pytest.mark.parametrize("kwargs", [{"window": 4}, {"jump": 0.0}, {"margin": 0.5}, {"max_angle_deg": 90.0}])
def test_bad_metric_parameters_are_refused(kwargs):
    with pytest.raises(InputError, match="must be"):
        metrics.flying_pixel_ratio(render("box"), F_PX, **kwargs)
    with pytest.raises(InputError, match="focal"):
        metrics.flying_pixel_ratio(render("box"), 0.0)
