"""A family defined entirely here (its keys, its official files, its semantics) and registered: the catalogue,
the inventory's slot listing, the loaders, the CLI's model routing and the missing-file messages all pick it up
without any engine file naming it."""
from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from comfyui_ppd import catalogue, cli, inventory, load_dit, registry
from comfyui_ppd.checkpoints import Checkpoint
from comfyui_ppd.family import KeyFamily, ModelFile

TOY_URL = "https://example.org/toy/"
DIT_FILE = ModelFile("toy_dit.pth", ("dit",), "toy", TOY_URL + "toy_dit.pth", "~1 kB", "A toy DiT.")
ENCODER_FILE = ModelFile("toy_encoder.pth", ("encoder",), "toy", TOY_URL + "toy_encoder.pth", "~1 kB",
                         "A toy encoder.")


class ToyNet(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.toy_trunk = nn.Linear(width, width)


class ToyDiT(KeyFamily):
    """A "DiT" that is one linear layer, recognised by its own key, trained with "toy" semantics."""

    name, slot, encoder_slot, semantics, files, score = "toy_dit", "dit", "encoder", "toy", (DIT_FILE,), 9
    title = "the toy DiT"
    advice = "It is a toy."
    needs = ("toy_trunk.weight",)

    def config_from(self, sd: Mapping[str, Tensor], ckpt: Checkpoint, **options: Any) -> int:
        return sd["toy_trunk.weight"].shape[0]

    def build(self, config: int) -> nn.Module:
        return ToyNet(config)


class ToyEncoder(KeyFamily):
    name, slot, semantics, label, files = "toy_encoder", "encoder", "toy", "Toy", (ENCODER_FILE,)
    title = "the toy encoder"
    needs = ("toy_encoder_only.weight",)


@pytest.fixture
def toy():
    families = [registry.register(ToyDiT()), registry.register(ToyEncoder())]
    yield families
    for family in families:
        registry.unregister(family.name)


def toy_checkpoint(path, width: int = 3):
    torch.save(ToyNet(width).state_dict(), path)
    return path


def test_registered_family_is_in_the_catalogue(toy):
    assert catalogue.OFFICIAL_FILES["toy_dit.pth"] is DIT_FILE
    assert catalogue.OFFICIAL_FILES["toy_encoder.pth"] is ENCODER_FILE
    assert catalogue.slot_of("toy_dit.pth") == "dit" and catalogue.encoder_for("toy_dit.pth") == "toy_encoder.pth"
    assert "toy_dit.pth" in catalogue.how_to_get("toy_dit.pth", "/models") and TOY_URL in catalogue.how_to_get(
        "toy_dit.pth", "/models")


def test_unregistered_family_is_gone(toy):
    registry.unregister("toy_dit")
    assert "toy_dit.pth" not in catalogue.OFFICIAL_FILES and catalogue.slot_of("toy_dit.pth") is None


def test_inventory_lists_it_in_its_slot_and_the_loader_builds_it(toy, tmp_path):
    path = toy_checkpoint(tmp_path / "renamed.pth", width=5)
    kind = inventory.file_kind(path)
    assert (kind.slot, kind.family, kind.semantics) == ("dit", "toy_dit", "toy")
    assert inventory.fits(kind, "dit") and not inventory.fits(kind, "encoder") and not inventory.fits(kind, "geometry")
    model = load_dit(path)
    assert isinstance(model, ToyNet) and model.toy_trunk.weight.shape == (5, 5)


def test_cli_routes_it_with_its_encoder_and_names_both_missing_files(toy, image_file, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PPD_MODELS_DIR", raising=False)
    args = SimpleNamespace(model="toy_dit.pth", encoder=None, models_dir=str(tmp_path))
    assert cli._named_for(args, video=False) == ("toy_dit.pth", None)    # an image-slot file: the images take it
    assert cli.find_video_model(args) is None
    code = cli.main(["predict", str(image_file), "--out", str(tmp_path / "o"), "--models-dir", str(tmp_path),
                     "--model", "toy_dit.pth", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "2 model files are missing" in err
    assert TOY_URL + "toy_dit.pth" in err and TOY_URL + "toy_encoder.pth" in err   # its encoder, from its semantics
