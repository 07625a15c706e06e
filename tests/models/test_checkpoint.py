"""zoo.models.checkpoint: one reader below every way a zoo checkpoint comes in — evaluate.py's
``ckpt_path=``, train.py's ``ckpt_path=`` and ``model.weights=<file>`` — so that a hostile or
damaged file is refused by each of them alike, in one line, before anything uses it."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch

from zoo import models
from zoo.evaluation.checkpoint import load_checkpoint
from zoo.models.checkpoint import CheckpointError, read_checkpoint
from zoo.models.loading import WeightsError
from zoo.tasks.base import ZooTask
from zoo.tasks.build import build_task
from zoo.training.resume import check_checkpoint

ARGUMENTS = {"num_classes": 10, "in_channels": 1}
LENET = {"name": "lenet", **ARGUMENTS}


@pytest.fixture(scope="module")
def module() -> ZooTask:
    """A LeNet-5 task module, fresh: the run whose checkpoint the tests write and damage."""
    torch.manual_seed(0)
    return build_task(LENET, {"name": "adam", "lr": 1e-3}, None, None)


def contents_of(module: ZooTask) -> dict[str, Any]:
    """What Lightning saves of ``module``, the parts the zoo reads."""
    return {
        "pytorch-lightning_version": pl.__version__,
        "epoch": 0,
        "global_step": 0,
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
    }


def saved(contents: object, path: Path) -> Path:
    torch.save(contents, path)
    return path


class CodePayload:
    """Pickles as a call to exec: whatever unpickles it runs the code."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return exec, (self.code,)


def nested(depth: int) -> list[Any]:
    node: list[Any] = []
    for _ in range(depth):
        node = [node]
    return node


# Each damage of a good checkpoint, given its contents and a file that code would create, and
# what the refusal says.
Damage = Callable[[dict[str, Any], Path], object]


def in_hparams(key: Any, value: Any) -> Damage:
    def damage(contents: dict[str, Any], marker: Path) -> object:
        contents["hyper_parameters"][key] = value
        return contents

    return damage


def with_weight(key: Any, value: Any, part: str = "state_dict") -> Damage:
    def damage(contents: dict[str, Any], marker: Path) -> object:
        contents[part] = {**contents["state_dict"], key: value}
        return contents

    return damage


def data_config(spec: dict[str, Any]) -> Damage:
    def damage(contents: dict[str, Any], marker: Path) -> object:
        contents["datamodule_hyper_parameters"] = spec
        return contents

    return damage


def pickled_code(contents: dict[str, Any], marker: Path) -> object:
    contents["hyper_parameters"]["note"] = CodePayload(f"open({str(marker)!r}, 'w').close()")
    return contents


def without_state_dict(contents: dict[str, Any], marker: Path) -> object:
    del contents["state_dict"]
    return contents


def not_a_dict(contents: dict[str, Any], marker: Path) -> object:
    return list(contents["state_dict"].values())


HOSTILE: dict[str, tuple[Damage, str]] = {
    "a class path in the hyper-parameters": (
        in_hparams("scheduler", {"_target_": "builtins.open", "_args_": ["x", "w"]}),
        r"its hyper-parameters holds '_target_': 'builtins.open'.*never imports a class path",
    ),
    "a class path in the data config": (
        data_config({"transform": {"class_path": "torchvision.transforms.ToTensor"}}),
        r"the data config holds 'class_path': 'torchvision.transforms.ToTensor'",
    ),
    "a model that is no registry name": (
        in_hparams("model", {**LENET, "name": "os.system"}),
        r"model 'os.system' is not a zoo model; available: alexnet, googlenet",
    ),
    "nesting 100 deep": (in_hparams("note", nested(100)), r"nest more than 64 levels deep"),
    "a config key that is no string": (
        in_hparams(3, "three"),
        r"hyper-parameters: key 3 is a int, where config keys are strings",
    ),
    "a weight named by a number": (
        with_weight(7, torch.zeros(1)),
        r"state_dict keys are not strings: \[7\]",
    ),
    "a weight that is no tensor": (
        with_weight("model.features.0.bias", [0.0] * 6),
        r"state_dict entries are not tensors: \['model.features.0.bias'\]",
    ),
    "raw weights beside an average that are no tensors": (
        with_weight("model.features.0.bias", "zeros", part="current_model_state"),
        r"current_model_state entries are not tensors: \['model.features.0.bias'\]",
    ),
    "class_names that are no list of strings": (
        in_hparams("class_names", "abcdefghij"),
        r"class_names must be a list of strings, got str",
    ),
    "no state_dict": (without_state_dict, r"holds no state_dict"),
    "a pickle payload": (
        pickled_code,
        r"refusing to load .*it holds pickled code \(it would call exec\).*nothing .* was run",
    ),
    "a file that is no dict": (not_a_dict, r"holds a list, not a"),
}

# The three ways a checkpoint comes in, each as it is called with a file.
PATHS: dict[str, Callable[[Path, ZooTask], object]] = {
    "evaluate.py ckpt_path=": lambda path, module: load_checkpoint(path),
    "train.py ckpt_path=": lambda path, module: check_checkpoint(path, module),
    "model.weights=": lambda path, module: models.build("lenet", weights=str(path), **ARGUMENTS),
}


