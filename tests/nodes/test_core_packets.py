"""Core's geometry packets as camera and scale sources (MOGE_GEOMETRY, DA3_GEOMETRY) and PPD MoGe-2 Geometry's
packet written in core's MOGE_GEOMETRY layout. The readers are plain functions; where a real ComfyUI 0.27+ is
present (COMFY_DIR) the packets are made by core's own nodes and functions, otherwise those tests are skipped."""
from __future__ import annotations

import importlib

import pytest
import torch
from tolerances import EPS

from comfyui_ppd import depth3d
from plumbing import REAL_COMFY

needs_core = pytest.mark.skipif(not REAL_COMFY, reason="needs a real ComfyUI 0.27+ (set COMFY_DIR): core's own "
                                                       "nodes make the packets")


@pytest.fixture()
def nodes(pack):
    """The packet readers as the pack loads them (engine modules: no ComfyUI import)."""
    return {name: importlib.import_module(f"{pack.__name__}.comfyui_ppd.io.{name}_geometry")
            for name in ("moge", "da3")}


def core(module: str):
    return pytest.importorskip(module, reason="this ComfyUI has no native MoGe / Depth Anything 3 (0.27.0 added them)")


def da3_packet(h=24, w=32, mode="mono", seed=0, **extra) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"depth": 1 + torch.rand(2, h, w, generator=g), "image": torch.rand(2, h, w, 3, generator=g),
            "mode": mode, **extra}


# ---------------------------------------------------------------- DA3_GEOMETRY, plain

def test_da3_reference_drops_sky_low_confidence_and_bad_depth(nodes):
    sky = torch.zeros(2, 24, 32)
    sky[1, :4] = 0.9                                   # top rows of image 2 are sky
    conf = torch.rand(2, 24, 32, generator=torch.Generator().manual_seed(1))
    packet = da3_packet(sky=sky, confidence=conf)
    packet["depth"][1, 10, 10] = float("inf")
    depth, valid = nodes["da3"].reference(packet, 1)
    assert torch.equal(depth, packet["depth"][1])
    c = conf[1]
    want = (sky[1] < 0.5) & ((c - c.min()) / (c.max() - c.min()) >= 0.1) & torch.isfinite(packet["depth"][1])
    assert torch.equal(valid, want) and not valid[:4].any() and not valid[10, 10]


def test_da3_mono_has_no_camera_and_says_what_to_do(nodes):
    assert not nodes["da3"].has_camera(da3_packet())
    with pytest.raises(ValueError, match="fov_deg or focal_px"):
        nodes["da3"].intrinsics(da3_packet(), 24, 32)


def test_da3_intrinsics_of_the_processing_grid_scale_to_the_depth_grid(nodes):
    """DA3 ran at 252 x 336 (cx = 168, cy = 126); the depth map given is 480 x 640: focal scales by 640 / 336."""
    K = torch.tensor([[300.0, 0, 168], [0, 290, 126], [0, 0, 1]])
    packet = da3_packet(mode="multiview", intrinsics=torch.stack([K, 2 * K])[None].clone())
    packet["intrinsics"][0, 1, 2, 2] = 1
    out = nodes["da3"].intrinsics(packet, 480, 640, index=0)
    assert out[0, 0].item() == pytest.approx(300 * 640 / 336) and out[1, 1].item() == pytest.approx(290 * 480 / 252)
    assert (out[0, 2].item(), out[1, 2].item()) == pytest.approx((320, 240))
    assert nodes["da3"].intrinsics(packet, 480, 640, index=1)[0, 0].item() == pytest.approx(600 * 640 / 672)


def test_da3_identity_intrinsics_are_refused(nodes):
    """Core writes identity matrices when a multiview model gave no pose."""
    packet = da3_packet(mode="multiview", intrinsics=torch.eye(3)[None, None].expand(1, 2, 3, 3).clone())
    with pytest.raises(ValueError, match="principal point"):
        nodes["da3"].intrinsics(packet, 24, 32)


def test_a_moge_packet_is_not_a_da3_packet(nodes):
    with pytest.raises(ValueError, match="DA3_GEOMETRY"):
        nodes["da3"].reference({"depth": torch.ones(1, 4, 4), "intrinsics": torch.eye(3)[None]})


# ---------------------------------------------------------------- MOGE_GEOMETRY, plain

def test_panorama_geometry_is_refused_as_a_scale_source(nodes):
    packet = {"points": torch.ones(1, 8, 16, 3), "depth": torch.ones(1, 8, 16), "mask": torch.ones(1, 8, 16).bool(),
              "image": torch.zeros(1, 8, 16, 3)}
    with pytest.raises(ValueError, match="panorama"):
        nodes["moge"].reference(packet)


