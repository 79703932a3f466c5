"""A tiny MoGe-2 built with ComfyUI core's own class (comfy.ldm.moge.model.MoGeModelV2): the key layout core's
LoadMoGeModel loads. Needs a real ComfyUI 0.27+; callers skip without one."""
from __future__ import annotations

import torch

from tiny_models import plausible_moge2

STACK = [32, 16, 16, 8, 8]


def core_moge2(model_py, seed: int = 0):
    """core's MoGeModelV2: 4-block 64-wide DINOv2 (one 64-dim head, layers [0, 1, 2, 3], core's own rule for 4
    blocks), the tiny necks and heads of tiny_models, random weights made plausible, float32, eval mode."""
    def stack(dim_in: list[int], out: int | None) -> dict:
        return {"dim_in": dim_in, "dim_res_blocks": STACK, "dim_out": [None] * 4 + [out],
                "num_res_blocks": [0, 1, 1, 1, 0], "resamplers": ["conv_transpose"] * 3 + ["bilinear"],
                "res_block_in_norm": "none", "res_block_hidden_norm": "none"}
    backbone = {"hidden_size": 64, "num_attention_heads": 1, "num_hidden_layers": 4, "layer_norm_eps": 1e-6,
                "use_swiglu_ffn": False}
    model = model_py.MoGeModelV2(encoder={"backbone": backbone, "intermediate_layers": [0, 1, 2, 3], "dim_out": 64},
                                 neck=stack([66, 2, 2, 2, 2], None), points_head=stack(STACK, 3),
                                 mask_head=stack(STACK, 1), normal_head=stack(STACK, 3),
                                 scale_head={"dims": [64, 32, 1]}, dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for name, p in model.state_dict().items():            # core leaves parameters uninitialised (torch.empty)
        one = name.endswith(("norm1.weight", "norm2.weight", "lambda1", "layernorm.weight"))
        sd[name] = p if "image_" in name else (1.0 if one else 0.0) + 0.05 * torch.randn(p.shape, generator=gen)
    model.load_state_dict(plausible_moge2(sd), strict=True)
    return model
