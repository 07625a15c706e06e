"""The zoo's own trained weights (zoo.models.trained_weights, resolved by zoo.models.weights):
chosen by name as torchvision's are, read from safetensors files whose digest and header are
checked at every load. Most tests use seeded stand-ins written in a temporary directory
(tests/trained.py); the card tests read the files the package ships."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.trained import ARGUMENTS, Shipper, find
from zoo import models
from zoo.core.errors import ConfigError, exit_on_user_error
from zoo.core.files import file_digest
from zoo.models import trained_weights
from zoo.models.loading import SizeLimit, WeightsError

SET_NAMES = [weight_set.name for weight_set in trained_weights.WEIGHT_SETS]


@pytest.fixture
def ship(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Shipper:
    return Shipper(tmp_path / "trained", monkeypatch)


def shipped_file(name: str) -> Path:
    weight_set = find(name)
    return trained_weights.TRAINED_DIR / trained_weights.card_of(weight_set).file


@pytest.mark.parametrize("name", SET_NAMES)
def test_build_gives_exactly_the_stored_tensors(name: str, ship: Shipper) -> None:
    stored = ship(name)
    weight_set = find(name)
    network = models.build(weight_set.model, weights=name)
    assert network.state_dict().keys() == stored.keys()
    for key, tensor in network.state_dict().items():
        assert torch.equal(tensor, stored[key]), key
    assert load_file(shipped_file(name)).keys() == stored.keys()


def test_default_is_the_zoos_own_set_where_a_model_has_one(ship: Shipper) -> None:
    for name in SET_NAMES:
        ship(name)
    assert models.pretrained("lenet", "DEFAULT").trained == "MNIST_V1"
    assert models.pretrained("unet", "DEFAULT").trained == "MNIST_SEGMENTATION_V1"
    assert models.pretrained("resnet18", "DEFAULT").enum == "ResNet18_Weights.IMAGENET1K_V1"
    default = models.pretrained("lenet", "DEFAULT")
    assert default.summary()["weights"] == "MNIST_V1" and default.publisher == "zoo"


def test_the_networks_arguments_come_with_the_weights(
    ship: Shipper, caplog: pytest.LogCaptureFixture
) -> None:
    ship("MNIST_ROBUST_V1")
    ship("MNIST_SEGMENTATION_V1")
    assert models.build("lenet", weights="MNIST_ROBUST_V1").modern is True
    # A model config states every argument: its default gives way to the weights'.
    with caplog.at_level(logging.INFO, logger="zoo.models.weights"):
        assert models.build("lenet", weights="MNIST_ROBUST_V1", modern=False).modern is True
    assert "lenet MNIST_ROBUST_V1: model.modern=true, the network the weights were trained in" in (
        caplog.text
    )
    pretrained = models.pretrained("unet", "MNIST_SEGMENTATION_V1", base_width=64, num_classes=11)
    assert pretrained.arguments["base_width"] == ARGUMENTS["MNIST_SEGMENTATION_V1"]["base_width"]
    with pytest.raises(ConfigError) as refused:
        models.build("unet", weights="MNIST_SEGMENTATION_V1", base_width=8)
    assert str(refused.value) == (
        "model.weights=MNIST_SEGMENTATION_V1 was trained with model.base_width=4, not 8: "
        "leave model.base_width out, or train weights of your own"
    )


def test_another_number_of_classes_gets_a_new_head(ship: Shipper) -> None:
    stored = ship("MNIST_V1")
    network = models.build("lenet", weights="MNIST_V1", num_classes=3)
    assert network.num_classes == 3
    assert torch.equal(network.state_dict()["features.0.weight"], stored["features.0.weight"])


def test_a_tampered_file_is_refused_in_one_line_naming_it(
    ship: Shipper, capsys: pytest.CaptureFixture[str]
) -> None:
    ship("MNIST_V1")
    path = shipped_file("MNIST_V1")
    content = bytearray(path.read_bytes())
    content[-1] ^= 0x01  # one bit of the last tensor
    path.write_bytes(bytes(content))
    with pytest.raises(SystemExit) as exited, exit_on_user_error():
        models.build("lenet", weights="MNIST_V1")
    assert exited.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    prefix = path.name.rsplit("-", 1)[1].removesuffix(".safetensors")
    assert line == (
        f"Error: refusing {path}: its sha256 begins {file_digest(path, 'sha256')[:8]}, but its "
        f"name promises {prefix}: the file is damaged, truncated or not the published one; "
        "reinstall the zoo, or restore the file from its repository"
    )


def test_a_missing_file_or_card_is_one_line(ship: Shipper) -> None:
    with pytest.raises(WeightsError) as no_card:
        models.build("lenet", weights="MNIST_V1")
    assert str(no_card.value) == (
        "model.weights=MNIST_V1: the zoo's lenet MNIST_V1 weights are not in this installation "
        f"({trained_weights.TRAINED_DIR / 'cards.json'} has no card for them)"
    )
    ship("MNIST_V1")
    path = shipped_file("MNIST_V1")
    path.unlink()
    with pytest.raises(WeightsError, match=re.escape(f"lenet MNIST_V1: the zoo's file {path} ")):
        models.build("lenet", weights="MNIST_V1")


def test_an_unknown_name_lists_the_models_names() -> None:
    with pytest.raises(ConfigError) as refused:
        models.pretrained("lenet", "MNIST_V9")
    assert str(refused.value) == (
        "model.weights=MNIST_V9 is not a weights name of lenet: MNIST_V1, MNIST_ROBUST_V1, "
        "DEFAULT (or a path to a weights file)"
    )
    with pytest.raises(ConfigError, match="is not a weights name of unet: MNIST_SEGMENTATION_V1"):
        models.pretrained("unet", "IMAGENET1K_V1")


def test_the_header_is_checked_before_any_tensor_is_read(ship: Shipper, tmp_path: Path) -> None:
    stored = ship("MNIST_V1")
    network = models.build("lenet")
    # The set's own file, rewritten with a wider C5 under a name that carries its digest.
    wide = {**stored, "classifier.0.weight": torch.zeros(120, 401)}
    rewritten = trained_weights.save_weights(wide, find("MNIST_V1"), tmp_path / "other")
    limit = SizeLimit.of_model(network)
    with pytest.raises(WeightsError) as refused:
        trained_weights.read_safetensors(rewritten, limit, network.state_dict())
    assert str(refused.value) == (
        f"{rewritten}: weight 'classifier.0.weight' has shape [120, 401], where the network's "
        "is [120, 400]"
    )
    huge = tmp_path / "huge.safetensors"
    # 24 MB of claims for LeNet-5's 0.25 MB: over SizeLimit's allowance for any file of it.
    save_file({"features.0.weight": torch.zeros(6000, 1000)}, str(huge))
    with pytest.raises(WeightsError, match=r"^refusing .*huge.safetensors: its tensors take "):
        models.build("lenet", weights=str(huge))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    with pytest.raises(WeightsError, match="is not a readable safetensors file"):
        models.build("lenet", weights=str(garbage))


def test_a_safetensors_file_of_ones_own_loads_as_a_state_dict_does(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = models.build("lenet", modern=True)
    path = tmp_path / "mine.safetensors"
    save_file(source.state_dict(), str(path))
    loaded = models.build("lenet", weights=str(path), modern=True)
    for key, tensor in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key


def test_the_cards_file_is_checked_when_read(ship: Shipper) -> None:
    ship("MNIST_V1")
    cards = trained_weights.cards_path()
    entries = json.loads(cards.read_text())
    entries["lenet.MNIST_V1"]["file"] = "lenet_mnist_v1-00000000.safetensors"
    cards.write_text(json.dumps(entries))
    with pytest.raises(WeightsError, match=r"its file is 'lenet_mnist_v1-00000000.safetensors'"):
        models.pretrained("lenet", "MNIST_V1")


# --- the shipped cards, as torchvision's test of Weights.meta ------------------------------------


@pytest.mark.parametrize("name", SET_NAMES)
def test_each_shipped_set_has_every_card_field(name: str) -> None:
    weight_set = find(name)
    cards = trained_weights.read_cards()
    if weight_set.key not in cards:
        pytest.skip(f"{weight_set.description} is not shipped yet")
    card = cards[weight_set.key]
    path = trained_weights.TRAINED_DIR / card.file
    assert file_digest(path, "sha256") == card.sha256
    assert card._file_size == round(path.stat().st_size / 2**20, 3)
    with torch.device("meta"):
        network = models.build(weight_set.model, **card.arguments)
    assert card.num_params == sum(p.numel() for p in network.parameters())
    assert card.min_size == [network.min_input_size] * 2
    assert len(card.categories) == network.num_classes
    assert card._ops > 0 and card._docs
    assert card.recipe.command.startswith(weight_set.recipe)
    assert re.fullmatch(r"[0-9a-f]{7,40}", card.recipe.commit)
    assert card.data["name"] == weight_set.dataset
    assert {"image_size", "mean", "std"} <= set(card.preprocessing)
    figures = card._metrics[weight_set.dataset]
    expected = {"miou", "dice", "pixel_acc"} if network.task == "segmentation" else {"acc@1"}
    for measurement in weight_set.measurements:
        if measurement.attack is not None:
            expected |= {f"{measurement.label}@eps{eps:g}" for eps in (0.1, 0.3)}
    assert expected <= set(figures)
    assert len(card._evaluation) == len(weight_set.measurements)
    assert sum(path.stat().st_size for path in trained_weights.TRAINED_DIR.iterdir()) < 10 * 2**20
