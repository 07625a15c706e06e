"""The task config group (zoo/configs/task/) and the task modules' typed options: each model's
config picks its task's group, each group's file is its schema's defaults, the modules take one
options object and keep it as plain data, and the flat hyper-parameters of checkpoints written
before the group are translated once into today's layout."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from tests.conftest import compose_config
from zoo import models
from zoo.core.config import CONFIG_DIR, to_plain
from zoo.core.errors import ConfigError
from zoo.tasks import TASKS, task_class
from zoo.tasks.adversarial import AdversarialOptions
from zoo.tasks.build import build_task, task_arguments, translate_flat_hparams
from zoo.tasks.classification import ClassificationModule, ClassificationOptions
from zoo.tasks.segmentation import SegmentationModule, SegmentationOptions

ADAM = {"name": "adam", "lr": 1e-3}
TASK_GROUP = "/task@_global_.task"


@pytest.mark.parametrize(
    "path", sorted((CONFIG_DIR / "model").glob("*.yaml")), ids=lambda p: p.stem
)
def test_every_model_config_picks_its_models_task_group(path: Path) -> None:
    defaults = OmegaConf.to_container(OmegaConf.load(path))["defaults"]
    picked = [entry[TASK_GROUP] for entry in defaults if TASK_GROUP in entry]
    assert picked == [models.MODELS.get(path.stem).task]


def test_each_task_group_is_its_modules_schema_with_its_defaults() -> None:
    files = {path.stem: path for path in (CONFIG_DIR / "task").glob("*.yaml")}
    assert sorted(files) == sorted(TASKS)
    for task, module in TASKS.items():
        written = OmegaConf.to_container(OmegaConf.load(files[task]))
        assert written == module.options_type().to_dict(), task


@pytest.fixture
def composed(tmp_path: Path):
    """The task options of a composed train config, checked by its model's task module."""

    def compose(*overrides: str) -> Any:
        cfg = compose_config(list(overrides), tmp_path)
        return task_class(cfg.model.name).options_type.parse(cfg.task, "task")

    yield compose
    GlobalHydra.instance().clear()


def test_the_model_picks_the_task_group(composed) -> None:
    assert composed("model=unet") == SegmentationOptions(channels_last=True)  # lenet_mnist's
    assert composed("model=unet", "task.loss=dice").loss == "dice"
    assert composed("experiment=unet_mnist", "task.loss=dice").loss == "dice"
    assert composed("model=resnet18", "task.mixing.mixup_alpha=0.2").mixing.mixup_alpha == 0.2


def test_adversarial_training_is_off_until_a_method_is_set(composed) -> None:
    assert not composed().adversarial.enabled
    pgd = composed("task.adversarial.method=pgd", "task.adversarial.eps=0.2").adversarial
    assert pgd == AdversarialOptions(method="pgd", eps=0.2)
    robust = composed("experiment=lenet_mnist_robust").adversarial
    assert (robust.method, robust.eps, robust.val_batches) == ("fgsm", 0.1, 2)


@pytest.mark.parametrize(
    "overrides",
    [
        ["experiment=resnet18_finetune", "data.root=/data/flowers", "task.finetune.freeze=none"],
        ["experiment=resnet18_imagenet_tv2"],
        ["experiment=unet_folder", "data.root=/data/canvases"],
        ["hparams_search=lenet_mnist_optuna", "task.label_smoothing=0.1"],
    ],
)
def test_the_recipes_that_set_task_options_parse(overrides: list[str], composed) -> None:
    composed(*overrides)


@pytest.mark.parametrize("module", [ClassificationModule, SegmentationModule])
def test_a_task_module_takes_five_arguments_its_options_one_typed_object(module: type) -> None:
    parameters = list(inspect.signature(module.__init__).parameters)[1:]
    assert parameters == ["model", "optimizer", "scheduler", "data", "options"]


def test_the_checkpoint_holds_the_options_as_plain_data(tmp_path: Path) -> None:
    options = {"label_smoothing": 0.1, "adversarial": {"method": "fgsm"}}
    module = build_task({"name": "lenet"}, ADAM, None, None, options)
    assert isinstance(module.options, ClassificationOptions)
    assert module.options.adversarial.method == "fgsm"
    path = tmp_path / "hparams.pt"
    torch.save(dict(module.hparams), path)
    saved = torch.load(path, weights_only=True)
    assert saved["options"] == module.options.to_dict()
    assert ClassificationOptions.parse(saved["options"], "task") == module.options


