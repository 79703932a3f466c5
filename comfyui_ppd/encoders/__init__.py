"""Semantic encoders: image (B,3,H,W) in [0,1] -> tokens (B, grid_h*grid_w, C) on the DiT's coarse grid."""
from .base import SemanticEncoder
from .da2 import DepthAnythingV2Encoder
from .moge2 import MoGe2Encoder

__all__ = ["SemanticEncoder", "DepthAnythingV2Encoder", "MoGe2Encoder"]
