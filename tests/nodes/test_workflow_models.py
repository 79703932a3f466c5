"""Shipped workflows carry download metadata the frontends use on a fresh install: every PPD loader lists its
official files in `properties.models` (name and folder), with the direct URL for every file that has one, so
today's frontend (1.45.20) offers Download / Copy URL for them.

The rule is read from the 1.45.20 bundle (missingModelDownload: isModelDownloadable needs a url from Hugging Face,
Civitai or localhost and a name ending .safetensors/.sft/.ckpt/.pth/.pt). Frontend 1.27.10's Missing Models dialog
allows only .safetensors/.sft, so it shows a red "Only allowed suffixes" line for the .pth/.pt entries: accepted,
documented in docs/nodes.md."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfyui_ppd import catalogue
from plumbing import REPO

WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
DOWNLOADABLE_IN_1_45 = ((".safetensors", ".sft", ".ckpt", ".pth", ".pt"),
                       ("https://huggingface.co/", "https://civitai.com/", "http://localhost"))


def loaders(path: Path) -> list[dict]:
    return [n for n in json.loads(path.read_text())["nodes"] if n["type"].startswith("PPD_Load")]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_every_official_file_of_a_loader_has_its_folder_and_its_direct_url(path):
    for node in loaders(path):
        files = [v for v in node["widgets_values"] if isinstance(v, str) and v in catalogue.OFFICIAL_FILES]
        assert files, f"{path.name}: node {node['id']} selects no official file"
        entries = {m["name"]: m for m in node["properties"].get("models", [])}
        assert set(entries) == set(files), f"{path.name}: node {node['id']}"
        for name in files:
            entry, url = entries[name], catalogue.OFFICIAL_FILES[name].url
            assert entry["directory"] == "ppd"
            if url:        # 1.45 offers Download / Copy URL only when both the source and the suffix pass
                suffixes, sources = DOWNLOADABLE_IN_1_45
                assert entry.get("url") == url, f"{path.name}: {name} lacks its url"
                assert name.endswith(suffixes) and url.startswith(sources), f"{path.name}: {name} not downloadable"
            else:          # Google-Drive-only files: nothing a frontend could download
                assert "url" not in entry and "hash" not in entry, f"{path.name}: {name}"


def test_the_workflows_offer_at_least_one_direct_download():
    urls = [m for p in WORKFLOWS for n in loaders(p) for m in n["properties"].get("models", []) if "url" in m]
    assert urls, "no loader offers a download link"
