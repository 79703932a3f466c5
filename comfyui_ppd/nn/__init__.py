"""Shared network blocks: MLP, attention helpers, 2D RoPE, the DINOv2 ViT. Names follow checkpoint keys."""
