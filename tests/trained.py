"""Stand-ins for the zoo's own trained weights, for tests that must not depend on the shipped
files: a seeded network of each set's shape, saved as the set's safetensors file with its card
in a temporary directory, which is made the package's directory of shipped weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from zoo import models
from zoo.core.files import file_digest
from zoo.models import trained_weights
from zoo.models.trained_weights import ModelCard, Recipe, WeightSet

# Each set's network, small: the stand-in U-Net is 4 channels wide, not the recipe's 16.
ARGUMENTS: dict[str, dict[str, Any]] = {
    "MNIST_V1": {"num_classes": 10, "in_channels": 1, "modern": False},
    "MNIST_ROBUST_V1": {"num_classes": 10, "in_channels": 1, "modern": True},
    "MNIST_SEGMENTATION_V1": {"num_classes": 11, "in_channels": 1, "base_width": 4},
}
# The data config on each card, as export writes it (no paths); synthetic MNIST's test split is
# 200 images, and a few canvases are enough for U-Net.
DATA: dict[str, dict[str, Any]] = {
    "mnist": {"name": "mnist", "image_size": 32, "resize": "pad", "val_size": 100},
    "mnist_segmentation": {
        "name": "mnist_segmentation",
        "image_size": 32,
        "val_size": 100,
        "train_canvases": 8,
        "val_canvases": 8,
        "test_canvases": 8,
    },
}
CATEGORIES = {
    "mnist": [str(digit) for digit in range(10)],
    "mnist_segmentation": ["background", *(str(digit) for digit in range(10))],
}
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def find(name: str) -> WeightSet:
    [weight_set] = [s for s in trained_weights.WEIGHT_SETS if s.name == name]
    return weight_set


class Shipper:
    """``ship(name)``: the set ``name`` as a stand-in in ``directory``, now the package's
    directory of shipped weights; returns the tensors it holds."""

    def __init__(self, directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.directory = directory
        monkeypatch.setattr(trained_weights, "TRAINED_DIR", directory)

    def __call__(self, name: str, seed: int = 0) -> dict[str, torch.Tensor]:
        weight_set = find(name)
        arguments = ARGUMENTS[name]
        torch.manual_seed(seed)
        network = models.build(weight_set.model, **arguments)
        path = trained_weights.save_weights(network.state_dict(), weight_set, self.directory)
        card = ModelCard(
            model=weight_set.model,
            name=name,
            file=path.name,
            sha256=file_digest(path, "sha256"),
            arguments=arguments,
            data=DATA[weight_set.dataset],
            preprocessing={"image_size": 32, "mean": [0.1307], "std": [0.3081]},
            num_params=sum(p.numel() for p in network.parameters()),
            _ops=0.001,
            _file_size=round(path.stat().st_size / 2**20, 3),
            min_size=[network.min_input_size] * 2,
            categories=CATEGORIES[weight_set.dataset],
            recipe=Recipe(command=weight_set.recipe, commit=COMMIT),
            _docs="a stand-in",
        )
        cards = trained_weights.read_cards(self.directory)
        cards[weight_set.key] = card
        trained_weights.write_cards(cards, self.directory)
        return {key: value.clone() for key, value in network.state_dict().items()}
