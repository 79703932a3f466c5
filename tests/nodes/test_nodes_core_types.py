"""The pack's nodes speak core's types: Save Point Cloud gives FILE_3D_PLY / FILE_3D_GLB / MESH to core's Preview
Point Cloud, Preview 3D, Save 3D Model and Get Splat; Depth to Point Cloud takes DA3_GEOMETRY and PPD MoGe-2's
MOGE_GEOMETRY. Runs against the real ComfyUI named by COMFY_DIR (0.27.0 has the types; on 0.3.64 the nodes keep
their path outputs only), skipped without one."""
from __future__ import annotations

import importlib.util
import json
import os
import struct
import types

import pytest
import torch
from core_modules import use_comfy_nodes

from plumbing import REAL_COMFY

pytestmark = pytest.mark.skipif(not REAL_COMFY, reason="needs a real ComfyUI (set COMFY_DIR): the nodes are V3 "
                                                       "nodes of comfy_api")
NORMALS = "ControlNet NormalBae (R left, G up, B toward camera)"


@pytest.fixture()
def n(pack, comfy_env):
    return types.SimpleNamespace(**{m: getattr(pack.nodes, m) for m in ("common", "geometry", "pointcloud")})


def in_prompt(node_cls, me: str, prompt: dict):
    """The node class as the executor runs it inside `prompt` (hidden unique_id and prompt set)."""
    hidden = types.SimpleNamespace(unique_id=me, prompt=prompt, extra_pnginfo=None)
    return type(node_cls.__name__, (node_cls,), {"hidden": hidden})


def cloud_points(n, depth: torch.Tensor, **options):
    args = {"depth_kind": "depth (far = larger)", "fov_deg": 60.0, "focal_px": 0.0, "near": 1.0, "far": 10.0,
            "stride": 1, "discontinuity_threshold": 0.0, "outlier_filter": False, "depth_map": depth, **options}
    return n.pointcloud.PPD_DepthToPointCloud.execute(**args).result


def save(node_cls, points, tmp_prefix="ppd/test", ply=True, glb=True, mesh=False):
    return node_cls.execute(points, tmp_prefix, ply, glb, mesh, 0.04).result


def scene(b=1, h=24, w=32) -> torch.Tensor:
    """A tilted plane with a box in front: depth in metres (B, H, W)."""
    y = torch.linspace(0, 1, h)[:, None]
    depth = (3 + 2 * y).expand(h, w).clone()
    depth[8:16, 10:20] = 1.5
    return depth.expand(b, h, w).clone()


def glb_json(path: str) -> dict:
    with open(path, "rb") as f:
        data = f.read()
    (length,) = struct.unpack_from("<I", data, 12)
    return json.loads(data[20:20 + length])


def core_nodes():
    """Skip on a core without typed 3D files; else ComfyUI's own `nodes` module for core's 3D nodes."""
    if importlib.util.find_spec("comfy_extras.nodes_gaussian_splat") is None:
        pytest.skip("this core has no typed 3D files or splats (0.27.0 added them)")
    use_comfy_nodes()


def test_without_core_3d_types_the_save_node_keeps_its_three_paths(n):
    outputs = n.pointcloud.PPD_SavePointCloud.define_schema().outputs
    names = [o.id for o in outputs]
    assert names[:3] == ["glb_path", "ply_path", "mesh_path"]          # saved workflows link by slot: unchanged
    assert names[3:] == (["cloud_ply", "cloud_glb"] if n.common.File3DPLY else []) + (["mesh"] if n.common.Mesh
                                                                                       else [])


def test_file_outputs_feed_cores_point_cloud_preview_3d_save_and_splat_nodes(n, comfy_env):
    core_nodes()
    from comfy_api.latest import Types
    from comfy_extras import nodes_gaussian_splat, nodes_load_3d, nodes_save_3d
    points, _ = cloud_points(n, scene())
    out = save(n.pointcloud.PPD_SavePointCloud, points)
    ply, glb = out[3], out[4]
    assert isinstance(ply, Types.File3D) and ply.format == "ply" and isinstance(glb, Types.File3D)
    assert os.path.basename(ply.get_source()) == os.path.basename(out[1])      # the file it saved, not a copy
    count = points["frames"][0]["cloud"].points.shape[0]
    preview = nodes_load_3d.PreviewPointCloud.execute(ply, {"camera_info": {}}, 512, 512)
    assert preview.result[0] is ply
    splat = nodes_gaussian_splat.File3DToSplat.execute(ply).result[0]
    cloud = points["frames"][0]["cloud"]
    assert splat.positions.shape == (1, count, 3)                                # the PLY's points, y up
    assert torch.allclose(splat.positions[0], cloud.points * torch.tensor([1.0, -1.0, -1.0]))
    nodes_load_3d.Preview3D.execute(glb)                                          # writes a copy for the viewer
    saver = in_prompt(nodes_save_3d.SaveGLB, "9", {})
    for value in (ply, glb):
        saved = saver.execute(value, "ppd/core_save").ui["3d"][0]
        path = os.path.join(comfy_env.folder_paths.get_output_directory(), saved["subfolder"], saved["filename"])
        assert os.path.getsize(path) == os.path.getsize(value.get_source())


