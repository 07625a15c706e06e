"""Every dataset is one name for three things: a ZooDataModule registered under it, defined with
its schema in zoo/data/[<family>/]<name>.py, and zoo/configs/data/<name>.yaml, whose keys are the
schema's. The datamodules' contract (zoo.data.base), the schemas' checks, and data configs read
back from checkpoints of an older zoo."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from tests.conftest import compose_config
from zoo import data
from zoo.core.config import CONFIG_DIR
from zoo.core.errors import ConfigError
from zoo.data.base import DataSchema, Normalization, ZooDataModule
from zoo.data.images import write_png
from zoo.data.mnist.mnist import MNISTDataModule
from zoo.evaluation.run import evaluate
from zoo.tasks.adversarial import pixel_normalization
from zoo.training.resume import config_mismatch

DATASETS = data.available()
CONFIGS = sorted(path.stem for path in (CONFIG_DIR / "data").glob("*.yaml"))
# What composing each dataset's config needs on the command line (its ??? values).
REQUIRED = {
    "image_folder": ["data.root=/images"],
    "segmentation_folder": ["data.root=/images", "data.num_classes=3"],
}


@pytest.fixture(autouse=True)
def _clear_hydra() -> Iterator[None]:
    yield
    GlobalHydra.instance().clear()


# --- one name ----------------------------------------------------------------------------------


def test_every_config_is_a_dataset_and_every_dataset_has_a_config() -> None:
    assert DATASETS == CONFIGS


@pytest.mark.parametrize("name", DATASETS)
def test_module_name_registry_name_and_config_name_are_one(name: str) -> None:
    datamodule = data.datamodule_class(name)
    assert datamodule.__module__.rsplit(".", 1)[-1] == name
    assert datamodule.schema.__module__ == datamodule.__module__
    assert OmegaConf.load(CONFIG_DIR / "data" / f"{name}.yaml").name == name
    assert datamodule.schema.title == f"data={name}"


@pytest.mark.parametrize("name", DATASETS)
def test_the_configs_keys_are_the_schemas_fields_and_the_composed_config_passes(
    name: str, tmp_path: Path
) -> None:
    keys = set(OmegaConf.load(CONFIG_DIR / "data" / f"{name}.yaml"))
    assert keys == {field.name for field in dataclasses.fields(data.schema(name))}
    cfg = compose_config([f"data={name}", *REQUIRED.get(name, [])], tmp_path)
    config = data.parse(cfg.data)
    assert isinstance(config, data.schema(name)) and config.name == name


@pytest.mark.parametrize("name", DATASETS)
def test_the_datamodule_takes_only_schema_fields_with_the_schemas_defaults(name: str) -> None:
    defaults = data.schema(name).defaults()
    for argument in data.arguments(name):
        assert argument in defaults
    # Checked when the class is defined; here, that it stays so.
    assert data.datamodule_class(name).task in ("classification", "segmentation")


# --- the contract ------------------------------------------------------------------------------


@dataclasses.dataclass(kw_only=True)
class ToyConfig(DataSchema):
    name: str = "toy"
    size: int = 4


def test_a_datamodule_lacking_a_member_fails_when_defined_or_built() -> None:
    class Unfinished(ZooDataModule):  # no normalization, class_names, preprocess_images
        task = "classification"
        schema = ToyConfig

    with pytest.raises(TypeError, match="abstract"):
        Unfinished()
    with pytest.raises(TypeError, match="lacks class_names, normalization, preprocess_images"):
        data.register("unfinished", Unfinished)

    members = {
        "normalization": lambda self: Normalization((0.0,), (1.0,)),
        "class_names": property(lambda self: []),
        "preprocess_images": lambda self, images: torch.stack(list(images)),
    }
    with pytest.raises(TypeError, match=r"NoTask.task must be one of"):
        type("NoTask", (ZooDataModule,), {**members, "schema": ToyConfig})
    with pytest.raises(TypeError, match=r"NoSchema.schema must be a DataSchema"):
        type("NoSchema", (ZooDataModule,), {**members, "task": "classification"})

    def takes(self, size: int = 4, colour: str = "red") -> None: ...

    def other_default(self, size: int = 5) -> None: ...

    declared = {**members, "task": "classification", "schema": ToyConfig}
    with pytest.raises(TypeError, match="takes colour, which its schema ToyConfig lacks"):
        type("Unknown", (ZooDataModule,), {**declared, "__init__": takes})
    with pytest.raises(TypeError, match=r"default size=5 differs from its schema ToyConfig's 4"):
        type("Drifted", (ZooDataModule,), {**declared, "__init__": other_default})
    with pytest.raises(TypeError, match="is not a ZooDataModule"):
        data.register("plain", torch.nn.Module)  # type: ignore[arg-type]


def constant_image(channels: int, value: int = 200, size: int = 40) -> torch.Tensor:
    return torch.full((channels, size, size), value, dtype=torch.uint8)


def segmentation_folder(root: Path) -> Path:
    for i in range(6):
        for folder, tensor in (("images", constant_image(3, 50 * (i % 3), 16)),
                               ("masks", torch.zeros(1, 16, 16, dtype=torch.uint8))):  # fmt: skip
            (root / folder).mkdir(parents=True, exist_ok=True)
            write_png(tensor, str(root / folder / f"{i}.png"))
    return root


def datamodule(name: str, tmp_path: Path) -> ZooDataModule:
    """Each dataset's datamodule, small, without its data (but for a folder of masks)."""
    spec: dict[str, Any] = {"name": name, "image_size": 32}
    if name == "image_folder":
        spec["root"] = str(tmp_path)
    if name == "segmentation_folder":
        spec |= {"root": str(segmentation_folder(tmp_path)), "num_classes": 2, "val_fraction": 0.2,
                 "test_fraction": 0.2}  # fmt: skip
    if name == "mnist":
        spec["resize"] = "bilinear"  # the whole image, not a digit in a blank border
    return data.build(spec)


