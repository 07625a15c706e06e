"""zoo.tasks.build.image_size: the one check of data.image_size that train.py and evaluate.py
share, before any data or batch is allocated."""

from __future__ import annotations

import pytest
import torch

from zoo import models
from zoo.core.errors import ConfigError
from zoo.tasks.build import MAX_IMAGE_SIZE, build_task, image_size


@pytest.mark.parametrize(
    ("requested", "limit", "message"),
    [
        (100_000, None, rf"data.image_size=100000 is over max_image_size={MAX_IMAGE_SIZE}"),
        (64, 32, r"data.image_size=64 is over max_image_size=32.*set max_image_size=N"),
        ("224", None, r"data.image_size must be an integer or null, got '224'"),
        (True, None, r"data.image_size must be an integer or null, got True"),
        (64, "big", r"max_image_size must be an integer >= 1, got 'big'"),
        (30, None, r"data.image_size=30: "),  # not what LeNet-5 takes: the model's own check
    ],
)
def test_image_sizes_that_cant_work_are_one_line(
    requested: object, limit: int | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        image_size(models.build("lenet"), requested, limit)
    assert "\n" not in str(refused.value)


def test_sizes_within_the_limit_pass_and_none_is_the_models_own() -> None:
    with torch.device("meta"):
        resnet = models.build("resnet18")
    assert image_size(resnet, None) == resnet.native_input_size[0] == 224
    assert image_size(resnet, 64, 64) == 64
    assert image_size(resnet, MAX_IMAGE_SIZE) == MAX_IMAGE_SIZE


ADAM = {"name": "adam", "lr": 1e-3}


@pytest.mark.parametrize(
    "model",
    [
        {"name": "lenet", "num_classes": 10**9},
        {"name": "lenet", "in_channels": 10**9},
    ],
    ids=["classes", "channels"],
)
def test_an_absurd_model_on_the_command_line_is_refused_before_it_allocates(
    model: dict[str, object],
) -> None:
    # Refused on the meta device: building the first of these for real would take 317 GiB.
    with pytest.raises(ConfigError, match=r"would hold [\d,]+ parameters .* over the limit"):
        build_task(model, ADAM, None, None)


@pytest.mark.parametrize(
    ("model", "options", "message"),
    [
        (
            {"name": "unet", "num_classes": 2},
            {"adversarial": {"method": "pgd"}},
            "task.adversarial is an option of classification models; this is a segmentation model",
        ),
        (
            {"name": "unet", "num_classes": 2},
            {"mixing": {"mixup_alpha": 0.2}},
            "task.mixing is an option of classification models; this is a segmentation model",
        ),
        (
            {"name": "lenet"},
            {"loss": "dice"},
            "task.loss is an option of segmentation models; this is a classification model",
        ),
        ({"name": "lenet"}, {"colour": "red"}, "task.colour is not an option of any task"),
    ],
)
def test_an_option_of_the_other_task_is_refused_not_dropped(
    model: dict[str, object], options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        build_task(model, ADAM, None, None, options)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"freeze": "backbone"}, "task.freeze=backbone is now task.finetune.freeze=backbone"),
        ({"adversarial": "pgd"}, "task.adversarial=pgd is now task.adversarial.method=pgd"),
        ({"adversarial_eps": 0.2}, "task.adversarial_eps=0.2 is now task.adversarial.eps=0.2"),
        ({"mixup_alpha": 0.2}, "task.mixup_alpha=0.2 is now task.mixing.mixup_alpha=0.2"),
    ],
)
def test_a_key_of_the_old_flat_layout_names_where_it_lives_now(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build_task({"name": "lenet"}, ADAM, None, None, options)


@pytest.mark.parametrize("mode", ["reduce-overhead", True])
def test_task_compile_takes_a_torch_compile_mode(mode: object) -> None:
    module = build_task({"name": "lenet"}, ADAM, None, None, {"compile": mode})
    assert len(module._compiled) == 1


def test_a_compile_mode_torch_does_not_have_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"task\.compile must be true, false or a torch\.compile"):
        build_task({"name": "lenet"}, ADAM, None, None, {"compile": "fast"})