def test_formats_switched_off_still_reach_a_connected_socket_from_the_temp_folder(n, comfy_env):
    core_nodes()
    points, _ = cloud_points(n, scene())
    prompt = {"7": {"class_type": "PPD_SavePointCloud", "inputs": {}},
              "8": {"class_type": "PreviewPointCloud", "inputs": {"model_3d": ["7", 3]}}}
    out = save(in_prompt(n.pointcloud.PPD_SavePointCloud, "7", prompt), points, ply=False, glb=False, mesh=True)
    assert out[:2] == ("", "") and out[2].endswith("mesh.glb")
    assert out[3] is not None and out[4] is None and out[5] is None                # only what is connected
    assert out[3].get_source().startswith(comfy_env.folder_paths.get_temp_directory())


def test_mesh_output_is_cores_mesh_in_the_gltf_frame_and_saves_with_core(n, comfy_env):
    core_nodes()
    from comfy_extras import nodes_save_3d
    points, _ = cloud_points(n, scene(b=2))
    points["frames"][1]["mask"][:4] = False                                  # a smaller second mesh
    out = save(n.pointcloud.PPD_SavePointCloud, points, mesh=True)
    mesh = out[5]
    frame = points["frames"][0]
    ours = n.pointcloud.frame_mesh(frame, 1, 0.04)
    assert mesh.vertex_counts.tolist()[0] == ours.vertices.shape[0] and mesh.vertex_counts[1] < mesh.vertex_counts[0]
    k = ours.vertices.shape[0]
    assert torch.equal(mesh.vertices[0, :k], ours.vertices * torch.tensor([1.0, -1.0, -1.0]))   # y up, -z forward
    assert torch.equal(mesh.faces[0, :ours.faces.shape[0]], ours.faces)
    saved = in_prompt(nodes_save_3d.SaveGLB, "9", {}).execute(mesh, "ppd/mesh").ui["3d"]
    assert len(saved) == 2
    doc = glb_json(os.path.join(comfy_env.folder_paths.get_output_directory(), saved[0]["subfolder"],
                                saved[0]["filename"]))
    position = doc["accessors"][doc["meshes"][0]["primitives"][0]["attributes"]["POSITION"]]
    assert position["count"] == k


def test_da3_multiview_geometry_sets_camera_and_scale(n):
    h, w = 24, 32
    K = torch.tensor([[40.0, 0, 21], [0, 40, 15.75], [0, 0, 1]])            # on DA3's 31.5 x 42 processing grid
    da3 = {"depth": 2 * scene(h=h, w=w), "image": torch.rand(1, h, w, 3), "mode": "multiview",
           "intrinsics": K[None, None].clone(), "extrinsics": torch.eye(4)[None, None, :3].clone(),
           "sky": torch.zeros(1, h, w)}
    da3["sky"][0, :2] = 1.0
    points, summary = cloud_points(n, scene(h=h, w=w), da3_geometry=da3)
    frame = points["frames"][0]
    assert frame["intrinsics"][0, 0].item() == pytest.approx(40 * w / 42)
    valid = torch.isfinite(frame["depth"])
    # depth proportional to DA3's: the robust fit gives DA3's scale (factor 2) to float32 rounding
    assert torch.allclose(frame["depth"][valid], da3["depth"][0][valid], rtol=1e-5)


def test_da3_mono_geometry_uses_the_fov_and_refuses_a_second_source(n):
    da3 = {"depth": scene(), "image": torch.rand(1, 24, 32, 3), "mode": "mono"}
    points, _ = cloud_points(n, scene(), da3_geometry=da3, fov_deg=70.0)
    fx = points["frames"][0]["intrinsics"][0, 0].item()
    assert fx == pytest.approx(16 / torch.tan(torch.deg2rad(torch.tensor(35.0))).item(), rel=1e-6)
    moge = {"depth": scene(), "intrinsics": torch.eye(3)[None], "image": torch.rand(1, 24, 32, 3)}
    with pytest.raises(ValueError, match="only one geometry source"):
        cloud_points(n, scene(), da3_geometry=da3, moge_geometry=moge)


def test_pack_moge2_packet_through_cores_socket_equals_the_geometry_socket(n):
    model = n.geometry.PPD_LoadGeometryModel.execute("moge2_vitl_normal.pt").result[0]
    image = torch.rand(1, 40, 60, 3, generator=torch.Generator().manual_seed(2))
    out = n.geometry.PPD_MoGe2Geometry.execute(model, image, 0, 0.0, True, NORMALS).result
    assert len(out) == 6 and "image" in out[5] and out[5]["depth"] is out[0]["depth"]
    ppd = {"depth_kind": "disparity (near = larger)", "depth_map": 1 / scene(h=40, w=60)}
    a = cloud_points(n, **{"depth": ppd["depth_map"]}, depth_kind=ppd["depth_kind"], geometry=out[0])[0]
    b = cloud_points(n, **{"depth": ppd["depth_map"]}, depth_kind=ppd["depth_kind"], moge_geometry=out[5])[0]
    assert torch.equal(a["frames"][0]["cloud"].points, b["frames"][0]["cloud"].points)
