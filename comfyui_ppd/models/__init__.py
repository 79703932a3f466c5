"""Model code: the cascaded DiT and the DINOv2-based semantic encoders. Names follow the checkpoint keys."""
