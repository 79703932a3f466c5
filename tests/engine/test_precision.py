"""One precision policy (runtime.precision) for CLI, nodes, bench and PPDPipeline's "auto"; CLI and node agree."""
from __future__ import annotations

import contextlib
import importlib
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from comfyui_ppd import PPDPipeline, load_dit, load_semantic_encoder, runtime
from comfyui_ppd.cli import main
from pack_nodes import node_classes
from tiny_models import tiny_da2_state_dict, tiny_dit_state_dict

FP32, FP16, BF16 = torch.float32, torch.float16, torch.bfloat16
# (device, choice, GPU has bf16) -> (weights, autocast): the README's table, row by row
TABLE = [
    ("cuda", "auto", True, FP32, BF16), ("cuda", "auto", False, FP32, FP16), ("cuda", "fp32", True, FP32, None),
    ("cuda", "fp16", True, FP16, FP16), ("cuda", "bf16", True, BF16, BF16),
    ("mps", "auto", False, FP32, None), ("mps", "fp32", False, FP32, None), ("mps", "fp16", False, FP16, None),
    ("mps", "bf16", False, BF16, None),
    ("cpu", "auto", False, FP32, None), ("cpu", "fp32", False, FP32, None), ("cpu", "fp16", False, FP32, None),
    ("cpu", "bf16", False, FP32, None),
]


@pytest.mark.parametrize("device, choice, bf16, weights, autocast", TABLE)
def test_policy_table(monkeypatch, device, choice, bf16, weights, autocast):
    monkeypatch.setattr(runtime.torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert runtime.precision(choice, device) == runtime.Precision(weights, autocast)


@pytest.fixture(scope="module")
def tiny_pair():
    """tiny_pair(dtype) -> (DiT, encoder) of tiny random weights stored in `dtype`."""
    pairs: dict[torch.dtype, tuple] = {}

    def get(dtype: torch.dtype) -> tuple:
        if dtype not in pairs:
            pairs[dtype] = (load_dit(tiny_dit_state_dict(), dtype=dtype),
                            load_semantic_encoder(tiny_da2_state_dict(), dtype=dtype))
        return pairs[dtype]
    return get


@pytest.mark.parametrize("device, choice, bf16, weights, autocast", TABLE)
def test_pipeline_auto_autocast_is_the_policy_for_its_weights(monkeypatch, tiny_pair, device, choice, bf16, weights,
                                                              autocast):
    """A pipeline built as the front ends build it (autocast = the policy's) on `device` autocasts like the policy;
    one built with autocast="auto" from weights of the policy's dtype does too, except the explicit fp32 choice
    (fp32 weights, autocast off): callers pass it as autocast=None, and no autocast is entered then."""
    monkeypatch.setattr(runtime.torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(PPDPipeline, "device", property(lambda self: torch.device(device)))   # no GPU needed
    policy = runtime.precision(choice, device)
    dit, enc = tiny_pair(policy.weights)
    built = PPDPipeline(dit, enc, autocast=policy.autocast)
    assert built.autocast_dtype() == autocast
    if autocast is None:
        assert isinstance(built.autocast(), contextlib.nullcontext)          # no autocast entered
    auto = PPDPipeline(dit, enc)
    if choice != "fp32":
        assert auto.autocast_dtype() == autocast == runtime.autocast_for(torch.device(device), weights)
    else:   # "auto" from the same fp32 weights would follow the "auto" row (bf16/fp16 on CUDA): fp32 must not
        assert auto.autocast_dtype() == runtime.precision("auto", device).autocast


def test_half_precision_on_the_cpu_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="comfyui_ppd"):
        runtime.precision("bf16", "cpu")
    assert "using fp32" in caplog.text


def test_node_on_a_gpu_follows_the_policy(pack, comfy_env, monkeypatch):
    """Load PPD Model with "auto" on a CUDA device: fp32 weights and bf16 autocast, like the CLI."""
    engine_runtime = importlib.import_module(pack.__name__ + ".comfyui_ppd.runtime")
    monkeypatch.setattr(engine_runtime.torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(comfy_env.mm, "get_torch_device", lambda: torch.device("cuda"))
    load = node_classes(pack)["PPD_LoadModel"]().load
    model, _ = load("ppd.pth", "depth_anything_v2_vitl.pth", "auto")["result"]
    assert model.engine.weight_dtype == FP32 and model.engine._autocast == BF16


@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16"])
def test_cli_and_node_give_identical_depth(pack, comfy_env, image_file, tmp_path, precision):
    """Same image file, steps, seed, size, device and precision choice -> bit-identical depth from both front
    ends (on a GPU machine both run on ComfyUI's device, with the policy's autocast)."""
    models = comfy_env.folder_paths.get_folder_paths("ppd")[-1]
    device = str(comfy_env.mm.get_torch_device())
    assert main(["predict", str(image_file), "--out", str(tmp_path / "out"), "--models-dir", models,
                 "--area", "6144", "--steps", "2", "--seed", "3", "--precision", precision, "--device", device,
                 "--no-progress"]) == 0
    cli = np.load(tmp_path / "out" / "photo_depth.npy")

    image = torch.from_numpy(np.asarray(Image.open(image_file).convert("RGB"), np.float32) / 255)[None]  # LoadImage
    nodes = node_classes(pack)
    model, _ = nodes["PPD_LoadModel"]().load("ppd.pth", "depth_anything_v2_vitl.pth", precision)["result"]
    sem, = nodes["PPD_SemanticEncoder"]().encode(model, image, "custom long side", 96)   # 50x70 -> 64x96, as --area
    packet, _ = nodes["PPD_DepthSampler"]().sample(model, sem, 2, 3)["result"]
    node = packet["depth"][0, 0].numpy()
    assert node.shape == cli.shape == (64, 96)
    assert np.array_equal(node, cli)