@pytest.mark.parametrize("name", [n for n in DATASETS if n != "imagenet_synthetic"])
def test_normalization_is_what_the_preprocessing_normalises_with(name: str, tmp_path: Path) -> None:
    dm = datamodule(name, tmp_path)
    channels = dm.hparams.get("channels", 1 if "mnist" in name else 3)
    mean, std = pixel_normalization(dm, channels)
    batch = dm.preprocess_images([constant_image(channels)])
    assert batch.shape == (1, channels, 32, 32)
    # Back in pixel units, the image is what it was.
    torch.testing.assert_close(batch * std + mean, torch.full_like(batch, 200 / 255))
    assert len(dm.normalization().mean) == len(dm.normalization().std) == channels


def test_the_synthetic_stand_in_has_no_image_files_to_preprocess(tmp_path: Path) -> None:
    dm = datamodule("imagenet_synthetic", tmp_path)
    assert dm.normalization() == Normalization((0.0,) * 3, (1.0,) * 3)
    with pytest.raises(ConfigError, match="random tensors, not images"):
        dm.preprocess_images([constant_image(3)])


def test_attacks_refuse_a_datamodule_that_does_not_state_its_pixel_space() -> None:
    import pytorch_lightning as pl

    with pytest.raises(TypeError, match="LightningDataModule is not one"):
        pixel_normalization(pl.LightningDataModule(), 3)


@pytest.mark.parametrize("name", DATASETS)
def test_class_names_are_a_list_of_strings(name: str, tmp_path: Path) -> None:
    names = datamodule(name, tmp_path).class_names
    assert isinstance(names, list) and all(isinstance(n, str) for n in names)


