"""Checkpoint reading: prefixes and nesting accepted, wrong or damaged files refused with a clear message."""
from __future__ import annotations

import collections

import pytest
import torch
from safetensors.torch import save_file

from comfyui_ppd import CheckpointError, load_dit, load_semantic_encoder
from tiny_models import tiny_da2_state_dict, tiny_dit_state_dict, tiny_moge_checkpoint


def _strip(sd, prefix="dit."):
    return {k[len(prefix):]: v for k, v in sd.items()}


@pytest.mark.parametrize("wrap", [
    lambda sd: _strip(sd),                                             # no prefix
    lambda sd: sd,                                                     # dit.
    lambda sd: {"module." + k: v for k, v in _strip(sd).items()},
    lambda sd: {"model." + k: v for k, v in _strip(sd).items()},
    lambda sd: {"pipeline." + k: v for k, v in sd.items()},            # pipeline.dit.
    lambda sd: {"state_dict": sd},
    lambda sd: {"model": sd, "epoch": 3},
    lambda sd: {**sd, **{"sem_encoder." + k: v for k, v in tiny_da2_state_dict().items()}},
])
def test_dit_prefixes_and_nesting(tmp_path, wrap):
    reference = load_dit(tiny_dit_state_dict())
    path = tmp_path / "ppd.pth"
    torch.save(wrap(tiny_dit_state_dict()), path)
    dit = load_dit(path)
    for (k, a), b in zip(reference.state_dict().items(), dit.state_dict().values()):
        assert torch.equal(a, b), k


def test_encoder_from_full_ppd_file(tmp_path):
    """A pipeline file that carries both parts gives the DiT to load_dit and the encoder to the encoder loader."""
    sd = {**tiny_dit_state_dict(), **{"sem_encoder." + k: v for k, v in tiny_da2_state_dict().items()}}
    path = tmp_path / "ppd_full.pth"
    torch.save(sd, path)
    assert load_semantic_encoder(path).kind == "da2"
    assert load_dit(path).config.semantic_dim == 64


def test_state_dict_and_safetensors_sources(tmp_path):
    sd = tiny_dit_state_dict()
    save_file(sd, str(tmp_path / "ppd.safetensors"))
    a, b = load_dit(sd), load_dit(tmp_path / "ppd.safetensors")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_moge_checkpoint_with_config(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(tiny_moge_checkpoint(), path)
    enc = load_semantic_encoder(path)
    assert enc.kind == "moge2" and enc.intermediate_layers == [0, 1]
    assert enc(torch.rand(1, 3, 32, 48)).shape == (1, 6, 64)


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(CheckpointError) as info:
        fn(*args, **kwargs)
    return str(info.value)


def test_missing_file_names_path_and_fix(tmp_path):
    msg = _error(load_dit, tmp_path / "nope.pth")
    assert "nope.pth" in msg and "no such file" in msg and "download" in msg.lower()


def test_stable_diffusion_unet_as_dit(tmp_path):
    path = tmp_path / "sd15.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4),
               "first_stage_model.decoder.conv_in.weight": torch.zeros(2)}, str(path))
    msg = _error(load_dit, path)
    assert "sd15.safetensors" in msg and "Stable Diffusion" in msg and "PPD DiT" in msg


def test_encoder_file_as_dit_and_dit_as_encoder(tmp_path):
    torch.save(tiny_da2_state_dict(), tmp_path / "depth_anything_v2_vitl.pth")
    msg = _error(load_dit, tmp_path / "depth_anything_v2_vitl.pth")
    assert "Depth Anything v2" in msg and "encoder input" in msg
    torch.save(tiny_dit_state_dict(), tmp_path / "ppd.pth")
    msg = _error(load_semantic_encoder, tmp_path / "ppd.pth")
    assert "PPD DiT" in msg and "semantic encoder" in msg


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_download(tmp_path, suffix):
    path = tmp_path / f"ppd{suffix}"
    if suffix == ".pth":
        torch.save(tiny_dit_state_dict(), path)
    else:
        save_file(tiny_dit_state_dict(), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    msg = _error(load_dit, path)
    assert path.name in msg and "download it again" in msg


Custom = collections.namedtuple("Custom", "x")


def test_pickle_that_needs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"x_embedder.proj.weight": torch.zeros(1), "extra": Custom(1)}, path)
    msg = _error(load_dit, path)
    assert "evil.pth" in msg and "needs code" in msg and "never runs code" in msg


def test_strict_load_reports_missing_and_unexpected(tmp_path):
    sd = tiny_dit_state_dict()
    del sd["dit.blocks.1.mlp.fc2.bias"]
    sd["dit.blocks.0.attn.extra"] = torch.zeros(1)
    msg = _error(load_dit, sd)
    assert "missing" in msg and "blocks.1.mlp.fc2.bias" in msg and "unexpected" in msg and "attn.extra" in msg


def test_wrong_shape_is_reported():
    sd = tiny_da2_state_dict()
    sd["pretrained.blocks.1.mlp.fc2.weight"] = torch.zeros(64, 7)
    msg = _error(load_semantic_encoder, sd)
    assert "wrong shape" in msg and "blocks.1.mlp.fc2.weight" in msg


def test_dtype_and_no_grad():
    dit = load_dit(tiny_dit_state_dict(), dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in dit.parameters())
