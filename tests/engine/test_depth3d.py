"""Unprojection, scale mapping, meshes and the PLY / GLB writers, checked on analytic scenes."""
from __future__ import annotations

import importlib
import math
import warnings

import pytest
import torch

import scenes
from comfyui_ppd import depth3d as geo
from comfyui_ppd.errors import InputError
from comfyui_ppd.io import meshes
from mesh_files import read_glb, read_ply

H, W = scenes.HEIGHT, scenes.WIDTH


def K(fov: float = scenes.FOV_DEG) -> torch.Tensor:
    return geo.camera_intrinsics(H, W, fov_deg=fov)


# ---------------------------------------------------------------- camera

def test_fov_and_focal_convert_both_ways():
    assert geo.focal_from_fov(90.0, 200) == pytest.approx(100.0)
    assert geo.fov_from_focal(100.0, 200) == pytest.approx(90.0)
    assert geo.fov_from_focal(geo.focal_from_fov(37.5, 1024), 1024) == pytest.approx(37.5)
    k = geo.camera_intrinsics(48, 64, focal_px=80.0)
    assert k.tolist() == [[80.0, 0.0, 32.0], [0.0, 80.0, 24.0], [0.0, 0.0, 1.0]]


@pytest.mark.parametrize("fov", [0.0, -10.0, 180.0, 200.0])
def test_impossible_fov_is_refused(fov):
    with pytest.raises(InputError, match="between 0 and 180"):
        geo.camera_intrinsics(H, W, fov_deg=fov)


def test_non_positive_focal_is_refused():
    with pytest.raises(InputError, match="positive"):
        geo.camera_intrinsics(H, W, focal_px=0.0)


@pytest.fixture()
def moge(pack):
    """The node-side MOGE_GEOMETRY conversion (the engine takes plain tensors)."""
    return importlib.import_module(pack.__name__ + ".comfyui_ppd.io.moge_geometry")


