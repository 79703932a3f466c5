"""Point-cloud, save and edge-metric nodes: tiny random models end to end, and analytic scenes as MASK inputs."""
from __future__ import annotations

import importlib
import logging
import math
from pathlib import Path

import pytest
import torch

import scenes
from comfyui_ppd import metrics
from mesh_files import read_glb, read_ply
from pack_nodes import node_classes

H, W = scenes.HEIGHT, scenes.WIDTH
DEPTH, DISPARITY, PPD = "depth (far = larger)", "disparity (near = larger)", "PPD log-depth"
RED = torch.tensor([1.0, 0.0, 0.0])
FLIP = torch.tensor([1.0, -1.0, -1.0])


@pytest.fixture()
def nodes(pack):
    m = node_classes(pack)
    return m["PPD_DepthToPointCloud"](), m["PPD_SavePointCloud"](), m["PPD_EdgeMetricPreview"]()


@pytest.fixture()
def ppd_packet(pack, comfy_env):
    m = node_classes(pack)
    model, _ = m["PPD_LoadModel"]().load("ppd.pth", "depth_anything_v2_vitl.pth", "auto")["result"]
    sem, = m["PPD_SemanticEncoder"]().encode(model, torch.rand(2, 40, 60, 3), "custom long side", 96)
    return m["PPD_DepthSampler"]().sample(model, sem, 2, 5)["result"][0]


def cloud_of(to_points, depth_kind=DEPTH, fov=60.0, focal=0.0, near=1.0, far=10.0, stride=1, threshold=0.0, **inputs):
    points, summary = to_points.unproject(depth_kind, fov, focal, near, far, stride, threshold, **inputs)
    return points, summary


def measure(metric_node, depth_kind=DEPTH, fov=60.0, focal=0.0, near=1.0, far=10.0, **inputs):
    keys = ("heatmap", "edge_ratio", "image_ratio", "count", "chamfer", "abs_rel", "delta1", "summary")
    return dict(zip(keys, metric_node.measure(depth_kind, fov, focal, near, far, **inputs)["result"]))


def box() -> torch.Tensor:
    return scenes.box_scene().float()


def blurred_box() -> torch.Tensor:
    return scenes.gaussian_blur(scenes.box_scene(), 2.0).float()


def block_upsample(t: torch.Tensor, k: int) -> torch.Tensor:
    """Repeat every pixel of (..., H, W[, C]) k times along both image axes."""
    axis = -3 if t.shape[-1] == 3 and t.ndim == 4 else -2
    return t.repeat_interleave(k, axis).repeat_interleave(k, axis + 1)


# --- definitions -------------------------------------------------------------------------------------------
def test_definitions_have_tooltips_and_documented_outputs(pack):
    m = node_classes(pack)
    refs = [m["PPD_DepthToPointCloud"], m["PPD_SavePointCloud"], m["PPD_EdgeMetricPreview"]]
    for cls in refs:
        assert cls.CATEGORY == "PPD" and cls.DESCRIPTION.strip()
        assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES) == len(cls.OUTPUT_TOOLTIPS)
        for section in ("required", "optional"):
            for name, (kind, *opts) in cls.INPUT_TYPES().get(section, {}).items():
                assert opts and opts[0].get("tooltip"), name
                if kind in ("INT", "FLOAT"):
                    assert opts[0]["min"] <= opts[0]["default"] <= opts[0]["max"]
    assert refs[1].OUTPUT_NODE is True


# --- PPD depth from the sampler, end to end ---------------------------------------------------------------
def test_ppd_depth_to_files_end_to_end(nodes, ppd_packet, comfy_env):
    to_points, save, _ = nodes
    near, far = 5.0, 6.0                                    # random tiny-model depth spans far beyond [0, 1]
    points, summary = cloud_of(to_points, near=near, far=far, ppd_depth=ppd_packet)
    p = ppd_packet["depth"][:, 0].double()                  # (2, 64, 96) normalised log-depth
    want_z = torch.expm1(math.log1p(near) + p * (math.log1p(far) - math.log1p(near)))
    assert len(points["frames"]) == 2 and summary.count("6,144 points from the 96 x 64 (W x H) depth grid") == 2
    for b, frame in enumerate(points["frames"]):
        cloud = frame["cloud"]
        assert cloud.points.shape == (64 * 96, 3) and (cloud.height, cloud.width) == (64, 96)
        # float32 expm1(log1p(near) + p * ...) with |argument| < 2: a few EPS relative; rtol 1e-5 ~ 80 EPS
        assert torch.allclose(cloud.points[:, 2].double(), want_z[b].reshape(-1), rtol=1e-5)
        # no image connected: the packet's own resized image colours the points, pixel for pixel
        assert torch.allclose(cloud.colors, ppd_packet["image"][b].movedim(0, -1).reshape(-1, 3))
    glb_path, ply_path, mesh_path = save.save(points, "ppd/points", True, True, False, 0.04)["result"]
    assert (glb_path, ply_path, mesh_path) == ("ppd/points_00001_.glb", "ppd/points_00001_.ply", "")
    out = Path(comfy_env.folder_paths.get_output_directory())
    for b, name in enumerate(["points_00001_", "points_00002_"]):
        xyz, rgb = read_ply(out / "ppd" / f"{name}.ply")
        cloud = points["frames"][b]["cloud"]
        assert xyz.shape == (64 * 96, 3) and torch.allclose(xyz, cloud.points * FLIP)
        doc, (pos, _) = read_glb(out / "ppd" / f"{name}.glb")
        assert doc["meshes"][0]["primitives"][0]["mode"] == 0 and pos.shape == (64 * 96, 3)


