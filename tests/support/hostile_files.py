"""Model files with corrupt `model_config` metadata (issue 18), shared by the CLI and node tests."""
from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_file

from tiny_models import tiny_dit_state_dict

NESTED = '{"a":' * 200_000 + "1" + "}" * 200_000
BAD_CONFIGS = {"not JSON": "{encoder: [0, 1", "a JSON list": "[1, 2, 3]", "200,000 nested objects": NESTED}


def dit_with_config(path: Path, config: str) -> Path:
    """The tiny DiT as .safetensors with `config` as its model_config metadata."""
    save_file({k: v.contiguous() for k, v in tiny_dit_state_dict().items()}, str(path),
              metadata={"model_config": config})
    return path
