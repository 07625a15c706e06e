"""What every model in the zoo promises, checked on small inputs so the file runs in seconds on a
CPU: it trains (forward and backward), it has the paper's or torchvision's parameter count, the
torchvision-compatible ones compute exactly what torchvision computes, it accepts its declared
minimum input size, and bad arguments fail early with a ValueError that names the argument."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from zoo import models
from zoo.models.googlenet import GoogLeNetOutputs

# Cheap settings for the per-model tests: few classes, and a narrow U-Net. A model missing here
# is tested with its defaults.
SMALL_KWARGS: dict[str, dict[str, Any]] = {
    "alexnet": {"num_classes": 5},
    "googlenet": {"num_classes": 5},
    "lenet": {"num_classes": 5},
    "resnet18": {"num_classes": 5},
    "unet": {"num_classes": 3, "base_width": 4},
    "vgg16": {"num_classes": 5},
}


def build_small(name: str, **overrides: Any) -> models.ZooModel:
    torch.manual_seed(0)
    return models.build(name, **{**SMALL_KWARGS.get(name, {}), **overrides})


def small_size(model: models.ZooModel) -> int:
    """A cheap input size that the model accepts."""
    return max(model.min_input_size, 32)


def expected_shape(model: models.ZooModel, batch: int, height: int, width: int) -> tuple[int, ...]:
    if model.task == "segmentation":
        return (batch, model.num_classes, height, width)
    return (batch, model.num_classes)


def build_without_weights(name: str, **kwargs: Any) -> models.ZooModel:
    """Build on the meta device: shapes without storage, so even VGG16 is built instantly. Enough
    to count parameters, compare keys, or trigger the input checks, which run before any layer."""
    with torch.device("meta"):
        return models.build(name, **kwargs)


def count_parameters(name: str, **kwargs: Any) -> int:
    return sum(p.numel() for p in build_without_weights(name, **kwargs).parameters())


# --- the registry ------------------------------------------------------------------------------


def test_registry_lists_the_six_models() -> None:
    assert models.available() == ["alexnet", "googlenet", "lenet", "resnet18", "unet", "vgg16"]


def test_unknown_model_name_lists_the_available_ones() -> None:
    with pytest.raises(
        ValueError, match=r"resnet50.*alexnet, googlenet, lenet, resnet18, unet, vgg16"
    ):
        models.build("resnet50")


def test_unknown_argument_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"unknown argument.*depth.*valid arguments: num_classes"):
        models.build("resnet18", depth=50)


# --- every model -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", models.available())
def test_forward_backward(name: str) -> None:
    model = build_small(name).train()
    size = small_size(model)
    x = torch.randn(2, model.in_channels, size, size)

    out = model(x)
    # GoogLeNet adds its auxiliary logits in training mode; they train too.
    outputs = tuple(out) if isinstance(out, GoogLeNetOutputs) else (out,)
    for logits in outputs:
        assert logits.shape == expected_shape(model, 2, size, size)
    targets = torch.randint(
        model.num_classes, (2, size, size) if model.task == "segmentation" else (2,)
    )
    loss = sum(F.cross_entropy(logits, targets) for logits in outputs)
    loss.backward()

    for param_name, param in model.named_parameters():
        assert param.grad is not None, f"{param_name} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{param_name} has a non-finite gradient"


@pytest.mark.parametrize("name", models.available())
def test_min_input_size_is_accepted(name: str) -> None:
    model = build_small(name).eval()
    size = model.min_input_size
    with torch.no_grad():
        out = model(torch.randn(2, model.in_channels, size, size))
    assert out.shape == expected_shape(model, 2, size, size)


@pytest.mark.parametrize("name", models.available())
def test_one_pixel_below_min_input_size_is_rejected(name: str) -> None:
    model = build_without_weights(name, **SMALL_KWARGS.get(name, {}))
    size = model.min_input_size - 1
    with pytest.raises(ValueError, match="image_size"):
        model(torch.randn(2, model.in_channels, size, size))


@pytest.mark.parametrize("name", models.available())
@pytest.mark.parametrize("argument", ["num_classes", "in_channels"])
def test_non_positive_sizes_are_rejected(name: str, argument: str) -> None:
    with pytest.raises(ValueError, match=f"{argument} must be an integer >= 1"):
        models.build(name, **{argument: 0})


@pytest.mark.parametrize("name", models.available())
def test_wrong_channel_count_is_rejected(name: str) -> None:
    model = build_without_weights(name, **SMALL_KWARGS.get(name, {}))
    size = small_size(model)
    with pytest.raises(ValueError, match=f"in_channels={model.in_channels}"):
        model(torch.randn(2, model.in_channels + 1, size, size))


@pytest.mark.parametrize("name", models.available())
def test_unbatched_input_is_rejected(name: str) -> None:
    model = build_without_weights(name, **SMALL_KWARGS.get(name, {}))
    size = small_size(model)
    with pytest.raises(ValueError, match="4-D batch"):
        model(torch.randn(model.in_channels, size, size))


# --- parameter counts: the papers' and torchvision's ---------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("lenet", {}, 61_706),
        ("lenet", {"modern": True}, 61_706),
        ("alexnet", {}, 62_378_344),
        ("alexnet", {"lrn": True}, 62_378_344),
        ("alexnet", {"variant": "torchvision"}, 61_100_840),
        ("vgg16", {}, 138_357_544),
        ("vgg16", {"batch_norm": True}, 138_365_992),
        ("googlenet", {}, 13_004_888),
        ("googlenet", {"aux_logits": False}, 6_624_904),
        ("resnet18", {}, 11_689_512),
    ],
)
def test_parameter_count(name: str, kwargs: dict[str, Any], expected: int) -> None:
    assert count_parameters(name, **kwargs) == expected


# --- torchvision equivalence -------------------------------------------------------------------

TorchvisionBuilder = Callable[..., nn.Module]


@pytest.mark.parametrize(
    ("name", "kwargs", "torchvision_builder"),
    [
        ("alexnet", {"variant": "torchvision"}, torchvision.models.alexnet),
        ("vgg16", {}, torchvision.models.vgg16),
        ("vgg16", {"batch_norm": True}, torchvision.models.vgg16_bn),
        ("googlenet", {}, partial(torchvision.models.googlenet, init_weights=True)),
        (
            "googlenet",
            {"aux_logits": False},
            partial(torchvision.models.googlenet, aux_logits=False, init_weights=True),
        ),
        ("resnet18", {}, torchvision.models.resnet18),
    ],
    ids=["alexnet", "vgg16", "vgg16_bn", "googlenet", "googlenet_no_aux", "resnet18"],
)
def test_matches_torchvision(
    name: str, kwargs: dict[str, Any], torchvision_builder: TorchvisionBuilder
) -> None:
    torch.manual_seed(0)
    reference = torchvision_builder().eval()  # weights=None: nothing is downloaded
    # strict=True: the same keys and the same shapes, so torchvision checkpoints load as they are.
    # assign=True hands torchvision's tensors to our storage-less model instead of copying.
    model = build_without_weights(name, **kwargs).eval()
    model.load_state_dict(reference.state_dict(), strict=True, assign=True)

    # The adaptive pools let 64x64 stand in for 224x224.
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=1e-5)


# --- model-specific behaviour ------------------------------------------------------------------


def test_lenet_accepts_only_32x32() -> None:
    model = build_small("lenet")
    assert model.native_input_size == (32, 32)
    with pytest.raises(ValueError, match="image_size must be exactly 32"):
        model(torch.randn(2, 1, 28, 28))
    with pytest.raises(ValueError, match="image_size must be exactly 32"):
        model(torch.randn(2, 1, 64, 64))


def test_lenet_modern_uses_relu_and_max_pooling() -> None:
    classic = build_small("lenet")
    modern = build_small("lenet", modern=True)
    assert any(isinstance(m, nn.Tanh) for m in classic.modules())
    assert any(isinstance(m, nn.AvgPool2d) for m in classic.modules())
    assert any(isinstance(m, nn.ReLU) for m in modern.modules())
    assert any(isinstance(m, nn.MaxPool2d) for m in modern.modules())
    assert not any(isinstance(m, (nn.Tanh, nn.AvgPool2d)) for m in modern.modules())


def test_alexnet_rejects_unknown_variant() -> None:
    with pytest.raises(ValueError, match="variant must be one of original, torchvision"):
        models.build("alexnet", variant="caffenet")


def test_alexnet_lrn_follows_the_first_two_convolutions() -> None:
    model = build_without_weights("alexnet", lrn=True)
    norms = [m for m in model.features if isinstance(m, nn.LocalResponseNorm)]
    assert len(norms) == 2
    assert (norms[0].size, norms[0].alpha, norms[0].beta, norms[0].k) == (5, 1e-4, 0.75, 2.0)
    with pytest.raises(ValueError, match="lrn"):
        models.build("alexnet", variant="torchvision", lrn=True)


@pytest.mark.parametrize(
    ("name", "argument"),
    [("alexnet", "dropout"), ("vgg16", "dropout"), ("googlenet", "aux_dropout")],
)
def test_dropout_must_be_a_probability(name: str, argument: str) -> None:
    with pytest.raises(ValueError, match=f"{argument} must be a probability"):
        models.build(name, **{argument: 1.5})


def test_googlenet_returns_auxiliary_logits_in_training_only() -> None:
    model = build_small("googlenet")
    x = torch.randn(2, 3, 32, 32)

    out = model.train()(x)
    assert isinstance(out, GoogLeNetOutputs)
    assert out._fields == ("logits", "aux_logits2", "aux_logits1")
    assert all(t.shape == (2, 5) for t in out)

    with torch.no_grad():
        out = model.eval()(x)
    assert isinstance(out, torch.Tensor)
    assert out.shape == (2, 5)

    without_aux = build_small("googlenet", aux_logits=False).train()
    out = without_aux(x)
    assert isinstance(out, torch.Tensor)
    assert out.shape == (2, 5)


def test_resnet18_small_input_on_28px_mnist() -> None:
    model = build_small("resnet18", num_classes=10, in_channels=1, small_input=True)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)

    # Same keys as the ImageNet stem; only conv1's kernel differs.
    standard = build_without_weights("resnet18", num_classes=10, in_channels=1)
    assert model.state_dict().keys() == standard.state_dict().keys()
    assert model.conv1.kernel_size == (3, 3)
    assert model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)


@pytest.mark.parametrize("bilinear", [False, True], ids=["transposed", "bilinear"])
def test_unet_mask_has_the_input_size(bilinear: bool) -> None:
    model = build_small("unet", bilinear=bilinear).eval()
    assert model.task == "segmentation"
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 48))
    assert out.shape == (2, 3, 32, 48)


def test_unet_needs_multiples_of_16() -> None:
    model = build_small("unet")
    with pytest.raises(ValueError, match="multiple of 16"):
        model(torch.randn(2, 3, 40, 40))


def test_unet_rejects_non_positive_base_width() -> None:
    with pytest.raises(ValueError, match="base_width must be an integer >= 1"):
        models.build("unet", base_width=0)