# --- the schemas -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("batch_size", 0, "data.batch_size must be an integer >= 1, got 0"),
        ("eval_batch_size", 0, "data.eval_batch_size must be an integer >= 1, got 0"),
        ("num_workers", -1, "data.num_workers must be an integer >= 0, got -1"),
        ("image_size", 0, r"data.image_size must be an integer >= \d+.* or null, got 0"),
        ("batch_size", "many", "data.batch_size must be an integer >= 1, got 'many'"),
        ("colour", "red", r"data.colour is not an option of data=\w+ \(options: name, batch_"),
    ],
)
def test_every_dataset_refuses_what_no_dataset_takes(
    name: str, key: str, value: object, message: str
) -> None:
    spec = {"name": name, "root": "/images", "num_classes": 3, key: value}
    if name not in REQUIRED:
        spec = {k: v for k, v in spec.items() if k not in ("root", "num_classes")}
    with pytest.raises(ConfigError, match=message):
        data.parse(spec)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "mnist", "val_size": 60_000}, r"data.val_size must be an integer in \(0, 60000"),
        ({"name": "mnist", "channels": 3}, r"data.channels must be 1 \(grayscale\), got 3"),
        ({"name": "mnist", "num_classes": 5}, "data.num_classes must be 10, the dataset's classes"),
        ({"name": "mnist", "distortion": {"max_scale": 1}}, "data.distortion.max_scale must be"),
        ({"name": "mnist", "class_names": ["a"]}, "data.class_names has 1 names for data.num_c"),
        ({"name": "mnist_segmentation", "image_size": 16}, r"must be an integer >= 28 \(an MNIST"),
        ({"name": "mnist_segmentation", "min_digits": 3, "max_digits": 2}, "1 <= min_digits"),
        ({"name": "imagenet", "layout": "tarballs"}, "data.layout must be one of auto, folders"),
        ({"name": "imagenet", "std": [0.2, 0.0, 0.2]}, "data.std must be positive"),
        ({"name": "imagenet", "channels": 1, "mean": [0.5, 0.5]}, "need 1 value"),
        ({"name": "imagenet_synthetic", "train_size": 0}, "data.train_size must be an integer >="),
        ({"name": "segmentation_folder", "root": "/x"}, "missing value for data.num_classes"),
        ({"name": "segmentation_folder", "root": "/x", "num_classes": 1}, r"in \[2, 65536\]"),
        ({"name": "no_such_data"}, "data.name='no_such_data' is not a zoo dataset; available"),
    ],
)  # fmt: skip
def test_each_dataset_checks_its_own_keys(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        data.parse(spec)


def test_a_bad_value_fails_before_the_datamodule_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def built(*args: object, **kwargs: object) -> None:
        raise AssertionError("built before the config was checked")

    monkeypatch.setattr(MNISTDataModule, "__init__", built)
    with pytest.raises(ConfigError, match=r"data\.val_size must be"):
        data.build({"name": "mnist"}, val_size=0)


def test_describe_fills_in_the_defaults_and_what_the_dataset_says() -> None:
    described = data.describe({"name": "mnist", "batch_size": 64})
    assert described["batch_size"] == 64
    assert described == {**data.schema("mnist").defaults(), "batch_size": 64}


# --- exact resume ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DATASETS)
def test_each_dataset_names_the_keys_a_resume_must_keep(name: str) -> None:
    keys = data.must_match(name)
    assert set(keys) <= set(data.schema(name).defaults())
    assert {"name", "image_size", "batch_size", "num_classes"} <= set(keys)


def test_a_resume_compares_the_datasets_own_keys() -> None:
    saved = {"data": data.describe({"name": "mnist"})}
    assert config_mismatch({"data": {**saved["data"], "num_workers": 4}}, saved) is None
    changed = {"data": {**saved["data"], "val_size": 100}}
    assert config_mismatch(changed, saved) == ("data.val_size", 5000, 100)
    folder = {"name": "segmentation_folder", "root": "/x", "num_classes": 3}
    other = {"data": data.describe(folder)}
    assert config_mismatch(other, saved) == ("data.name", "mnist", "segmentation_folder")


# --- data configs from checkpoints -------------------------------------------------------------


def test_a_stored_config_loses_keys_the_schema_no_longer_has_and_gains_its_defaults(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stored = {"name": "mnist", "batch_size": 64, "contrast": 2.0}
    with caplog.at_level(logging.WARNING):
        restored = data.restore(stored)
    assert restored == {"name": "mnist", "batch_size": 64}
    assert "contrast, which data=mnist no longer has: ignored" in caplog.text
    assert data.parse(restored).val_size == 5000  # absent: the default
    assert data.restore({"name": "toy", "x": 1}) == {"name": "toy", "x": 1}  # parse refuses it


LEGACY_LENET = Path(__file__).parents[1] / "evaluation" / "legacy" / "lenet_before_layout.ckpt"
LEGACY_LENET_TEST_ACC = 0.824999988079071


def test_a_checkpoint_with_data_keys_of_another_version_evaluates_as_it_tested(
    synthetic_mnist: Path, tmp_path: Path
) -> None:
    checkpoint = torch.load(LEGACY_LENET, weights_only=True)
    for part in ("hyper_parameters", "datamodule_hyper_parameters"):
        config = checkpoint[part]["data"] if part == "hyper_parameters" else checkpoint[part]
        config["contrast"] = 2.0  # a key this zoo does not know
        del config["resize"]  # one it added since: the default, "pad", is what it was
    altered = tmp_path / "altered.ckpt"
    torch.save(checkpoint, altered)
    overrides = [
        f"ckpt_path={altered}",
        f"paths.data_dir={synthetic_mnist}",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "logger=none",
    ]
    report = evaluate(compose_config(overrides, tmp_path, config_name="evaluate"), tmp_path)
    assert report["acc"] == pytest.approx(LEGACY_LENET_TEST_ACC, rel=1e-6)

    GlobalHydra.instance().clear()
    unknown = compose_config([*overrides, "+data.contrast=2.0"], tmp_path, "evaluate")
    with pytest.raises(ConfigError, match=r"data.contrast is not an option of data=mnist"):
        evaluate(unknown, tmp_path / "unknown")
