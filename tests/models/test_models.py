"""What every model in the zoo promises, checked on small inputs so the file runs in seconds on a
CPU: it trains (forward and backward), it has the paper's or torchvision's parameter count, the
torchvision-compatible ones compute exactly what torchvision computes, it accepts its declared
minimum input size, and bad arguments fail early with a ValueError that names the argument.

As in timm's test_models, the per-model tests are parametrised over the registry, so a newly
registered variant is tested without being listed here."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from zoo import models
from zoo.core.registry import Registry
from zoo.models.base import InputSpec, ZooModel
from zoo.models.googlenet import GoogLeNetOutputs
from zoo.models.resnet import BasicBlock, Bottleneck, ResNet
from zoo.models.vgg import CONFIGS, VGG

# Cheap settings for the per-model tests: few classes, and a narrow U-Net. A model missing here
# is tested with its defaults.
SMALL_KWARGS: dict[str, dict[str, Any]] = {
    "alexnet": {"num_classes": 5},
    "googlenet": {"num_classes": 5},
    "lenet": {"num_classes": 5},
    "resnet18": {"num_classes": 5},
    "resnet34": {"num_classes": 5},
    "resnet50": {"num_classes": 5},
    "unet": {"num_classes": 3, "base_width": 4},
    "vgg11": {"num_classes": 5},
    "vgg13": {"num_classes": 5},
    "vgg16": {"num_classes": 5},
    "vgg19": {"num_classes": 5},
    **{f"vgg{depth}_bn": {"num_classes": 5} for depth in (11, 13, 16, 19)},
}

# Every VGG carries fc6's 102 M weights whatever its depth: a few seconds to build and to train a
# step on two CPU cores. VGG16 stands for its family in the default run; the others share its
# code and run with the slow tests.
SLOW_TO_BUILD = {"vgg11", "vgg13", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"}

slow = pytest.mark.slow


def registered(slow_ones: set[str] = SLOW_TO_BUILD) -> list[Any]:
    """Every registered name, those in ``slow_ones`` marked slow."""
    return [pytest.param(n, marks=slow) if n in slow_ones else n for n in models.available()]


def build_small(name: str, **overrides: Any) -> models.ZooModel:
    torch.manual_seed(0)
    return models.build(name, **{**SMALL_KWARGS.get(name, {}), **overrides})


@pytest.fixture(scope="module")
def small_model(request: pytest.FixtureRequest) -> models.ZooModel:
    """The real-weights model of ``request.param``, built once for all the tests that run it.
    Being module-scoped and parametrised, pytest groups those tests by name and drops each
    model before building the next, so at most one VGG is in memory."""
    return build_small(request.param)


@pytest.fixture
def fresh(small_model: models.ZooModel) -> models.ZooModel:
    """The shared model without the gradients a previous test left on it."""
    small_model.zero_grad(set_to_none=True)
    return small_model


def small_size(model: models.ZooModel) -> int:
    """A cheap input size that the model accepts."""
    return max(model.min_input_size, 32)


def expected_shape(model: models.ZooModel, batch: int, height: int, width: int) -> tuple[int, ...]:
    if model.task == "segmentation":
        return (batch, model.num_classes, height, width)
    return (batch, model.num_classes)


def build_without_weights(name: str, **kwargs: Any) -> models.ZooModel:
    """Build on the meta device: shapes without storage, so even VGG19 is built instantly. Enough
    to count parameters, compare keys, or trigger the input checks, which run before any layer."""
    with torch.device("meta"):
        return models.build(name, **kwargs)


def count_parameters(name: str, **kwargs: Any) -> int:
    return sum(p.numel() for p in build_without_weights(name, **kwargs).parameters())


# --- the registry ------------------------------------------------------------------------------

ALL_NAMES = [
    "alexnet", "googlenet", "lenet", "resnet18", "resnet34", "resnet50", "unet",
    "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
]  # fmt: skip


def test_registry_lists_every_model() -> None:
    assert models.available() == ALL_NAMES


def test_unknown_model_name_lists_the_available_ones() -> None:
    with pytest.raises(ValueError, match=r"resnet101.*available: " + ", ".join(ALL_NAMES)):
        models.build("resnet101")


def test_unknown_argument_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"unknown argument.*depth.*valid arguments: num_classes"):
        models.build("resnet18", depth=50)


@pytest.mark.parametrize(
    ("name", "fixed"),
    [
        ("resnet34", {"layers": (1, 1, 1, 1)}),
        ("resnet50", {"block": BasicBlock}),
        ("vgg16", {"cfg": "A"}),
    ],
)
def test_a_variants_fixed_arguments_are_not_user_settable(name: str, fixed: dict[str, Any]) -> None:
    # Else {"name": "resnet34", "layers": ...} in a config would silently be another network.
    (argument,) = fixed
    with pytest.raises(
        ValueError, match=rf"unknown argument\(s\) \['{argument}'\]; valid arguments"
    ):
        models.build(name, **fixed)
    with pytest.raises(ValueError, match=rf"unknown argument\(s\) \['{argument}'\]"):
        models.input_spec(name, **fixed)


@pytest.mark.parametrize(
    ("name", "model_cls", "fixed"),
    [
        ("resnet18", ResNet, {"block": BasicBlock, "layers": (2, 2, 2, 2)}),
        ("resnet34", ResNet, {"block": BasicBlock, "layers": (3, 4, 6, 3)}),
        ("resnet50", ResNet, {"block": Bottleneck, "layers": (3, 4, 6, 3)}),
        ("vgg11", VGG, {"cfg": "A"}),
        ("vgg13", VGG, {"cfg": "B"}),
        ("vgg16", VGG, {"cfg": "D"}),
        ("vgg19", VGG, {"cfg": "E"}),
        ("vgg11_bn", VGG, {"cfg": "A", "batch_norm": True}),
        ("vgg16_bn", VGG, {"cfg": "D", "batch_norm": True}),
    ],
)
def test_variants_are_a_class_and_fixed_arguments(
    name: str, model_cls: type, fixed: dict[str, Any]
) -> None:
    assert models.MODELS.get(name) is model_cls
    assert dict(models.MODELS.entry(name).fixed) == fixed
    model = build_without_weights(name)
    assert type(model) is model_cls


@pytest.mark.parametrize("name", models.available())
def test_the_task_is_readable_from_the_registered_class(name: str) -> None:
    # zoo.training.run picks the LightningModule with models.MODELS.get(name).task, unbuilt.
    assert models.MODELS.get(name).task == build_without_weights(name).task


def test_registry_decorator_and_data_style_registration() -> None:
    registry: Registry[object] = Registry("thing")

    @registry.register("plain")
    def make(size: int = 1, colour: str = "red") -> tuple[int, str]:
        return (size, colour)

    assert registry.register("big", make, size=10) is make
    assert registry.build("plain", colour="blue") == (1, "blue")
    assert registry.build("big", colour="blue") == (10, "blue")
    assert registry.get("big") is make
    assert registry.entry("big").arguments == ["colour"]
    assert registry.arguments("big", colour="blue") == {"size": 10, "colour": "blue"}
    with pytest.raises(
        ValueError, match=r"'big' got unknown argument\(s\) \['size'\]; valid arguments: colour$"
    ):
        registry.build("big", size=3)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("big", make)
    # A typo in a variant's table fails at import, not at the first build.
    with pytest.raises(ValueError, match=r"make takes no argument\(s\) \['sise'\]"):
        registry.register("huge", make, sise=100)
    assert "huge" not in registry


def test_fixed_arguments_cannot_be_changed_after_registration() -> None:
    registry: Registry[object] = Registry("thing")
    layers = [1, 2]
    fixed = {"layers": layers}
    registry.register("net", lambda layers: list(layers), **fixed)
    fixed["layers"] = [9]
    with pytest.raises(TypeError):
        registry.entry("net").fixed["layers"] = [9]  # type: ignore[index]
    assert registry.build("net") == [1, 2]


# Hyper-parameters that checkpoints written before ResNet and VGG became families store, as
# they are, with a digest of the "key:shape" lines of the state_dict the old ResNet18 and VGG16
# classes produced from them: the new families must build them into the very same layout.
OLD_CHECKPOINTS: list[tuple[dict[str, Any], int, str]] = [
    (
        {
            "name": "resnet18",
            "num_classes": 10,
            "in_channels": 1,
            "small_input": True,
            "zero_init_residual": False,
        },
        122,
        "69328cc4240c843602e12072eab1787da6053a7014f0b001cbbe341c34027682",
    ),
    (
        {"name": "vgg16", "num_classes": 10, "in_channels": 1, "batch_norm": False, "dropout": 0.5},
        32,
        "6266d27ce593c31c4fa77e1e8cb52ee291bba60a215b79d8632af027ca58f720",
    ),
]


@pytest.mark.parametrize(
    ("hparams", "entries", "digest"), OLD_CHECKPOINTS, ids=["resnet18", "vgg16"]
)
def test_old_checkpoint_hyperparameters_build_the_same_state_dict_layout(
    hparams: dict[str, Any], entries: int, digest: str
) -> None:
    arguments = {k: v for k, v in hparams.items() if k != "name"}
    state = build_without_weights(hparams["name"], **arguments).state_dict()
    layout = "\n".join(f"{key}:{tuple(value.shape)}" for key, value in state.items())
    assert len(state) == entries
    assert hashlib.sha256(layout.encode()).hexdigest() == digest
    # And the keys are still torchvision's, in its order (only the stem's shape differs).
    with torch.device("meta"):
        reference = getattr(torchvision.models, hparams["name"])(num_classes=10)
    assert list(state) == list(reference.state_dict())


# --- every model -------------------------------------------------------------------------------


@pytest.mark.parametrize("small_model", registered(), indirect=True)
def test_forward_backward(fresh: models.ZooModel) -> None:
    model = fresh.train()
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


@pytest.mark.parametrize("small_model", registered(), indirect=True)
def test_min_input_size_is_accepted(fresh: models.ZooModel) -> None:
    model = fresh.eval()
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


# --- input sizes, read without building --------------------------------------------------------

# Arguments that change a model's input sizes, beside the defaults.
SPEC_CASES: list[tuple[str, dict[str, Any], InputSpec]] = [
    ("lenet", {}, InputSpec(native=32, minimum=32, exact=True)),
    ("alexnet", {}, InputSpec(native=227, minimum=67)),
    ("alexnet", {"variant": "torchvision"}, InputSpec(native=224, minimum=63)),
    ("googlenet", {}, InputSpec(native=224, minimum=15)),
    ("resnet18", {}, InputSpec(native=224)),
    ("resnet50", {"small_input": True}, InputSpec(native=32)),
    ("vgg19", {"batch_norm": True}, InputSpec(native=224, minimum=32)),
    ("unet", {"bilinear": True}, InputSpec(native=512, minimum=16, multiple=16)),
]


@pytest.mark.parametrize(("name", "kwargs", "expected"), SPEC_CASES)
def test_input_spec_values(name: str, kwargs: dict[str, Any], expected: InputSpec) -> None:
    assert models.input_spec(name, **kwargs) == expected


def _registered_classes() -> set[type[ZooModel]]:
    return {models.MODELS.get(name) for name in models.available()}  # type: ignore[misc]


@pytest.mark.parametrize("name", models.available())
def test_input_spec_is_read_without_building(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for model_cls in _registered_classes():
        # wraps: the registry still sees the real signature when it checks the arguments.
        @functools.wraps(model_cls.__init__)
        def refuse(self: ZooModel, *args: object, **kwargs: object) -> None:
            raise AssertionError(f"input_spec built {type(self).__name__}")

        monkeypatch.setattr(model_cls, "__init__", refuse)
    spec = models.input_spec(name, **SMALL_KWARGS.get(name, {}))
    assert isinstance(spec, InputSpec)
    with pytest.raises(AssertionError, match="built"):  # the patch does stop a build
        models.build(name)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [(name, {}) for name in models.available()] + [(n, k) for n, k, _ in SPEC_CASES if k],
)
def test_instances_take_their_sizes_from_the_spec(name: str, kwargs: dict[str, Any]) -> None:
    # One source: what tools read from the registry is what the built model checks.
    spec = models.input_spec(name, **kwargs)
    model = build_without_weights(name, **kwargs)
    assert model.input_spec == spec
    assert model.native_input_size == (spec.native, spec.native)
    assert (model.min_input_size, model.input_multiple) == (spec.minimum, spec.multiple)


def test_input_spec_checks_the_arguments_as_build_does() -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet101'"):
        models.input_spec("resnet101")
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['depth'\]"):
        models.input_spec("resnet18", depth=50)
    with pytest.raises(ValueError, match="variant must be one of original, torchvision"):
        models.input_spec("alexnet", variant="caffenet")


def test_input_spec_check_messages() -> None:
    spec = InputSpec(native=64, minimum=16, multiple=8)
    spec.check(16)
    spec.check(24, 64)
    with pytest.raises(ValueError, match="12x12 is too small for Net: image_size must be >= 16"):
        spec.check(12, model="Net")
    with pytest.raises(ValueError, match=r"20x24 does not suit .*must be a multiple of 8"):
        spec.check(20, 24)
    exact = InputSpec(native=32, minimum=32, exact=True)
    exact.check(32, 32)
    with pytest.raises(ValueError, match="image_size must be exactly 32"):
        exact.check(64)
    with pytest.raises(AttributeError):
        spec.native = 32  # type: ignore[misc]
    with pytest.raises(ValueError, match="breaks its own spec"):
        InputSpec(native=20, multiple=16)
    with pytest.raises(ValueError, match="minimum must be an integer >= 1"):
        InputSpec(native=20, minimum=0)


# --- parameter counts: the papers' and torchvision's ---------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("lenet", {}, 61_706),
        ("lenet", {"modern": True}, 61_706),
        ("alexnet", {}, 62_378_344),
        ("alexnet", {"lrn": True}, 62_378_344),
        ("alexnet", {"variant": "torchvision"}, 61_100_840),
        ("vgg11", {}, 132_863_336),
        ("vgg11", {"batch_norm": True}, 132_868_840),
        ("vgg13", {}, 133_047_848),
        ("vgg13", {"batch_norm": True}, 133_053_736),
        ("vgg16", {}, 138_357_544),
        ("vgg16", {"batch_norm": True}, 138_365_992),
        ("vgg19", {}, 143_667_240),
        ("vgg19", {"batch_norm": True}, 143_678_248),
        *((f"vgg{d}_bn", {}, n) for d, n in ((11, 132_868_840), (16, 138_365_992))),
        ("googlenet", {}, 13_004_888),
        ("googlenet", {"aux_logits": False}, 6_624_904),
        ("resnet18", {}, 11_689_512),
        ("resnet34", {}, 21_797_672),
        ("resnet50", {}, 25_557_032),
    ],
)
def test_parameter_count(name: str, kwargs: dict[str, Any], expected: int) -> None:
    assert count_parameters(name, **kwargs) == expected


# --- torchvision equivalence -------------------------------------------------------------------

TorchvisionBuilder = Callable[..., nn.Module]


def _vgg_cases() -> list[Any]:
    cases = []
    for name in ("vgg11", "vgg13", "vgg16", "vgg19"):
        marks = [slow] if name in SLOW_TO_BUILD else []
        # At 32x32 the features are 1x1 and the adaptive pool copies them to 7x7: cheap, and
        # still every layer.
        for bn in (False, True):
            tv_name = f"{name}_bn" if bn else name
            kwargs = {"batch_norm": True} if bn else {}
            builder = getattr(torchvision.models, tv_name)
            cases.append(pytest.param(name, kwargs, builder, 32, marks=marks, id=tv_name))
        # The same network by torchvision's name (vgg16 with batch_norm=True stands for it).
        tv_name = f"{name}_bn"
        builder = getattr(torchvision.models, tv_name)
        cases.append(pytest.param(tv_name, {}, builder, 32, marks=slow, id=f"registered_{tv_name}"))
    return cases


@pytest.mark.parametrize(
    ("name", "kwargs", "torchvision_builder", "size"),
    [
        pytest.param(
            "alexnet", {"variant": "torchvision"}, torchvision.models.alexnet, 64, id="alexnet"
        ),
        *_vgg_cases(),
        pytest.param(
            "googlenet",
            {},
            partial(torchvision.models.googlenet, init_weights=True),
            64,
            id="googlenet",
        ),
        pytest.param(
            "googlenet",
            {"aux_logits": False},
            partial(torchvision.models.googlenet, aux_logits=False, init_weights=True),
            64,
            id="googlenet_no_aux",
        ),
        pytest.param(
            "googlenet",
            {"transform_input": True},
            # PyTorch's default initialisation: quicker, and only the weights' copy matters.
            partial(torchvision.models.googlenet, transform_input=True, init_weights=False),
            64,
            id="googlenet_transform_input",
        ),
        pytest.param("resnet18", {}, torchvision.models.resnet18, 64, id="resnet18"),
        pytest.param("resnet34", {}, torchvision.models.resnet34, 64, id="resnet34"),
        pytest.param("resnet50", {}, torchvision.models.resnet50, 64, id="resnet50"),
    ],
)
def test_matches_torchvision(
    name: str, kwargs: dict[str, Any], torchvision_builder: TorchvisionBuilder, size: int
) -> None:
    torch.manual_seed(0)
    reference = torchvision_builder().eval()  # weights=None: nothing is downloaded
    # strict=True: the same keys and the same shapes, so torchvision checkpoints load as they are.
    # assign=True hands torchvision's tensors to our storage-less model instead of copying.
    model = build_without_weights(name, **kwargs).eval()
    model.load_state_dict(reference.state_dict(), strict=True, assign=True)

    # The adaptive pools let 64x64 (32x32 for VGG) stand in for 224x224.
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "kwargs", "torchvision_name"),
    [
        pytest.param("resnet18", {}, "resnet18", id="resnet18"),
        pytest.param("resnet34", {"zero_init_residual": True}, "resnet34", id="resnet34_zero"),
        pytest.param("resnet50", {}, "resnet50", id="resnet50"),
        pytest.param("resnet50", {"zero_init_residual": True}, "resnet50", id="resnet50_zero"),
        pytest.param("vgg11", {}, "vgg11", marks=slow, id="vgg11"),
        pytest.param("vgg11", {"batch_norm": True}, "vgg11_bn", marks=slow, id="vgg11_bn"),
    ],
)
def test_initialisation_is_torchvisions(
    name: str, kwargs: dict[str, Any], torchvision_name: str
) -> None:
    # The layers are created and initialised in torchvision's order, so the same seed gives the
    # very same weights: training from scratch reproduces torchvision's starting point.
    torch.manual_seed(0)
    ours = models.build(name, **kwargs).state_dict()
    torch.manual_seed(0)
    tv_kwargs = {k: v for k, v in kwargs.items() if k == "zero_init_residual"}
    theirs = getattr(torchvision.models, torchvision_name)(**tv_kwargs).state_dict()
    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        assert torch.equal(ours[key], value), key


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


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
def test_resnet_small_input_on_28px_mnist(name: str) -> None:
    model = build_small(name, num_classes=10, in_channels=1, small_input=True)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert model.native_input_size == (32, 32)

    # Same keys as the ImageNet stem; only conv1's kernel differs.
    standard = build_without_weights(name, num_classes=10, in_channels=1)
    assert model.state_dict().keys() == standard.state_dict().keys()
    assert model.conv1.kernel_size == (3, 3)
    assert model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)


def test_resnet50_bottleneck_strides_in_its_3x3_convolution() -> None:
    # torchvision's v1.5: conv1 (1x1) keeps the resolution, conv2 (3x3) halves it.
    block = build_without_weights("resnet50").layer2[0]
    assert isinstance(block, Bottleneck)
    assert (block.conv1.kernel_size, block.conv1.stride) == ((1, 1), (1, 1))
    assert (block.conv2.kernel_size, block.conv2.stride) == ((3, 3), (2, 2))
    assert (block.conv3.in_channels, block.conv3.out_channels) == (128, 512)
    assert block.downsample is not None and block.downsample[0].stride == (2, 2)
    # The first stage already widens 64 to 256 channels, hence a projection at stride 1.
    first = build_without_weights("resnet50").layer1[0]
    assert first.downsample is not None and first.downsample[0].stride == (1, 1)


@pytest.mark.parametrize(("name", "last_norm"), [("resnet34", "bn2"), ("resnet50", "bn3")])
def test_zero_init_residual_zeroes_each_blocks_last_norm(name: str, last_norm: str) -> None:
    model = build_small(name, zero_init_residual=True)
    blocks = [b for b in model.modules() if isinstance(b, (BasicBlock, Bottleneck))]
    assert len(blocks) == 3 + 4 + 6 + 3
    for block in blocks:
        for norm_name in ("bn1", "bn2", "bn3"):
            norm = getattr(block, norm_name, None)
            if norm is not None:
                assert bool((norm.weight == 0).all()) is (norm_name == last_norm), norm_name
    # The projection shortcuts keep their unit scale.
    assert all(block.downsample[1].weight.eq(1).all() for block in blocks if block.downsample)


def test_resnet_family_rejects_bad_layers_and_blocks() -> None:
    with pytest.raises(ValueError, match=r"layers must be 4 integers >= 1.*\(2, 2\)"):
        ResNet(BasicBlock, (2, 2))
    with pytest.raises(ValueError, match="layers must be 4 integers >= 1"):
        ResNet(BasicBlock, (2, 0, 2, 2))
    with pytest.raises(ValueError, match="block must be BasicBlock or Bottleneck"):
        ResNet(nn.Conv2d, (2, 2, 2, 2))  # type: ignore[arg-type]
    # The family class builds any depth, here a ResNet-10.
    with torch.device("meta"):
        model = ResNet(BasicBlock, (1, 1, 1, 1), num_classes=10)
    assert model.display_name == "ResNet-10"


@pytest.mark.parametrize(
    ("name", "convolutions"), [("vgg11", 8), ("vgg13", 10), ("vgg16", 13), ("vgg19", 16)]
)
def test_vgg_configurations_of_table_1(name: str, convolutions: int) -> None:
    config = CONFIGS[models.MODELS.entry(name).fixed["cfg"]]  # type: ignore[index]
    assert config.count("M") == 5
    assert len(config) - 5 == convolutions
    model = build_without_weights(name, batch_norm=True)
    assert sum(isinstance(m, nn.Conv2d) for m in model.features) == convolutions
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.features) == convolutions
    assert model.display_name == f"VGG-{convolutions + 3}"
    with pytest.raises(ValueError, match=f"too small for VGG-{convolutions + 3}"):
        model(torch.randn(1, 3, 16, 16))


def test_vgg_family_takes_a_custom_configuration() -> None:
    # Three pools: the minimum side follows from the configuration, 2 ** 3.
    config = [16, "M", 32, "M", 64, "M"]
    assert VGG.input_spec_for(cfg=config) == InputSpec(native=224, minimum=8)
    model = VGG(config, num_classes=3)
    assert model.min_input_size == 8
    assert model.classifier[0].in_features == 64 * 7 * 7
    assert model(torch.randn(1, 3, 8, 8)).shape == (1, 3)
    with pytest.raises(ValueError, match="cfg must be one of A, B, D, E or a list; got 'C'"):
        VGG("C")
    with pytest.raises(ValueError, match="cfg must list channel counts"):
        VGG([64, "X", "M"])


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