def test_moge_intrinsics_normalized_and_pixel_forms_agree(moge):
    f = geo.focal_from_fov(60.0, W)
    normalized = torch.tensor([[[f / W, 0, 0.5], [0, f / H, 0.5], [0, 0, 1]]], dtype=torch.float32)
    packet = {"intrinsics": normalized, "depth": torch.ones(1, H, W)}
    # float32 intrinsics of a few hundred pixels (focal ~ W): one float32 step there is ~3e-5; 1e-4 ~ 3 steps
    assert torch.allclose(moge.intrinsics(packet, H, W), K(), atol=1e-4)
    # pixel intrinsics of a half-size MoGe grid, used for a full-size depth map
    pixel = torch.tensor([[[f / 2, 0, W / 4], [0, f / 2, H / 4], [0, 0, 1]]], dtype=torch.float32)
    half = {"intrinsics": pixel, "image": torch.zeros(1, H // 2, W // 2, 3)}
    assert torch.allclose(moge.intrinsics(half, H, W), K(), atol=1e-4)


def test_moge_packet_without_intrinsics_is_refused(moge):
    with pytest.raises(ValueError, match="field of view"):
        moge.intrinsics({"depth": torch.ones(1, H, W)}, H, W)


# ---------------------------------------------------------------- unprojection

def test_pixel_centres_are_symmetric_about_the_principal_point():
    cloud = geo.depth_to_point_cloud(torch.full((H, W), 2.0), K())
    pts = cloud.points.view(H, W, 3)
    assert torch.allclose(pts[:, 0, 0], -pts[:, -1, 0])
    assert torch.allclose(pts[0, :, 1], -pts[-1, :, 1])
    # pixel 0's centre is half a pixel inside the left image edge, which sits at tan(fov/2)·z
    edge = math.tan(math.radians(scenes.FOV_DEG / 2)) * 2.0
    # float32 unprojection: a product and a quotient of float32 values, a few EPS (1.2e-7) relative; rel 1e-5
    # ~ 80 EPS
    assert float(pts[0, 0, 0]) == pytest.approx(-edge * (W - 1) / W, rel=1e-5)


def test_unprojected_scene_matches_the_renderers_rays():
    depth = scenes.sphere_scene()
    cloud = geo.depth_to_point_cloud(depth, K())
    expected = (scenes.rays() * depth[..., None]).reshape(-1, 3).float()
    # both sides float32 rays * depth of a few metres (step ~ 4.8e-7 at 4 m): 1e-5 ~ 20 steps, for the float64
    # rays rounded to float32
    assert torch.allclose(cloud.points, expected, atol=1e-5)
    rows, cols = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    assert torch.equal(cloud.pixels, torch.stack([rows, cols], -1).reshape(-1, 2))
    assert (cloud.height, cloud.width) == (H, W)


def test_slanted_plane_unprojects_to_that_plane():
    tilt = math.radians(60.0)
    cloud = geo.depth_to_point_cloud(scenes.slanted_scene(tilt_deg=60.0), K())
    pts = cloud.points.double()
    centre = pts.mean(0)
    normal = torch.linalg.svd(pts - centre, full_matrices=False).Vh[-1]
    residual = ((pts - centre) @ normal).abs().max()
    # float32 points of a few metres (step ~ 4.8e-7): the plane fit residual is a few steps; 1e-5 ~ 20 steps
    assert residual < 1e-5
    assert abs(float(centre @ normal)) == pytest.approx(3.0 * math.cos(tilt), rel=1e-5)
    assert abs(float(normal @ torch.tensor([0.0, -math.sin(tilt), math.cos(tilt)], dtype=torch.float64))) == \
        pytest.approx(1.0, abs=1e-6)


def test_stride_keeps_every_nth_pixel_at_its_own_centre():
    depth = scenes.box_scene()
    full = geo.depth_to_point_cloud(depth, K())
    thin = geo.depth_to_point_cloud(depth, K(), stride=3)
    assert len(thin.points) == math.ceil(H / 3) * math.ceil(W / 3)
    assert bool((thin.pixels % 3 == 0).all())
    index = thin.pixels[:, 0] * W + thin.pixels[:, 1]
    assert torch.equal(thin.points, full.points[index])


def test_mask_drops_exactly_the_masked_pixels():
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[10:30, 20:50] = True
    cloud = geo.depth_to_point_cloud(scenes.box_scene(), K(), mask=mask)
    assert torch.equal(cloud.pixels, mask.nonzero())


def test_discontinuity_filter_drops_the_pixels_beside_the_step():
    depth = scenes.box_scene()
    cloud = geo.depth_to_point_cloud(depth, K(), discontinuity_threshold=0.04)
    windows = torch.nn.functional.unfold(depth[None, None].double(), 3, padding=1)[0]  # (9, H*W), 0 = pad
    real = windows.clamp_min(1e-9)
    mixed = ((windows.amax(0) - torch.where(windows > 0, real, math.inf).amin(0)) > 0).view(H, W)
    assert mixed.any() and (~mixed).any()
    assert torch.equal(cloud.pixels, (~mixed).nonzero())
    assert geo.depth_to_point_cloud(depth, K(), discontinuity_threshold=1.5).points.shape[0] == H * W


def test_image_is_resized_to_the_depth_grid():
    big = torch.rand(3 * H, 3 * W, 3, generator=torch.Generator().manual_seed(0))
    footprint_mean = big.reshape(H, 3, W, 3, 3).mean((1, 3))  # each depth pixel covers 3x3 image pixels
    cloud = geo.depth_to_point_cloud(torch.full((H, W), 3.0), K(), big)
    # box average of 9 values in [0,1): 9 float32 roundings of ~6e-8 each -> <= 5.4e-7; atol 1e-6
    assert torch.allclose(cloud.colors, footprint_mean.reshape(-1, 3), atol=1e-6)
    small = footprint_mean
    as_bytes = (small * 255).round().to(torch.uint8)
    cloud8 = geo.depth_to_point_cloud(torch.full((H, W), 3.0), K(), as_bytes[None])
    assert torch.allclose(cloud8.colors, as_bytes.reshape(-1, 3).float() / 255)


def test_without_image_nearer_points_are_brighter():
    cloud = geo.depth_to_point_cloud(scenes.box_scene(), K())
    near = cloud.points[:, 2] < 3
    assert cloud.colors[near].min() > cloud.colors[~near].max()
    assert float(cloud.colors.min()) >= 0 and float(cloud.colors.max()) <= 1


# ---------------------------------------------------------------- scale

def test_ppd_near_far_mapping():
    p = torch.tensor([[0.0, 1.0, 0.5]])
    d = geo.metric_depth(p, "ppd", near=1.0, far=9.0)
    assert d[0, :2].tolist() == pytest.approx([1.0, 9.0], rel=1e-6)
    assert float(d[0, 2]) == pytest.approx(math.sqrt(2 * 10) - 1, rel=1e-6)  # geometric mean in 1 + d


def test_ppd_alignment_ignores_a_corrupted_quarter_of_the_reference():
    truth = scenes.sphere_scene().float()
    reference = truth.clone()
    reference[:, : W // 4] = 30.0  # e.g. sky filled with MoGe's maximum
    reference[0, 0] = math.inf
    got = geo.metric_depth(scenes.to_ppd(truth), "ppd", reference=reference)
    # the fit runs in float64 on float32 inputs: their relative step EPS maps back through exp with a gain of
    # ~3 and the result is rounded to float32 once more: a few EPS (1.2e-7); rtol 1e-4 (~840 EPS) is loose
    # but far below what a fit pulled by the corrupted quarter would miss by (> 1%)
    assert torch.allclose(got, truth, rtol=1e-4)


@pytest.mark.parametrize("kind, make", [("depth", lambda d: 0.5 * d + 0.2),
                                        ("disparity", lambda d: 3.0 / d + 0.1)])
def test_other_kinds_align_in_their_own_space(kind, make):
    truth = scenes.box_scene().float()
    got = geo.metric_depth(make(truth), kind, reference=truth)
    assert torch.allclose(got, truth, rtol=1e-4)


def test_alignment_accepts_a_moge_packet_at_another_size(moge):
    truth = scenes.sphere_scene().float()
    big = truth.repeat_interleave(2, 0).repeat_interleave(2, 1)
    mask = torch.ones(1, 2 * H, 2 * W, dtype=torch.bool)
    mask[:, :, :20] = False
    depth = big[None].clone()
    depth[~mask] = math.inf
    ref, valid = moge.reference({"depth": depth, "mask": mask})
    got = geo.metric_depth(scenes.to_ppd(truth), "ppd", reference=ref, reference_mask=valid)
    assert torch.allclose(got, truth, rtol=1e-4)


def test_robust_fit_survives_forty_percent_random_outliers():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(20000, generator=g)
    y = 2.5 * x + 0.7 + 0.01 * torch.randn(20000, generator=g)
    y[:8000] = torch.rand(8000, generator=g) * 10 - 5
    a, b = geo.fit_affine_robust(x, y)
    # statistics, not rounding: 12,000 inliers with noise 0.01 give a slope standard error ~
    # 0.01*sqrt(12/12000) = 3e-4; 2e-3 is ~6 sigma
    assert a == pytest.approx(2.5, abs=2e-3) and b == pytest.approx(0.7, abs=2e-3)


def test_negative_slope_falls_back_to_the_mean_ratio():
    x = torch.linspace(1.0, 2.0, 50)
    y = 5.0 - x
    a, b = geo.fit_affine_robust(x, y)
    assert (a, b) == (pytest.approx(float(y.mean() / x.mean())), 0.0)


# ---------------------------------------------------------------- mesh

def test_mesh_is_cut_at_the_box_edge_and_faces_the_camera():
    depth = scenes.box_scene()
    mesh = geo.depth_to_mesh(depth, K(), discontinuity_threshold=0.04)
    z = mesh.vertices[:, 2][mesh.faces]
    assert float((z.amax(1) / z.amin(1)).max()) < 1.0001
    quads = torch.stack([depth[:-1, :-1], depth[:-1, 1:], depth[1:, 1:], depth[1:, :-1]])
    flat_quads = int((quads.amax(0) == quads.amin(0)).sum())
    assert mesh.faces.shape[0] == 2 * flat_quads
    v = mesh.vertices[mesh.faces].double()
    normals = torch.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1)
    assert bool(((normals * v[:, 0]).sum(-1) < 0).all())
    assert mesh.faces.max() == mesh.vertices.shape[0] - 1


def test_uncut_mesh_has_two_triangles_per_quad():
    mesh = geo.depth_to_mesh(scenes.box_scene(), K(), discontinuity_threshold=0.0, stride=2)
    h, w = math.ceil(H / 2), math.ceil(W / 2)
    assert mesh.faces.shape[0] == 2 * (h - 1) * (w - 1)
    assert mesh.vertices.shape[0] == h * w


# ---------------------------------------------------------------- writers

def small_cloud():
    image = torch.rand(H, W, 3, generator=torch.Generator().manual_seed(1))
    return geo.depth_to_point_cloud(scenes.sphere_scene(), K(), image, stride=4)


def test_ply_round_trip_in_the_viewer_frame(tmp_path):
    cloud = small_cloud()
    path = meshes.write_ply(tmp_path / "cloud.ply", cloud)
    xyz, rgb = read_ply(path)
    assert torch.allclose(xyz, cloud.points * torch.tensor([1.0, -1.0, -1.0]))
    assert torch.equal(rgb, (cloud.colors * 255).round().to(torch.long))


def test_glb_points_round_trip(tmp_path):
    cloud = small_cloud()
    doc, (pos, col) = read_glb(meshes.write_glb(tmp_path / "cloud.glb", cloud))
    prim = doc["meshes"][0]["primitives"][0]
    assert prim["mode"] == 0 and prim["attributes"] == {"POSITION": 0, "COLOR_0": 1} and "indices" not in prim
    assert doc["scenes"][doc["scene"]]["nodes"] == [0] and doc["nodes"][0]["mesh"] == 0
    flipped = (cloud.points * torch.tensor([1.0, -1.0, -1.0])).double()
    # GLB stores float32 exactly (so ~0 expected): 1e-6 / 1e-7 only absorb the float64 view of the float32
    # values
    assert torch.allclose(pos, flipped, atol=1e-6) and torch.allclose(col, cloud.colors.double(), atol=1e-7)
    acc = doc["accessors"][0]
    assert acc["min"] == pytest.approx(pos.min(0).values.tolist())
    assert acc["max"] == pytest.approx(pos.max(0).values.tolist())
    assert float(pos[:, 2].max()) < 0  # in front of a glTF camera looking down -z


def test_glb_mesh_round_trip(tmp_path):
    mesh = geo.depth_to_mesh(scenes.box_scene(), K(), stride=4)
    path = meshes.write_glb_mesh(tmp_path / "mesh.glb", mesh.vertices, mesh.faces, mesh.colors)
    doc, (pos, col, idx) = read_glb(path)
    prim = doc["meshes"][0]["primitives"][0]
    assert prim["mode"] == 4 and prim["indices"] == 2 and doc["accessors"][2]["componentType"] == 5125
    assert torch.equal(idx.view(-1, 3).long(), mesh.faces)
    # GLB stores float32 exactly: 1e-6 only absorbs the float64 view of the float32 values
    assert torch.allclose(pos, (mesh.vertices * torch.tensor([1.0, -1.0, -1.0])).double(), atol=1e-6)
    assert col.shape == (mesh.vertices.shape[0], 3)


def test_writers_never_overwrite_unless_told(tmp_path):
    cloud = small_cloud()
    path = meshes.write_ply(tmp_path / "a.ply", cloud)
    before = path.read_bytes()
    with pytest.raises(InputError, match="already exists"):
        meshes.write_ply(path, geo.depth_to_point_cloud(torch.full((H, W), 1.0), K()))
    assert path.read_bytes() == before
    meshes.write_glb(tmp_path / "a.ply", cloud, overwrite=True)
    assert path.read_bytes()[:4] == b"glTF"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ply"]  # no temporary files left


# ---------------------------------------------------------------- bad input

def test_nan_depth_is_refused_with_a_count_unless_masked():
    depth = scenes.box_scene().float()
    depth[0, :3] = math.nan
    depth[1, 0] = math.inf
    with pytest.raises(InputError, match="4 NaN/inf pixels.*mask"):
        geo.depth_to_point_cloud(depth, K())
    with pytest.raises(InputError, match="4 NaN/inf"):
        geo.metric_depth(depth, "depth")
    mask = torch.isfinite(depth)
    assert geo.depth_to_point_cloud(depth, K(), mask=mask).points.shape[0] == H * W - 4


def test_constant_ppd_depth_is_refused():
    with pytest.raises(InputError, match="constant"):
        geo.metric_depth(torch.full((H, W), 0.5), "ppd")
    with pytest.raises(InputError, match="constant"):
        geo.metric_depth(torch.full((H, W), 0.5), "ppd", reference=scenes.box_scene())


def test_depth_behind_the_camera_is_refused_with_the_fix():
    p = scenes.to_ppd(scenes.box_scene())
    p[0, 0] = -0.8
    with pytest.raises(InputError, match="raise near above"):
        geo.metric_depth(p, "ppd", near=0.1, far=20.0)
    with pytest.raises(InputError, match="disparity"):
        geo.metric_depth(scenes.box_scene() - 3.0, "depth")
    with pytest.raises(InputError, match="behind the camera"):
        geo.depth_to_point_cloud(torch.zeros(H, W), K())


def test_empty_mask_is_refused():
    with pytest.raises(InputError, match="selects no pixels"):
        geo.depth_to_point_cloud(scenes.box_scene(), K(), mask=torch.zeros(H, W))


def test_huge_cloud_warns_and_suggests_stride(monkeypatch):
    monkeypatch.setattr(geo, "MAX_POINTS_BEFORE_WARNING", 1000)
    with pytest.warns(UserWarning, match="stride"):
        geo.depth_to_point_cloud(scenes.box_scene(), K())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        geo.depth_to_point_cloud(scenes.box_scene(), K(), stride=4)  # 768 points: no warning


def test_other_bad_parameters_are_refused():
    with pytest.raises(InputError, match="kind"):
        geo.metric_depth(scenes.box_scene(), "inverse")
    with pytest.raises(InputError, match="one image at a time"):
        geo.depth_to_point_cloud(torch.ones(2, H, W), K())
    with pytest.raises(InputError, match="stride"):
        geo.depth_to_point_cloud(scenes.box_scene(), K(), stride=0)
    with pytest.raises(InputError, match="near"):
        geo.metric_depth(scenes.to_ppd(scenes.box_scene()), "ppd", near=5.0, far=2.0)