def test_writer_drops_none_adds_the_image_and_shares_tensors(nodes):
    depth = torch.ones(2, 6, 8)
    packet = {"depth": depth, "mask": depth > 0, "intrinsics": torch.eye(3).expand(2, 3, 3), "normal": None,
              "points": torch.zeros(2, 6, 8, 3), "metric_scale": torch.ones(2), "kind": "moge2"}
    image = torch.rand(2, 6, 8, 4)
    out = nodes["moge"].to_core(packet, image)
    assert "normal" not in out and out["depth"] is depth and out["kind"] == "moge2"
    assert torch.equal(out["image"], image[..., :3]) and out["image"].device.type == "cpu"


# ---------------------------------------------------------------- with core's own code

@needs_core
def test_da3_valid_pixels_match_cores_own_mask_rule(nodes):
    da3 = core("comfy_extras.nodes_depth_anything_3")
    g = torch.Generator().manual_seed(3)
    packet = da3_packet(sky=torch.rand(2, 24, 32, generator=g), confidence=5 * torch.rand(2, 24, 32, generator=g))
    for i in range(2):
        want = da3._da3_build_mask(packet, i, 24, 32, nodes["da3"].CONFIDENCE_FLOOR, True)
        assert torch.equal(nodes["da3"].reference(packet, i)[1], want)


@pytest.fixture()
def core_moge_model(monkeypatch):
    """core's MoGeModel (what LoadMoGeModel returns) of a tiny MoGe-2 built by core, in float32 (core picks the text
    encoder's dtype, fp16 on a CPU, where torch has no antialiased fp16 resize)."""
    model_py = core("comfy.ldm.moge.model")
    monkeypatch.setattr(model_py.comfy.model_management, "text_encoder_dtype", lambda *a, **k: torch.float32)
    from tiny_core_moge import core_moge2
    return model_py.MoGeModel(core_moge2(model_py).state_dict())


@needs_core
def test_core_moge_inference_packet_gives_cores_own_camera(nodes, core_moge_model):
    """Core's Run MoGe Inference: its points are its depth unprojected through its intrinsics; ours from the packet
    unproject the same depth to the same points (one camera convention)."""
    moge_nodes = core("comfy_extras.nodes_moge")
    image = torch.rand(2, 42, 56, 3, generator=torch.Generator().manual_seed(4))
    packet = moge_nodes.MoGeInference.execute(core_moge_model, image, 0, 0.0, 4, True, True).result[0]
    assert set(packet) == {"image", "points", "depth", "intrinsics", "mask", "normal"}
    for i in range(2):
        depth, valid = nodes["moge"].reference(packet, i)
        assert valid.float().mean() > 0.5                     # the tiny model is made to see most pixels
        assert torch.equal(valid, packet["mask"][i] & torch.isfinite(packet["depth"][i]))
        K = nodes["moge"].intrinsics(packet, 42, 56, i)
        ours = depth3d.depth_to_points(torch.where(valid, depth, 1.0).double(), K).float()
        theirs = packet["points"][i]
        tol = 8 * EPS * theirs[valid].abs().max().item()       # a 3x3 solve and a product in float32 vs float64
        assert (ours[valid] - theirs[valid]).abs().max().item() <= tol


@needs_core
def test_our_moge2_packet_feeds_cores_render_and_mesh_nodes(pack, comfy_env, nodes):
    moge_nodes = core("comfy_extras.nodes_moge")
    geo = pack.nodes.geometry
    model = geo.PPD_LoadGeometryModel.execute("moge2_vitl_normal.pt").result[0]
    image = torch.rand(1, 40, 60, 3, generator=torch.Generator().manual_seed(5))
    result = geo.PPD_MoGe2Geometry.execute(model, image, 0, 0.0, True,
                                           "ControlNet NormalBae (R left, G up, B toward camera)").result
    packet, out = result[0], result[5]                       # PPD_GEOMETRY and its MOGE_GEOMETRY twin
    for mode in ("depth", "depth_colored", "normal_opengl", "normal_directx", "mask"):
        rendered = moge_nodes.MoGeRender.execute(out, mode).result[0]
        assert rendered.shape == (1, 40, 60, 3), mode
    # core's OpenGL normal map of our normals: (n * (1, -1, -1)) / 2 + 1/2
    gl = moge_nodes.MoGeRender.execute(out, "normal_opengl").result[0][0]
    n = packet["normal"][0] * torch.tensor([1.0, -1.0, -1.0])
    assert torch.allclose(gl, (n * 0.5 + 0.5).clamp(0, 1), atol=EPS)
    mesh = moge_nodes.MoGePointMapToMesh.execute(out, 0, 1, 0.04, True).result[0]
    assert mesh.vertices.shape[1] > 0 and mesh.faces.shape[1] > 0 and mesh.texture.shape == (1, 40, 60, 3)
