"""Model families: one folder each (model, pipeline, FLOP formula); registered in comfyui_ppd.registry."""
