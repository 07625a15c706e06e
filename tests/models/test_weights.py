"""Pretrained weights (zoo.models.weights), offline: each test writes a seeded torchvision model
into a temporary torch.hub cache under torchvision's file name, and only for such files is the
expected sha256 prefix replaced by the file's real one. Nothing is downloaded."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import REPO_ROOT, run_script
from tests.pretrained import Publisher, torchvision_model
from zoo import models
from zoo.core.errors import ConfigError
from zoo.models import weights as zoo_weights
from zoo.models.loading import WeightsError

slow = pytest.mark.slow
MEAN = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
STD = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch.hub cache ($TORCH_HOME), and no downloads."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv(zoo_weights.OFFLINE_VARIABLE, "1")
    return home


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def publish(torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> Publisher:
    """publish(tv_name, state_dict=None) -> the cache file, under torchvision's name, holding
    ``state_dict`` (default: the seeded torchvision model's); its digest is the expected one."""
    return Publisher(torch_home, monkeypatch)


def assert_same_tensors(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> None:
    for key, value in theirs.items():
        assert torch.equal(ours[key], value), key


# --- the published weights in the zoo's models -------------------------------------------------

EQUIVALENT = [
    pytest.param("resnet18", {}, 64, id="resnet18"),
    pytest.param("googlenet", {}, 64, marks=slow, id="googlenet"),
    pytest.param("googlenet", {"aux_logits": False}, 64, marks=slow, id="googlenet_no_aux"),
    pytest.param("resnet34", {}, 64, marks=slow, id="resnet34"),
    pytest.param("resnet50", {}, 64, marks=slow, id="resnet50"),
    pytest.param("alexnet", {"variant": "torchvision"}, 64, marks=slow, id="alexnet"),
    *(
        pytest.param(f"vgg{d}{bn}", {}, 32, marks=slow, id=f"vgg{d}{bn}")
        for d in (11, 13, 16, 19)
        for bn in ("", "_bn")
    ),
]


@pytest.mark.parametrize(("name", "kwargs", "size"), EQUIVALENT)
def test_a_zoo_model_with_published_weights_computes_what_torchvision_does(
    name: str, kwargs: dict[str, Any], size: int, publish: Publisher
) -> None:
    path = publish(name)
    ours = models.build(name, weights="IMAGENET1K_V1", **kwargs).eval()
    # torchvision's model from the very same file (read weights-only here too).
    reference = torchvision_model(name, seed=1)
    reference.load_state_dict(torch.load(path, weights_only=True))
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=1e-5)


def test_default_and_v2_name_torchvisions_enum_members(torch_home: Path) -> None:
    v2 = models.pretrained("resnet50", "DEFAULT")
    assert (v2.enum, v2.path.name, v2.sha256_prefix) == (
        "ResNet50_Weights.IMAGENET1K_V2",
        "resnet50-11ad3fa6.pth",
        "11ad3fa6",
    )
    assert v2.path.parent == torch_home / "hub" / "checkpoints"
    assert v2.url == "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"
    assert v2.metrics == {"acc@1": 80.858, "acc@5": 95.434}
    assert (v2.preprocessing.resize_size, v2.preprocessing.crop_size) == (232, 224)
    assert models.pretrained("vgg16", "IMAGENET1K_V1", batch_norm=True).path.name == (
        "vgg16_bn-6c64b313.pth"
    )


def test_googlenet_transforms_its_input_with_the_weights_as_torchvision_does() -> None:
    # The arguments the weights are built with (the parity test above runs them).
    assert models.pretrained("googlenet", "IMAGENET1K_V1").arguments["transform_input"] is True
    explicit = models.pretrained("googlenet", "IMAGENET1K_V1", transform_input=False)
    assert explicit.arguments["transform_input"] is False
    with torch.device("meta"):
        assert not models.build("googlenet").transform_input


# --- loading that can't be fooled ---------------------------------------------------------------


def tamper(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def substitute(path: Path) -> None:
    torch.save(torchvision_model("resnet18", seed=7).state_dict(), path)


def test_a_cache_file_changed_since_is_refused_at_every_load(
    publish: Publisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = publish("resnet18")
    published = path.read_bytes()
    models.build("resnet18", weights="IMAGENET1K_V1")  # the first load is fine
    read: list[Path] = []
    monkeypatch.setattr(zoo_weights, "safe_load", lambda p, what: read.append(p))
    for damage in (tamper, truncate, substitute):
        path.write_bytes(published)
        damage(path)
        with pytest.raises(WeightsError) as error:
            models.build("resnet18", weights="IMAGENET1K_V1")
        message = str(error.value)
        assert "\n" not in message, damage
        assert f"refusing {path}: its sha256 begins" in message, damage
        assert "delete it to download https://download.pytorch.org/models/resnet18" in message
    assert read == []  # refused before it was unpickled


class Payload:
    """Unpickling this runs ``os.system`` (the classic hostile checkpoint)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_a_file_holding_pickled_code_is_refused_and_nothing_runs(
    publish: Publisher, tmp_path: Path
) -> None:
    marker = tmp_path / "code_ran"
    # The digest matches (the attacker controls the cache): only the unpickler stands between.
    publish("resnet18", {"fc.weight": Payload(marker)})
    with pytest.raises(WeightsError, match=r"refusing to load .*nothing from the file was run"):
        models.build("resnet18", weights="IMAGENET1K_V1")
    # The same through a local file without a digest in its name.
    local = tmp_path / "mine.pth"
    torch.save({"fc.weight": Payload(marker)}, local)
    with pytest.raises(WeightsError, match="nothing from the file was run"):
        models.build("resnet18", weights=str(local))
    assert not marker.exists()


def test_no_file_and_no_network_says_which_file_to_put_where(
    torch_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(WeightsError) as offline:
        models.build("resnet18", weights="IMAGENET1K_V1")
    assert str(offline.value) == (
        f"resnet18 ResNet18_Weights.IMAGENET1K_V1: no file resnet18-f37072fd.pth, and "
        f"ZOO_OFFLINE is set: download https://download.pytorch.org/models/resnet18-f37072fd.pth "
        f"and put it at {expected} (its sha256 begins f37072fd; $TORCH_HOME moves the cache)"
    )
    monkeypatch.delenv(zoo_weights.OFFLINE_VARIABLE)
    monkeypatch.setattr(zoo_weights, "reachable", lambda url: False)
    downloads: list[str] = []
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: downloads.append(a))
    with pytest.raises(WeightsError, match=r"download\.pytorch\.org cannot be reached: download"):
        models.build("resnet18", weights="IMAGENET1K_V1")
    assert downloads == []


def test_a_reachable_server_downloads_into_the_cache_with_the_digest_checked(
    torch_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(zoo_weights.OFFLINE_VARIABLE)
    monkeypatch.setattr(zoo_weights, "reachable", lambda url: True)
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a: calls.append(a))
    pretrained = models.pretrained("resnet18", "IMAGENET1K_V1")
    assert zoo_weights.fetch(pretrained) == pretrained.path
    assert calls == [(pretrained.url, str(pretrained.path), "f37072fd")]


def test_the_command_line_names_the_missing_file_in_one_line(tmp_path: Path) -> None:
    result = run_script(
        "train.py",
        "experiment=resnet18_mnist",
        "model.small_input=false",
        "model.weights=IMAGENET1K_V1",
        f"paths.log_dir={tmp_path}",
        env={"TORCH_HOME": str(tmp_path / "home"), "ZOO_OFFLINE": "1"},
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert "Traceback" not in result.stderr
    assert line.startswith("Error: resnet18 ResNet18_Weights.IMAGENET1K_V1: no file ")
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in line
    assert str(tmp_path / "home" / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in line


@pytest.mark.parametrize(
    ("name", "weights", "kwargs", "message"),
    [
        ("resnet18", "IMAGENET1K_V9", {}, "is not one of torchvision's ResNet18_Weights: "
         "IMAGENET1K_V1, DEFAULT"),
        ("alexnet", "IMAGENET1K_V1", {}, "torchvision's alexnet, which needs "
         "model.variant=torchvision (got 'original')"),
        ("lenet", "IMAGENET1K_V1", {}, "model.weights=IMAGENET1K_V1 is not a weights name of "
         "lenet: MNIST_V1, MNIST_ROBUST_V1, DEFAULT (or a path to a weights file)"),
        ("resnet18", "IMAGENET1K_V1", {"small_input": True}, "needs model.small_input=false"),
        ("vgg16", "IMAGENET1K_FEATURES", {}, "has no classifier weights; use one of IMAGENET1K_V1"),
    ],
)  # fmt: skip
def test_impossible_weights_are_named_before_anything_is_read(
    name: str, weights: str, kwargs: dict[str, Any], message: str, torch_home: Path
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        models.build(name, weights=weights, **kwargs)


# --- heads and inputs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "head"),
    [
        pytest.param("resnet18", ("fc.",), id="resnet18"),
        pytest.param("googlenet", ("fc.", "aux1.", "aux2."), marks=slow, id="googlenet"),
    ],
)
def test_a_new_head_keeps_the_backbone_and_is_initialised_afresh(
    name: str, head: tuple[str, ...], publish: Publisher, caplog: pytest.LogCaptureFixture
) -> None:
    path = publish(name)
    theirs = torch.load(path, weights_only=True)
    with caplog.at_level(logging.INFO, logger="zoo.models.weights"):
        torch.manual_seed(3)
        model = models.build(name, weights="IMAGENET1K_V1", num_classes=10)
    torch.manual_seed(3)
    fresh = models.build(name, num_classes=10).state_dict()
    ours = model.state_dict()
    new = sorted(k for k in ours if k.startswith(head))
    assert new and all(k in theirs for k in new)
    assert_same_tensors(ours, {k: v for k, v in theirs.items() if not k.startswith(head)})
    for key in new:
        assert torch.equal(ours[key], fresh[key]), key  # the model's own initialisation
        if ours[key].dim() >= 2:  # kernels (batch norms start at 0 and 1 either way)
            assert not torch.equal(ours[key][:10], theirs[key][:10]), key
    [line] = [r.getMessage() for r in caplog.records if "not loaded" in r.getMessage()]
    assert f"{len(new)} tensors not loaded, initialised afresh for 10 classes: " in line
    assert sorted(line.rsplit(": ", 1)[1].split(", ")) == new


def grey_image(size: int = 64) -> torch.Tensor:
    torch.manual_seed(5)
    return torch.rand(2, 1, size, size)


def test_one_channel_weights_are_the_rgb_kernels_summed(publish: Publisher) -> None:
    publish("resnet18")
    rgb = models.build("resnet18", weights="IMAGENET1K_V1").eval()
    grey = models.build("resnet18", weights="IMAGENET1K_V1", in_channels=1).eval()
    torch.testing.assert_close(
        grey.conv1.weight, rgb.conv1.weight.sum(dim=1, keepdim=True), rtol=0, atol=0
    )
    # A grey image normalised as a 1-channel pipeline does (the mean of ImageNet's three means
    # and stds) is what the RGB model sees as three equal channels.
    pixels = grey_image()
    normalised = (pixels - MEAN.mean()) / STD.mean()
    with torch.no_grad():
        torch.testing.assert_close(grey(normalised), rgb(normalised.expand(-1, 3, -1, -1)))


@slow
def test_googlenet_on_grey_images_matches_the_rgb_model_on_imagenet_normalised_grey(
    publish: Publisher,
) -> None:
    # transform_input undoes the normalisation channel by channel, so here even ImageNet's
    # per-channel normalisation of (g, g, g) gives the same answer.
    publish("googlenet")
    rgb = models.build("googlenet", weights="IMAGENET1K_V1").eval()
    grey = models.build("googlenet", weights="IMAGENET1K_V1", in_channels=1).eval()
    pixels = grey_image()
    with torch.no_grad():
        expected = rgb((pixels.expand(-1, 3, -1, -1) - MEAN) / STD)
        torch.testing.assert_close(grey((pixels - MEAN.mean()) / STD.mean()), expected)


def test_more_channels_repeat_the_rgb_kernels_rescaled() -> None:
    kernel = torch.randn(8, 3, 3, 3)
    adapted = zoo_weights.adapt_input_conv(5, kernel)
    torch.testing.assert_close(adapted, torch.cat([kernel, kernel[:, :2]], 1) * 3 / 5)


# --- local files ---------------------------------------------------------------------------------


def test_a_local_state_dict_file_loads_and_a_digest_in_its_name_is_checked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(0)
    source = models.build("resnet18", num_classes=4)
    plain = tmp_path / "mine.pth"
    torch.save(source.state_dict(), plain)
    with caplog.at_level(logging.INFO, logger="zoo.models.weights"):
        assert_same_tensors(
            models.build("resnet18", weights=str(plain), num_classes=4).state_dict(),
            source.state_dict(),
        )
    assert "carries no sha256 in its name: not verified" in caplog.text
    named = tmp_path / f"mine-{sha256(plain)[:10]}.pth"
    named.write_bytes(plain.read_bytes())
    models.build("resnet18", weights=str(named), num_classes=4)
    tamper(named)
    with pytest.raises(WeightsError, match="its name promises"):
        models.build("resnet18", weights=str(named), num_classes=4)
    with pytest.raises(WeightsError, match="does not exist"):
        models.build("resnet18", weights=str(tmp_path / "missing.pth"))


LENET = {"num_classes": 10, "in_channels": 1}


def lenet_file(path: Path, **changed: torch.Tensor) -> Path:
    """A state_dict of LeNet-5 (10 classes, grey) with the ``changed`` tensors put in."""
    torch.save({**models.build("lenet", **LENET).state_dict(), **changed}, path)
    return path


def test_nan_weights_are_refused_even_in_a_head_that_does_not_fit(tmp_path: Path) -> None:
    """A 7-class head is left out to fine-tune (a new head); its NaN still says the file is
    damaged."""
    nan_head = torch.full((7, 84), float("nan"))
    path = lenet_file(tmp_path / "nan.pth", **{"classifier.4.weight": nan_head})
    with pytest.raises(WeightsError) as refused:
        models.build("lenet", weights=str(path), **LENET)
    assert str(refused.value) == (
        f"{path}: weight 'classifier.4.weight' holds NaN or infinite values: a damaged file"
    )


def test_a_first_convolution_that_is_not_rgb_is_named_with_its_file(tmp_path: Path) -> None:
    path = lenet_file(tmp_path / "two.pth", **{"features.0.weight": torch.zeros(6, 2, 5, 5)})
    with pytest.raises(WeightsError) as refused:
        models.build("lenet", weights=str(path), **LENET)
    assert str(refused.value) == (
        f"{path}: weight 'features.0.weight' reads 2 input channels, the model 1 "
        "(model.in_channels): only RGB (3-channel) kernels are adapted"
    )


def test_a_state_dict_whose_keys_are_not_names_is_refused_naming_them(tmp_path: Path) -> None:
    path = tmp_path / "numbers.pth"
    torch.save({1: torch.zeros(1), 2: torch.zeros(1)}, path)
    with pytest.raises(WeightsError) as refused:
        models.build("lenet", weights=str(path), **LENET)
    assert str(refused.value) == f"{path}: state_dict keys are not strings: [1, 2]"


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (Path.mkdir, "is a directory, not a file"),
        (os.mkfifo, "is not a regular file (a FIFO, a socket or a device)"),
    ],
    ids=["directory", "fifo"],
)
def test_model_weights_that_are_no_file_are_named_for_what_they_are(
    make: Any, words: str, tmp_path: Path
) -> None:
    path = tmp_path / "weights.pth"
    make(path)
    with pytest.raises(WeightsError) as refused:
        models.build("lenet", weights=str(path), **LENET)
    assert str(refused.value) == f"model.weights: {path} {words}"


# --- docs/models.md ------------------------------------------------------------------------------


def test_the_docs_weights_table_lists_every_published_file() -> None:
    doc = (REPO_ROOT / "docs" / "models.md").read_text()
    for pretrained in zoo_weights.published():
        p = pretrained.preprocessing
        row = (
            f"| `{pretrained.path.name}` | `{pretrained.sha256_prefix}` | "
            f"{pretrained.metrics['acc@1']:.3f} | {pretrained.metrics['acc@5']:.3f} | "
            f"{p.crop_size} | resize {p.resize_size}, crop {p.crop_size}, {p.interpolation} |"
        )
        assert row in doc, row