def test_options_of_the_wrong_type_are_refused() -> None:
    with pytest.raises(TypeError, match="ClassificationModule takes ClassificationOptions"):
        ClassificationModule({"name": "lenet"}, ADAM, options=SegmentationOptions())


# Every key of the flat ``task:`` block (zoo/configs/train.yaml before the task group), away from
# its default, as a checkpoint of the time holds them beside the model's and data's configs.
FLAT_CLASSIFICATION = {
    "model": {"name": "lenet", "in_channels": 1, "num_classes": 10},
    "optimizer": ADAM,
    "scheduler": None,
    "data": {"name": "mnist"},
    "label_smoothing": 0.1,
    "aux_loss_weight": 0.4,
    "channels_last": True,
    "compile": "reduce-overhead",
    "class_names": [f"digit {i}" for i in range(10)],
    "log_images": 8,
    "freeze": "bn",
    "backbone_lr_scale": 0.1,
    "norm_weight_decay": 0.0,
    "adversarial": "pgd",
    "adversarial_eps": 0.2,
    "adversarial_steps": 3,
    "adversarial_step_size": 0.05,
    "adversarial_norm": "l2",
    "adversarial_random_start": False,
    "adversarial_alpha": 0.25,
    "adversarial_val_steps": 5,
    "adversarial_val_batches": 2,
    "mixup_alpha": 0.2,
    "mixup_prob": 0.3,
    "cutmix_alpha": 1.0,
    "cutmix_prob": 0.6,
}


def test_the_flat_layout_of_old_checkpoints_translates_key_by_key() -> None:
    arguments = translate_flat_hparams(FLAT_CLASSIFICATION)
    assert {key: arguments[key] for key in ("model", "optimizer", "scheduler")} == {
        key: FLAT_CLASSIFICATION[key] for key in ("model", "optimizer", "scheduler")
    }
    # The module read its class names before the data config's: they go where it reads them.
    assert arguments["data"] == {"name": "mnist", "class_names": FLAT_CLASSIFICATION["class_names"]}
    options = ClassificationOptions.parse(arguments["options"], "task")
    assert (options.label_smoothing, options.aux_loss_weight, options.log_images) == (0.1, 0.4, 8)
    assert (options.channels_last, options.compile) == (True, "reduce-overhead")
    assert (options.finetune.freeze, options.finetune.backbone_lr_scale) == ("bn", 0.1)
    assert options.finetune.norm_weight_decay == 0.0
    adversarial = options.adversarial
    assert (adversarial.method, adversarial.eps, adversarial.steps) == ("pgd", 0.2, 3)
    assert (adversarial.step_size, adversarial.norm, adversarial.random_start) == (
        0.05,
        "l2",
        False,
    )
    assert (adversarial.alpha, adversarial.val_steps, adversarial.val_batches) == (0.25, 5, 2)
    mixing = options.mixing
    assert (mixing.mixup_alpha, mixing.mixup_prob, mixing.cutmix_alpha, mixing.cutmix_prob) == (
        0.2,
        0.3,
        1.0,
        0.6,
    )


def test_todays_layout_passes_through_and_unknown_keys_are_refused() -> None:
    module = build_task({"name": "lenet"}, ADAM, None, None, {"mixing": {"mixup_alpha": 0.2}})
    assert task_arguments(dict(module.hparams)) == dict(module.hparams)
    with pytest.raises(ConfigError, match=r"hyper-parameters \['colour'\] are not arguments"):
        task_arguments({**module.hparams, "colour": "red"})
    # An old checkpoint with a key no task ever took: refused by the schema, naming it.
    flat = translate_flat_hparams({**FLAT_CLASSIFICATION, "colour": "red"})
    with pytest.raises(ConfigError, match=r"task\.colour is not an option of any task"):
        ClassificationOptions.parse(flat["options"], "task")


def test_a_translated_checkpoint_rebuilds_the_module_it_was() -> None:
    flat = {**FLAT_CLASSIFICATION, "compile": False, "class_names": None}
    arguments = translate_flat_hparams(flat)
    options = ClassificationOptions.parse(arguments["options"], "task")
    module = ClassificationModule(
        arguments["model"], arguments["optimizer"], None, arguments["data"], options
    )
    assert module.perturbation is not None and module.perturbation.norm == "l2"
    assert module.mixing is not None
    assert to_plain(module.hparams["options"]) == options.to_dict()
