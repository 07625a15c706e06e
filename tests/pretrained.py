"""Stand-ins for torchvision's published weights, for tests that must not download: a seeded
torchvision model saved in a temporary torch.hub cache under torchvision's file name, whose real
sha256 is made the expected prefix for that file name only."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

from zoo.models import weights as zoo_weights


def torchvision_model(tv_name: str, seed: int = 0) -> nn.Module:
    """A seeded torchvision network of the published weights' shape (1000 classes)."""
    torch.manual_seed(seed)
    kwargs: dict[str, Any] = {}
    if tv_name == "googlenet":
        # What torchvision's googlenet(weights=...) builds to load its file: aux heads included.
        kwargs = {"aux_logits": True, "transform_input": True, "init_weights": True}
    return getattr(torchvision.models, tv_name)(**kwargs).eval()


class Publisher:
    """``publish(tv_name)``: the cache file of ``tv_name``'s IMAGENET1K_V1 weights, holding a
    seeded torchvision model's state_dict (or ``state_dict``), with its digest expected."""

    def __init__(self, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TORCH_HOME", str(home))
        monkeypatch.setenv(zoo_weights.OFFLINE_VARIABLE, "1")  # never a download
        self.expected: dict[str, str] = {}
        original = zoo_weights.published_prefix
        monkeypatch.setattr(
            zoo_weights, "published_prefix", lambda name: self.expected.get(name) or original(name)
        )

    def __call__(self, tv_name: str, state_dict: Any = None, enum: str = "IMAGENET1K_V1") -> Path:
        member = zoo_weights.weights_enum(tv_name)[enum]
        path = zoo_weights.cache_dir() / Path(member.url).name
        path.parent.mkdir(parents=True, exist_ok=True)
        if state_dict is None:
            state_dict = torchvision_model(tv_name).state_dict()
        torch.save(state_dict, path)
        self.expected[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
        return path