def test_focal_px_is_in_original_image_pixels(nodes, ppd_packet):
    points, _ = cloud_of(nodes[0], focal=50.0, near=5.0, far=6.0, ppd_depth=ppd_packet)
    K = points["frames"][0]["intrinsics"]                   # input 40x60 -> grid 64x96: 1.6x the pixels
    assert float(K[0, 0]) == pytest.approx(50.0 * 96 / 60) and K[0, 2] == 48 and K[1, 2] == 32


def test_edge_metrics_on_ppd_depth(nodes, ppd_packet):
    out = measure(nodes[2], near=5.0, far=6.0, ppd_depth=ppd_packet)
    assert out["heatmap"].shape == (2, 64, 96, 3) and out["summary"].startswith("image 1: flying")
    assert 0 <= out["image_ratio"] <= out["edge_ratio"] <= 1 and isinstance(out["count"], int)
    assert all(math.isnan(out[k]) for k in ("chamfer", "abs_rel", "delta1"))
    calm = (out["heatmap"] != RED).any(-1)                  # not flying: the dimmed packet image
    image = ppd_packet["image"].movedim(1, -1)
    assert torch.allclose(out["heatmap"][calm], 0.35 * image[calm])


# --- analytic scenes as MASK ----------------------------------------------------------------------------
def test_plane_at_a_known_distance_comes_back_there(nodes):
    points, summary = cloud_of(nodes[0], depth_map=torch.full((1, H, W), 2.5))
    cloud = points["frames"][0]["cloud"]
    assert cloud.points.shape == (H * W, 3) and f"{H * W:,} points" in summary
    assert torch.allclose(cloud.points, (scenes.rays() * 2.5).reshape(-1, 3).float(), atol=1e-5)


@pytest.mark.parametrize("stride", [2, 3])
def test_stride_keeps_every_nth_pixel(nodes, stride):
    depth = scenes.box_scene(95, 127).float()[None]
    cloud = cloud_of(nodes[0], stride=stride, depth_map=depth)[0]["frames"][0]["cloud"]
    assert cloud.points.shape[0] == math.ceil(95 / stride) * math.ceil(127 / stride)
    assert bool((cloud.pixels % stride == 0).all())


def test_kinds_and_a_depth_image_give_the_same_cloud(nodes):
    want = (scenes.rays() * box()[..., None].double()).reshape(-1, 3).float()
    grey = box()[None, ..., None].expand(1, H, W, 3)
    for kind, inputs in [(DEPTH, {"depth_map": box()[None]}), (DISPARITY, {"depth_map": 1 / box()[None]}),
                         (DEPTH, {"depth_image": grey}),
                         (PPD, {"depth_map": scenes.to_ppd(box())[None], "reference_depth": box()[None]})]:
        cloud = cloud_of(nodes[0], kind, **inputs)[0]["frames"][0]["cloud"]
        assert torch.allclose(cloud.points, want, rtol=1e-4, atol=1e-5), kind


def test_moge_geometry_gives_scale_and_camera(nodes):
    f = scenes.focal(W, 50.0)
    mask = torch.ones(1, 2 * H, 2 * W, dtype=torch.bool)
    mask[:, :, :30] = False
    moge_depth = block_upsample(box(), 2)[None].clone()
    moge_depth[~mask] = math.inf                                       # core MoGe marks invalid pixels so
    moge = {"depth": moge_depth, "mask": mask,
            "intrinsics": torch.tensor([[[f / W, 0, 0.5], [0, f / H, 0.5], [0, 0, 1]]])}
    points, _ = cloud_of(nodes[0], PPD, fov=60.0, depth_map=scenes.to_ppd(box())[None], moge_geometry=moge)
    want = (scenes.rays(fov_deg=50.0) * box()[..., None].double()).reshape(-1, 3).float()
    assert torch.allclose(points["frames"][0]["cloud"].points, want, rtol=1e-4, atol=1e-5)
    # focal_px wins over MoGe's camera
    points, _ = cloud_of(nodes[0], PPD, focal=scenes.focal(W, 70.0), depth_map=scenes.to_ppd(box())[None],
                         moge_geometry=moge)
    want = (scenes.rays(fov_deg=70.0) * box()[..., None].double()).reshape(-1, 3).float()
    assert torch.allclose(points["frames"][0]["cloud"].points, want, rtol=1e-4, atol=1e-5)


