"""requirements.txt (what a ComfyUI user installs) must never make pip install, upgrade or replace torch,
and it is the same list as pyproject.toml's runtime dependencies (one list, written twice for two installers).

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

try:
    import tomllib
except ModuleNotFoundError:                                          # Python 3.10
    tomllib = pytest.importorskip("tomli")

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


def _requirements() -> list[str]:
    return [line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()
            if line.split("#")[0].strip()]


def test_requirements_do_not_name_torch():
    names = [r.split(";")[0] for r in _requirements()]
    assert names and not any(n.lower().startswith("torch") for n in names)


def test_requirements_equal_pyproject_dependencies():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert _requirements() == project["dependencies"], "requirements.txt and pyproject.toml differ: make them equal"
    extras = [r for reqs in project["optional-dependencies"].values() for r in reqs]
    assert not any(r.lower().startswith("torch") for r in extras)    # no extra may pull torch either
