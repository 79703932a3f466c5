"""requirements.txt (what a ComfyUI user installs) must never make pip install, upgrade or replace torch.

pip resolves the file from PyPI in a dry run that ignores what is installed; the plan must hold no torch,
no CUDA wheel (nvidia-*) and no triton. Needs PyPI: runs under CI=true (where it must reach PyPI) or with
PPD_NETWORK_TESTS=1, and is skipped otherwise.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from plumbing import REPO

NETWORK = os.environ.get("CI", "").lower() == "true" or os.environ.get("PPD_NETWORK_TESTS") == "1"


@pytest.mark.skipif(not NETWORK, reason="needs PyPI: set PPD_NETWORK_TESTS=1 (always on under CI=true)")
def test_requirements_never_plan_torch_or_cuda(tmp_path):
    report = tmp_path / "plan.json"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                           "--report", str(report), "-r", str(REPO / "requirements.txt")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    planned = sorted(item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"])
    assert {"numpy", "safetensors", "einops", "pillow"} <= set(planned)       # the file was really resolved
    assert [p for p in planned if p == "torch" or p.startswith(("nvidia-", "triton"))] == [], planned


def test_requirements_do_not_name_torch():
    names = [line.split(";")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert names and not any(n.lower().startswith("torch") for n in names)
