"""Model families are told apart by their keys (never file names); a known file of another family is refused
with a message that names it and says where it belongs."""
from __future__ import annotations

import pytest
import torch

from comfyui_ppd import CheckpointError, load_dit, load_semantic_encoder, registry, runtime
from comfyui_ppd.families.ppd import steps as ppd_steps
from comfyui_ppd.families.ppvd import steps as video_steps
from pack_nodes import node_classes
from plumbing import fixture_json
from tiny_models import tiny_da2_state_dict, tiny_dit_state_dict, tiny_moge_checkpoint


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(CheckpointError) as info:
        fn(*args, **kwargs)
    return str(info.value)


def meta_state_dict(entry: dict) -> dict[str, torch.Tensor]:
    """Empty (meta) tensors with the real key names and shapes of a checkpoint we cannot download here."""
    return {k: torch.empty(shape, device="meta") for k, shape in entry["keys"].items()}


def tiny_video_dit() -> dict[str, torch.Tensor]:
    """The image DiT's keys under `dit_video.` plus a temporal block and pos_embed: the PPVD layout."""
    sd = {k.replace("dit.", "dit_video.", 1): v for k, v in tiny_dit_state_dict().items()}
    blocks = {k.replace("dit_video.blocks.0.", "dit_video.temporal_blocks.0."): v
              for k, v in sd.items() if k.startswith("dit_video.blocks.0.")}
    return {**sd, **blocks, "dit_video.pos_embed": torch.zeros(1, 16, 32)}


def names(sd) -> list[str]:
    return [f.name for _, f in registry.identify(sd)]


def test_image_files_are_identified_by_keys():
    assert names(tiny_dit_state_dict())[0] == "ppd"
    assert names(tiny_da2_state_dict())[0] == "da2"
    assert names(tiny_moge_checkpoint()["model"])[0] == "moge2"
    assert names({"x.weight": torch.zeros(1)}) == []


def test_video_dit_given_to_the_image_loader_says_use_the_video_nodes(tmp_path):
    path = tmp_path / "ppd.pth"                     # an image-model name: detection ignores it
    torch.save(tiny_video_dit(), path)
    assert names(tiny_video_dit())[0] == "ppvd" and "ppd" not in names(tiny_video_dit())
    msg = _error(ppd_steps.load_pipeline, path, tmp_path / "unused.pth", runtime.precision("fp32", "cpu"))
    assert "ppd.pth" in msg and "PPVD" in msg and "use the video nodes" in msg


def test_image_dit_given_to_the_video_loader_says_use_the_image_nodes(tmp_path):
    torch.save(tiny_dit_state_dict(), tmp_path / "ppvd.pth")
    msg = _error(video_steps.load_video_pipeline, tmp_path / "ppvd.pth", tmp_path / "unused.safetensors",
                 runtime.precision("fp32", "cpu"))
    assert "ppvd.pth" in msg and "image model (PPD); use the image nodes" in msg


def test_file_names_do_not_decide_the_family(tmp_path):
    torch.save(tiny_da2_state_dict(), tmp_path / "ppd_moge.pth")
    assert "Depth Anything v2" in _error(load_dit, tmp_path / "ppd_moge.pth")
    torch.save(tiny_dit_state_dict(), tmp_path / "depth_anything_v2_vitl.pth")
    assert load_dit(tmp_path / "depth_anything_v2_vitl.pth").config.hidden_size == 32


def test_real_ppvd_and_pi3_keys_are_named():
    shapes = fixture_json("ppvd")
    ppvd, pi3 = meta_state_dict(shapes["ppvd_pth_dit_video"]), meta_state_dict(shapes["pi3_safetensors"])
    assert names(ppvd)[0] == "ppvd" and names(pi3)[0] == "pi3"
    assert "Pi3" in _error(load_dit, pi3) and "video DiT" in _error(load_semantic_encoder, ppvd)


def test_full_moge2_model_is_a_geometry_family_and_still_a_semantic_encoder():
    sd = meta_state_dict(fixture_json("moge2_geometry")["moge2_vitl_normal_model_pt"])
    found = names(sd)
    assert found[0] == "moge2_geometry" and "moge2" in found
    encoder = load_semantic_encoder(sd, device="meta")
    assert encoder.kind == "moge2" and encoder.semantic_dim == sd["encoder.output_projections.0.weight"].shape[0]
    assert "MoGe-2" in _error(load_dit, sd)


def test_load_node_refuses_the_video_dit_and_points_to_the_video_nodes(pack, comfy_env):
    folder = comfy_env.folder_paths.get_folder_paths("ppd")[-1]
    torch.save(tiny_video_dit(), f"{folder}/ppvd.pth")
    with pytest.raises(ValueError, match="video model \\(PPVD\\); use the video nodes"):
        node_classes(pack)["PPD_LoadModel"]().load("ppvd.pth", "depth_anything_v2_vitl.pth", "auto")


def test_tiny_moge2_files_are_told_apart_from_every_other_family():
    from tiny_models import tiny_moge2_full_checkpoint
    full = tiny_moge2_full_checkpoint()["model"]
    assert names(full)[:2] == ["moge2_geometry", "moge2"]                  # geometry first, encoder as well
    moge1 = {"backbone.patch_embed.proj.weight": torch.zeros(8, 3, 14, 14), "head.projects.0.weight": torch.zeros(1)}
    assert names(moge1)[0] == "moge1"
    for other in (tiny_dit_state_dict(), tiny_da2_state_dict(), tiny_moge_checkpoint()["model"], tiny_video_dit()):
        assert not {"moge2_geometry", "moge1"} & set(names(other))
