"""Shipped workflows carry download metadata the frontends can use on a fresh install: every PPD loader lists its
official files in `properties.models` (name and folder), with the direct URL where frontend 1.27's Missing Models
dialog accepts it (.safetensors / .sft from Hugging Face); frontend 1.45 reads the same entries for its panel.

The rules below are read from the frontend bundles: 1.27.10 (MissingModelsWarning: allowedSources, allowedSuffixes;
entries without url or hash are skipped) and 1.45.20 (getSelectedModelsMetadata / enrichCandidateFromNodeProperties:
an entry applies to the widget whose value equals its name; Copy URL needs its url)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfyui_ppd import catalogue
from plumbing import REPO

WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
ACCEPTED_BY_1_27 = ((".safetensors", ".sft"), ("https://civitai.com/", "https://huggingface.co/"))


def loaders(path: Path) -> list[dict]:
    return [n for n in json.loads(path.read_text())["nodes"] if n["type"].startswith("PPD_Load")]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_every_official_file_of_a_loader_has_its_folder_and_the_url_where_it_is_safe(path):
    for node in loaders(path):
        files = [v for v in node["widgets_values"] if isinstance(v, str) and v in catalogue.OFFICIAL_FILES]
        assert files, f"{path.name}: node {node['id']} selects no official file"
        entries = {m["name"]: m for m in node["properties"].get("models", [])}
        assert set(entries) == set(files), f"{path.name}: node {node['id']}"
        for name in files:
            entry, url = entries[name], catalogue.OFFICIAL_FILES[name].url
            assert entry["directory"] == "ppd"
            suffixes, sources = ACCEPTED_BY_1_27
            if url and name.endswith(suffixes) and url.startswith(sources):
                assert entry["url"] == url
            else:          # 1.27 would show a red "Only allowed suffixes" line; without url it skips the entry
                assert "url" not in entry and "hash" not in entry, f"{path.name}: {name}"


def test_the_workflows_offer_at_least_one_direct_download():
    urls = [m for p in WORKFLOWS for n in loaders(p) for m in n["properties"].get("models", []) if "url" in m]
    assert urls, "no loader offers a download link"