def test_mask_keeps_ones_and_is_resized_nearest(nodes):
    keep = torch.zeros(H, W)
    keep[10:30, 20:50] = 1
    cloud = cloud_of(nodes[0], depth_map=box()[None], mask=block_upsample(keep, 2)[None])[0]["frames"][0]["cloud"]
    assert torch.equal(cloud.pixels, keep.bool().nonzero())


def test_image_larger_than_depth_is_resized_to_the_depth_grid(nodes):
    small = torch.rand(1, H, W, 3, generator=torch.Generator().manual_seed(0))
    depth = torch.cat([box()[None], box()[None]])                       # one image for a batch of two
    points, _ = cloud_of(nodes[0], depth_map=depth, image=block_upsample(small, 2))
    for frame in points["frames"]:
        assert frame["cloud"].points.shape[0] == H * W
        assert torch.allclose(frame["cloud"].colors, small[0].reshape(-1, 3), atol=1e-6)


def test_discontinuity_filter_only_when_asked(nodes):
    full = cloud_of(nodes[0], depth_map=box()[None])[0]["frames"][0]["cloud"]
    cut = cloud_of(nodes[0], threshold=0.04, depth_map=box()[None])[0]["frames"][0]["cloud"]
    assert full.points.shape[0] == H * W and 0 < cut.points.shape[0] < H * W


def test_save_mesh_and_never_overwrite(nodes, comfy_env):
    to_points, save, _ = nodes
    points, _ = cloud_of(to_points, stride=2, depth_map=box()[None])
    first = save.save(points, "clouds/box", True, True, True, 0.04)
    second = save.save(points, "clouds/box", False, True, False, 0.04)
    assert first["result"] == ("clouds/box_00001_.glb", "clouds/box_00001_.ply", "clouds/box_00001_mesh.glb")
    assert second["result"] == ("clouds/box_00002_.glb", "", "")
    assert {f["filename"] for f in first["ui"]["3d"]} == {"box_00001_.glb", "box_00001_.ply", "box_00001_mesh.glb"}
    folder = Path(comfy_env.folder_paths.get_output_directory()) / "clouds"
    assert sorted(p.name for p in folder.iterdir()) == ["box_00001_.glb", "box_00001_.ply", "box_00001_mesh.glb",
                                                        "box_00002_.glb"]
    doc, (pos, _, idx) = read_glb(folder / "box_00001_mesh.glb")
    assert doc["meshes"][0]["primitives"][0]["mode"] == 4
    z = -pos[:, 2][idx.view(-1, 3).long()]                              # viewer frame: depth is -z
    assert float((z.amax(1) / z.amin(1)).max()) < 1.0001                # no triangle bridges box and wall


def test_interrupt_between_images_leaves_whole_files(nodes, comfy_env, cancel_at_check):
    to_points, save, _ = nodes
    points, _ = cloud_of(to_points, stride=4, depth_map=torch.stack([box(), box()]))
    cancel_at_check(2)                                                   # Cancel before the 2nd image
    with pytest.raises(comfy_env.InterruptProcessingException):
        save.save(points, "cut", True, True, False, 0.04)
    folder = Path(comfy_env.folder_paths.get_output_directory())
    assert sorted(p.name for p in folder.iterdir()) == ["cut_00001_.glb", "cut_00001_.ply"]


# --- edge metrics on analytic scenes ------------------------------------------------------------------
def test_exact_depth_has_no_flying_pixels_and_zero_error(nodes):
    out = measure(nodes[2], depth_map=box()[None], gt_depth=box()[None])
    assert out["edge_ratio"] == 0 and out["image_ratio"] == 0 and out["count"] == 0
    assert out["chamfer"] == pytest.approx(0, abs=1e-9) and out["abs_rel"] == pytest.approx(0, abs=1e-6)
    assert out["delta1"] == 1 and "\n" not in out["summary"] and "edge Chamfer 0.0 mm" in out["summary"]
    assert not (out["heatmap"] == RED).all(-1).any()


def test_heatmap_is_red_exactly_where_pixels_fly(nodes):
    out = measure(nodes[2], depth_map=blurred_box()[None])
    flying = metrics.flying_pixel_ratio(blurred_box(), scenes.focal())["flying_mask"]
    assert out["edge_ratio"] > 0 and out["count"] == int(flying.sum()) > 0
    assert torch.equal((out["heatmap"][0] == RED).all(-1), flying)
    assert math.isnan(out["chamfer"]) and math.isnan(out["abs_rel"]) and math.isnan(out["delta1"])


