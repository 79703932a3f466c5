"""MoGe-2 files in ComfyUI core's key layout (what core's LoadMoGeModel loads) load into our model by their keys.

The layout is made by core itself: its own MoGeModelV2 class and its own key remap, so these tests need a real
ComfyUI (COMFY_DIR, see tests/conftest.py) and are skipped with a reason without one.
"""
from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file
from tiny_core_moge import core_moge2
from tolerances import ENC_TOL, EPS

from comfyui_ppd import load_geometry_model
from comfyui_ppd.checkpoints import Checkpoint
from comfyui_ppd.errors import CheckpointError
from comfyui_ppd.families.moge2.core_keys import from_core_layout
from plumbing import REAL_COMFY, require_fixture_dir
from tiny_models import tiny_moge2_full_checkpoint

needs_core = pytest.mark.skipif(not REAL_COMFY, reason="needs a real ComfyUI (set COMFY_DIR to a 0.27+ checkout): "
                                                       "core's MoGe classes make the layout under test")


def core_moge():
    """core's comfy.ldm.moge.model, or a skip naming what is missing (core before 0.27 has no MoGe)."""
    return pytest.importorskip("comfy.ldm.moge.model", reason="this ComfyUI has no native MoGe (0.27.0 added it)")


def test_query_key_value_become_one_qkv_in_that_order():
    q, k, v = (torch.full((4, 4), float(i)) for i in range(3))
    pre = "encoder.backbone.encoder.layer.3.attention.attention."
    out = from_core_layout({pre + "query.weight": q, pre + "key.weight": k, pre + "value.weight": v,
                            "neck.input_blocks.0.weight": torch.ones(1)})
    assert set(out) == {"encoder.backbone.blocks.3.attn.qkv.weight", "neck.input_blocks.0.weight"}
    assert torch.equal(out["encoder.backbone.blocks.3.attn.qkv.weight"], torch.cat([q, k, v]))


def test_a_core_layout_file_missing_a_value_tensor_is_named_by_the_strict_load():
    official = tiny_moge2_full_checkpoint()["model"]
    core = {}
    for key, t in official.items():          # our own reverse of the layout, only to break one block of it
        if key == "encoder.backbone.blocks.0.attn.qkv.weight":
            q, k, _ = t.chunk(3)
            base = "encoder.backbone.encoder.layer.0.attention.attention."
            core.update({base + "query.weight": q, base + "key.weight": k})
        elif key == "encoder.backbone.patch_embed.proj.weight":
            core["encoder.backbone.embeddings.patch_embeddings.projection.weight"] = t
        else:
            core[key] = t
    with pytest.raises(CheckpointError) as err:
        load_geometry_model(core)
    assert "encoder.layer.0.attention.attention" in str(err.value) and "missing" in str(err.value)


@needs_core
def test_core_remap_of_the_real_model_pt_keys_maps_back_to_the_official_layout():
    """Core's own remap of the released model.pt's 521 keys (shapes from the fixture), mapped back by us."""
    model_py = core_moge()
    spec = json.loads((require_fixture_dir("moge2_geometry") / "real_checkpoint_shapes.json").read_text())
    official = {k: torch.empty(shape, device="meta") for k, shape in spec["moge2_vitl_normal_model_pt"]["keys"].items()}
    core = model_py._remap_state_dict(official)
    assert "encoder.backbone.embeddings.patch_embeddings.projection.weight" in core   # really core's layout
    back = from_core_layout(core)
    assert {k: tuple(v.shape) for k, v in back.items()} == {k: tuple(v.shape) for k, v in official.items()}
    model = load_geometry_model(Checkpoint(core, {}, "core.safetensors"))                        # strict, on meta
    assert model.encoder.backbone.config.num_heads == 16 and model.encoder.intermediate_layers == [5, 11, 17, 23]


@needs_core
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])        # .safetensors: read from its header first
def test_core_remapped_tiny_file_gives_bit_identical_outputs(tmp_path, suffix):
    """The same weights in core's layout (made by core's remap) and in model.pt's layout: every parameter equal
    bit for bit, outputs within float32 rounding (a concatenated qkv may be laid out differently in memory, and
    some CPU kernels then sum in another order)."""
    model_py = core_moge()
    ckpt = tiny_moge2_full_checkpoint()
    core = model_py._remap_state_dict({k: v.clone().contiguous() for k, v in ckpt["model"].items()})
    path = tmp_path / f"moge2_core{suffix}"
    torch.save(core, path) if suffix == ".pt" else save_file({k: v.contiguous() for k, v in core.items()}, str(path))
    ours = load_geometry_model(path)
    ref = load_geometry_model(Checkpoint(ckpt["model"], {"model_config": ckpt["model_config"]}, "model.pt"))
    mine, theirs = ours.state_dict(), ref.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    image = torch.rand(1, 3, 56, 70, generator=torch.Generator().manual_seed(0))
    a, b = ours(image, 96), ref(image, 96)
    for key in ("points", "mask", "normal", "metric_scale"):
        scale = float(b[key].abs().max()) + 1
        assert float((a[key] - b[key]).abs().max()) <= ENC_TOL * scale, key


@needs_core
def test_core_built_model_loads_strictly_and_matches_cores_forward(tmp_path):
    """A tiny MoGeModelV2 built with core's own class; its state dict (what LoadMoGeModel loads, checked with
    core's builder) loads into our model, whose raw outputs match core's forward and our official-layout twin."""
    model_py = core_moge()
    core = core_moge2(model_py)
    sd = {k: v.clone() for k, v in core.state_dict().items()}
    assert "encoder.backbone.encoder.layer.0.attention.attention.query.weight" in sd
    model_py.build_from_state_dict(dict(sd), dtype=torch.float32)                 # core loads it (strict)
    torch.save(sd, tmp_path / "moge2_core.pt")

    ours = load_geometry_model(tmp_path / "moge2_core.pt")                     # strict, by keys
    assert ours.encoder.intermediate_layers == [0, 1, 2, 3] and ours.has_normal
    twin = load_geometry_model(Checkpoint(from_core_layout(sd), {}, "model.pt"))
    # 84 x 112 with 48 tokens: a 6 x 8 grid both by the official int() and by core's round().
    image = torch.rand(2, 3, 84, 112, generator=torch.Generator().manual_seed(1))
    assert (int(math.sqrt(48 / (112 / 84))), int(math.sqrt(48 * 112 / 84))) == (6, 8)
    with torch.no_grad():
        want = core(image, num_tokens=48)
    got, same = ours(image, 48), twin(image, 48)
    for key in ("points", "mask", "normal", "metric_scale"):
        assert torch.equal(got[key], same[key]), key
        # Same weights and ops; core's attention kernel may sum in another order (ENC_TOL, tests/tolerances.py).
        tol = ENC_TOL * max(1.0, want[key].abs().max().item()) + EPS
        assert (got[key] - want[key]).abs().max().item() <= tol, key