@pytest.mark.parametrize("way", PATHS)
@pytest.mark.parametrize(("damage", "message"), HOSTILE.values(), ids=list(HOSTILE))
def test_a_hostile_or_damaged_checkpoint_is_refused_in_one_line_on_every_path(
    damage: Damage, message: str, way: str, module: ZooTask, tmp_path: Path
) -> None:
    marker = tmp_path / "code_ran"
    path = saved(damage(contents_of(module), marker), tmp_path / "damaged.ckpt")
    with pytest.raises(WeightsError, match=message) as refused:
        PATHS[way](path, module)
    text = str(refused.value)
    assert str(path) in text and "\n" not in text
    assert not marker.exists()


# A file that is no dict is no checkpoint to ``model.weights=`` either: a bare state_dict
# of weights is refused in words of its own.
CHECKPOINTS = {case: damage for case, (damage, _) in HOSTILE.items() if damage is not not_a_dict}


@pytest.mark.parametrize("damage", CHECKPOINTS.values(), ids=list(CHECKPOINTS))
def test_every_path_refuses_a_checkpoint_with_the_same_line(
    damage: Damage, module: ZooTask, tmp_path: Path
) -> None:
    path = saved(damage(contents_of(module), tmp_path / "code_ran"), tmp_path / "damaged.ckpt")
    lines = set()
    for read in PATHS.values():
        with pytest.raises(WeightsError) as refused:
            read(path, module)
        lines.add(str(refused.value))
    assert len(lines) == 1, lines


def test_an_intact_checkpoint_passes_every_path_with_the_networks_weights(
    module: ZooTask, tmp_path: Path
) -> None:
    path = saved(contents_of(module), tmp_path / "good.ckpt")
    check_checkpoint(path, module)
    network = module.model.state_dict()
    for loaded in (load_checkpoint(path).model, PATHS["model.weights="](path, module)):
        assert isinstance(loaded, models.ZooModel)
        for key, tensor in loaded.state_dict().items():
            assert torch.equal(tensor, network[key]), key


def test_the_reader_gives_plain_data_and_the_networks_tensors(
    module: ZooTask, tmp_path: Path
) -> None:
    contents = contents_of(module)
    contents["hyper_parameters"]["data"] = {"name": "mnist", "max_image_pixels": 10**12}
    contents["datamodule_hyper_parameters"] = {"image_size": 32}
    # callbacks=ema: the average is the state_dict, the raw weights beside it go on training.
    contents["current_model_state"] = {k: v + 1 for k, v in contents["state_dict"].items()}
    checkpoint = read_checkpoint(saved(contents, tmp_path / "ema.ckpt"))

    assert (checkpoint.model_name, checkpoint.model_arguments) == ("lenet", ARGUMENTS)
    assert checkpoint.hparams == contents["hyper_parameters"]
    # The datamodule's resolved arguments join the run's; this machine's limits are its own.
    assert checkpoint.data == {"name": "mnist", "image_size": 32}
    network = module.model.state_dict()
    assert checkpoint.weights.keys() == network.keys()
    assert checkpoint.raw_weights is not None and checkpoint.raw_weights.keys() == network.keys()
    for key, tensor in network.items():
        assert torch.equal(checkpoint.weights[key], tensor)
        assert torch.equal(checkpoint.raw_weights[key], tensor + 1)


def test_a_checkpoint_without_an_average_has_no_raw_weights(
    module: ZooTask, tmp_path: Path
) -> None:
    assert read_checkpoint(saved(contents_of(module), tmp_path / "plain.ckpt")).raw_weights is None


def test_its_errors_are_evaluations_checkpoint_errors() -> None:
    from zoo.evaluation import checkpoint as evaluation

    assert evaluation.CheckpointError is CheckpointError
    assert issubclass(CheckpointError, WeightsError)


def inflating(contents: dict[str, Any], path: Path) -> Path:
    """``contents`` saved by torch, its members then stored DEFLATE-compressed (which
    torch.save never does, and torch.load reads): 8 MB of zeros beside the checkpoint unpack
    from a few kB."""
    plain = saved({**contents, "padding": torch.zeros(2_000_000)}, path.with_suffix(".plain"))
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bomb:
        for info in source.infolist():
            bomb.writestr(info.filename, source.read(info))
    return path


def test_a_checkpoint_that_unpacks_past_its_size_is_refused_alike_on_every_path(
    module: ZooTask, tmp_path: Path
) -> None:
    path = inflating(contents_of(module), tmp_path / "bomb.ckpt")
    lines = set()
    for read in PATHS.values():
        with pytest.raises(WeightsError) as refused:
            read(path, module)
        lines.add(str(refused.value))
    [line] = lines
    assert line.startswith(f"refusing {path}: its members unpack to 8.")
    assert "stored compressed, which torch.save never does" in line


def test_where_the_model_is_in_hand_a_checkpoint_may_hold_no_more_than_it_can_need(
    module: ZooTask, tmp_path: Path
) -> None:
    """train.py ckpt_path= and model.weights= hold LeNet-5: a checkpoint of it (its weights,
    Adam's moments, an average) is far below 8 x its 247 kB + 16 MB. evaluate.py learns the
    model from the file, and reads what the file holds on disk."""
    contents = {**contents_of(module), "padding": torch.zeros(5_000_000)}  # 20 MB, stored
    path = saved(contents, tmp_path / "padded.ckpt")
    for way in ("train.py ckpt_path=", "model.weights="):
        with pytest.raises(WeightsError) as refused:
            PATHS[way](path, module)
        assert str(refused.value) == (
            f"refusing {path}: it unpacks to 20.2 MB, more than the 18.0 MB that a file for "
            "LeNet5's weights can need (8 x 246.8 kB + 16.0 MB); nothing was unpacked"
        )
    assert isinstance(PATHS["evaluate.py ckpt_path="](path, module).model, models.ZooModel)