def test_batch_numbers_are_averaged_and_ground_truth_resized_to_the_depth(nodes):
    depth = torch.stack([box(), blurred_box()])
    gt = block_upsample(box(), 2)[None]                                 # one 2x ground truth for both
    out = measure(nodes[2], depth_map=depth, gt_depth=gt)
    one = [measure(nodes[2], depth_map=d[None], gt_depth=box()[None]) for d in depth]
    for key in ("edge_ratio", "image_ratio", "chamfer", "abs_rel", "delta1"):
        assert out[key] == pytest.approx((one[0][key] + one[1][key]) / 2, rel=1e-6), key
    assert out["count"] == one[0]["count"] + one[1]["count"] and one[1]["chamfer"] > 0
    assert out["summary"].splitlines() == [f"image {i + 1}: {o['summary']}" for i, o in enumerate(one)]
    assert out["heatmap"].shape == (2, H, W, 3)


# --- bad input ------------------------------------------------------------------------------------------
def run_both(nodes, **inputs):
    """Call the point-cloud and the metric node with the same inputs; yields each call."""
    yield lambda: cloud_of(nodes[0], **inputs)
    metric_inputs = {k: v for k, v in inputs.items() if k not in ("stride", "threshold", "mask")}
    yield lambda: measure(nodes[2], **metric_inputs)


@pytest.mark.parametrize("inputs, message", [
    ({}, "no depth is connected"),
    ({"depth_map": torch.ones(1, H, W), "depth_image": torch.ones(1, H, W, 3)}, "only one depth input"),
    ({"depth_map": torch.full((1, H, W), math.nan)}, "NaN/inf"),
    ({"depth_map": torch.full((1, H, W), 0.5), "depth_kind": PPD}, "constant"),
    ({"depth_map": torch.zeros(1, H, W)}, "<= 0"),
    ({"depth_map": torch.zeros(1, H, W), "depth_kind": DISPARITY}, "zero or negative disparity"),
    ({"depth_map": torch.ones(1, H, W), "fov": 0.0}, "between 0 and 180"),
    ({"depth_map": torch.ones(1, H, W), "fov": 180.0}, "between 0 and 180"),
    ({"depth_map": torch.ones(2, H, W), "image": torch.rand(3, H, W, 3)}, "image has 3 images"),
])
def test_bad_input_is_refused_clearly_by_both_nodes(nodes, inputs, message):
    for call in run_both(nodes, **inputs):
        with pytest.raises(ValueError, match=message):
            call()


def test_error_in_a_batch_names_the_image(nodes):
    depth = torch.stack([box(), box()])
    depth[1, 5, 5] = math.inf
    for call in run_both(nodes, depth_map=depth):
        with pytest.raises(ValueError, match="image 2 of 2: .*1 NaN/inf"):
            call()


def test_empty_mask_and_unmatched_ground_truth_are_refused(nodes):
    with pytest.raises(ValueError, match="selects no pixels"):
        cloud_of(nodes[0], depth_map=box()[None], mask=torch.zeros(1, H, W))
    with pytest.raises(ValueError, match="gt_depth has 2 images but the depth has 3"):
        measure(nodes[2], depth_map=box().expand(3, H, W), gt_depth=box().expand(2, H, W))


def test_wrong_packets_are_refused(nodes):
    with pytest.raises(ValueError, match="PPD_DEPTH"):
        cloud_of(nodes[0], ppd_depth={"nothing": 1})
    with pytest.raises(ValueError, match="MOGE_GEOMETRY"):
        cloud_of(nodes[0], depth_map=box()[None], moge_geometry=torch.ones(3))
    with pytest.raises(ValueError, match="PPD_POINTS"):
        nodes[1].save({}, "x", True, True, False, 0.04)
    points, _ = cloud_of(nodes[0], depth_map=box()[None])
    with pytest.raises(ValueError, match="nothing to save"):
        nodes[1].save(points, "x", False, False, False, 0.04)


def test_huge_cloud_warning_reaches_the_log_and_summary(pack, nodes, monkeypatch, caplog):
    engine_geometry = importlib.import_module(pack.__name__ + ".comfyui_ppd.depth3d")   # the nodes' own engine
    monkeypatch.setattr(engine_geometry, "MAX_POINTS_BEFORE_WARNING", 1000)
    with caplog.at_level(logging.WARNING, logger="comfyui_ppd"):
        points, summary = cloud_of(nodes[0], depth_map=box()[None])
    assert "Use stride 2" in caplog.text and "Use stride 2" in summary
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="comfyui_ppd"):
        cloud_of(nodes[0], stride=4, depth_map=box()[None])            # 768 points: quiet
    assert "stride" not in caplog.text
