"""evaluate.py against files that claim too much: a checkpoint's absurd sizes and malformed
structure, image files that decode to gigabytes, and outputs that can't be written — each one
line, before anything large is allocated."""

from __future__ import annotations

import resource
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from tests.conftest import compose_config, run_script
from tests.data.test_images import bomb_png
from zoo.core.errors import ConfigError
from zoo.evaluation.checkpoint import CheckpointError, load_checkpoint
from zoo.evaluation.run import evaluate
from zoo.models.loading import WeightsError
from zoo.tasks.build import translate_flat_hparams

# LeNet-5 trained on MNIST before the layout change: a real checkpoint of 0.3 MB.
LENET = Path(__file__).parent / "legacy" / "lenet_before_layout.ckpt"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def altered(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    """LeNet's checkpoint with ``change`` applied to its contents."""
    ckpt = torch.load(LENET, weights_only=True)
    change(ckpt)
    path = tmp_path / "altered.ckpt"
    torch.save(ckpt, path)
    return path


def model_spec(**arguments: Any) -> Callable[[dict[str, Any]], None]:
    def change(ckpt: dict[str, Any]) -> None:
        ckpt["hyper_parameters"]["model"].update(arguments)

    return change


# LeNet's weights under claims that would allocate gigabytes to terabytes if built for real.
ABSURD_MODELS = {
    "vgg16 with 300,000 classes": model_spec(name="vgg16", num_classes=300_000, in_channels=1),
    "10^9 classes": model_spec(num_classes=10**9),
    "10^9 input channels": model_spec(in_channels=10**9),
    "U-Net 10^5 wide": model_spec(name="unet", base_width=10**5, num_classes=2),
    "10^30 classes": model_spec(num_classes=10**30),
}


@pytest.mark.parametrize("change", ABSURD_MODELS.values(), ids=list(ABSURD_MODELS))
def test_absurd_model_arguments_are_refused_before_any_real_allocation(
    change: Callable[[dict[str, Any]], None], tmp_path: Path
) -> None:
    path = altered(tmp_path, change)
    before = peak_rss_mb()
    with pytest.raises(WeightsError) as refused:
        load_checkpoint(path)
    message = str(refused.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert "do not fit" in message or "does not build" in message
    assert peak_rss_mb() - before < 200  # the refusal's peak: near the interpreter's own


def nested(depth: int) -> list[Any]:
    node: list[Any] = []
    for _ in range(depth):
        node = [node]
    return node


def deeply_nested(ckpt: dict[str, Any]) -> None:
    ckpt["hyper_parameters"]["data"]["distortion"]["note"] = nested(5000)


def saved_deep(tmp_path: Path) -> Path:
    # Saving so deep a structure needs Python's recursion limit raised; loading it must not.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)
    try:
        return altered(tmp_path, deeply_nested)
    finally:
        sys.setrecursionlimit(limit)


def hparams_set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(ckpt: dict[str, Any]) -> None:
        ckpt["hyper_parameters"][key] = value

    return change


def data_set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(ckpt: dict[str, Any]) -> None:
        ckpt["hyper_parameters"]["data"][key] = value

    return change


MALFORMED = {
    # Ten characters for ten classes: it would have named the digits "a" to "j" without a word.
    "class_names a string": (
        hparams_set("class_names", "abcdefghij"),
        "class_names must be a list of strings, got str",
    ),
    "class_names a number": (
        hparams_set("class_names", 10),
        "class_names must be a list of strings, got int",
    ),
    "class_names a mapping": (
        data_set("class_names", {"zero": 0}),
        "class_names must be a list of strings, got dict",
    ),
    "class_names of lists": (
        hparams_set("class_names", [["zero"]] * 10),
        r"class_names must be a list of strings, got a list holding list \[\'zero\'\]",
    ),
    "a key that is no string": (
        hparams_set(3, "three"),
        r"hyper-parameters: key 3 is a int, where config keys are strings",
    ),
}


@pytest.mark.parametrize(("change", "message"), MALFORMED.values(), ids=list(MALFORMED))
def test_malformed_structure_is_one_line(
    change: Callable[[dict[str, Any]], None], message: str, tmp_path: Path
) -> None:
    with pytest.raises(CheckpointError, match=message) as refused:
        load_checkpoint(altered(tmp_path, change))
    assert "\n" not in str(refused.value)


def test_a_config_nested_5000_deep_is_one_line_not_a_recursion_error(tmp_path: Path) -> None:
    path = saved_deep(tmp_path)
    with pytest.raises(CheckpointError, match=r"nest more than 64 levels deep") as refused:
        load_checkpoint(path)
    assert "\n" not in str(refused.value)


@pytest.fixture
def run_evaluate(synthetic_mnist: Path, tmp_path: Path) -> Iterator[Callable[..., dict[str, Any]]]:
    """evaluate() as evaluate.py would, on ``ckpt`` (default: LeNet's checkpoint)."""

    def run(*overrides: str, ckpt: Path = LENET, output_dir: Path | None = None) -> dict:
        base = [
            f"ckpt_path={ckpt}",
            f"paths.data_dir={synthetic_mnist}",
            "+data.verify=false",
            "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false",
            "logger=none",
        ]
        output_dir = output_dir or tmp_path / "run"
        cfg = compose_config(base + list(overrides), output_dir, config_name="evaluate")
        return evaluate(cfg, output_dir)

    yield run
    GlobalHydra.instance().clear()


@pytest.mark.parametrize(
    ("image_size", "overrides", "message"),
    [
        (10**5, [], r"data.image_size=100000 is over max_image_size=4096"),
        (64, ["max_image_size=32"], r"data.image_size=64 is over max_image_size=32"),
        ("224", [], r"data.image_size must be an integer or null, got '224'"),
    ],
)
def test_an_image_size_from_the_checkpoint_is_capped_before_data_loads(
    image_size: object, overrides: list[str], message: str, run_evaluate, tmp_path: Path
) -> None:
    def claim(ckpt: dict[str, Any]) -> None:
        # Both where the run's config keeps it and where the datamodule's resolved one is.
        ckpt["hyper_parameters"]["data"]["image_size"] = image_size
        ckpt["datamodule_hyper_parameters"]["image_size"] = image_size

    ckpt = altered(tmp_path, claim)
    with pytest.raises(ConfigError, match=message) as refused:
        run_evaluate(*overrides, ckpt=ckpt)
    assert "\n" not in str(refused.value)


def test_the_command_lines_image_size_is_capped_too(run_evaluate) -> None:
    with pytest.raises(ConfigError, match=r"data.image_size=100000 is over max_image_size=4096"):
        run_evaluate("+data.image_size=100000")


def test_predict_refuses_a_decompression_bomb_from_its_header(run_evaluate, tmp_path: Path) -> None:
    bomb = bomb_png(tmp_path / "bomb.png", 50_000, 50_000)
    before = peak_rss_mb()
    with pytest.raises(
        ConfigError, match=rf"predict: cannot read {bomb}: 2,500,000,000 pixels"
    ) as refused:
        run_evaluate(f"predict={bomb}")
    assert "\n" not in str(refused.value)
    assert peak_rss_mb() - before < 200


def test_predicts_pixel_limit_is_configurable(run_evaluate, tmp_path: Path) -> None:
    image = tmp_path / "digit.png"
    Image.new("L", (40, 30)).save(image)
    with pytest.raises(ConfigError, match=r"1,200 pixels is over the limit of 1,000 pixels"):
        run_evaluate(f"predict={image}", "max_image_pixels=1000")
    report = run_evaluate(f"predict={image}", "max_image_pixels=1200")
    assert [row["file"] for row in report["predictions"]] == [str(image)]


# --- outputs ------------------------------------------------------------------------------------


def test_an_onnx_path_taken_by_a_directory_is_one_line(run_evaluate, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    run = tmp_path / "run"
    (run / "model.onnx").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"cannot write the ONNX model to .*model.onnx: a direct"):
        run_evaluate("export=onnx", output_dir=run)


def test_a_report_path_taken_by_a_directory_is_one_line(run_evaluate, tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "predictions.json").mkdir(parents=True)
    image = tmp_path / "digit.png"
    Image.new("L", (28, 28)).save(image)
    with pytest.raises(ConfigError, match=r"cannot write .*predictions.json: Is a directory"):
        run_evaluate(f"predict={image}", output_dir=run)


@pytest.mark.parametrize("where", ["under a file", "read-only"])
def test_a_run_directory_that_cant_be_written_is_refused_before_the_checkpoint_is_read(
    where: str, run_evaluate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if where == "under a file":
        (tmp_path / "file").write_text("")
        run = tmp_path / "file" / "run"
    else:
        # sysfs refuses new files even to root, for whom permission bits mean nothing.
        run = Path("/sys/kernel/zoo-run")
        if not Path("/sys/kernel").is_dir():
            pytest.skip("no sysfs here")

    def not_read(*args: object) -> None:
        raise AssertionError("the checkpoint was read before the run directory was checked")

    monkeypatch.setattr("zoo.evaluation.run.load_checkpoint", not_read)
    with pytest.raises(ConfigError, match=rf"cannot write into the run directory {run}") as refused:
        run_evaluate(output_dir=run)
    assert "\n" not in str(refused.value) and "hydra.run.dir" in str(refused.value)


def test_from_the_command_line_a_read_only_run_directory_is_one_line_and_exit_2() -> None:
    """Hydra writes .hydra/ into the run directory before evaluate() starts: the check is a
    Hydra callback (zoo.core.run_dir), for train.py too."""
    if not Path("/sys/kernel").is_dir():
        pytest.skip("no sysfs here")
    run = "/sys/kernel/zoo-run"
    result = run_script("evaluate.py", f"ckpt_path={LENET}", f"hydra.run.dir={run}", timeout=120)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: cannot write into the run directory {run}: "), line


def test_a_checkpoint_cannot_lift_this_machines_pixel_limit(tmp_path: Path) -> None:
    def lift(ckpt: dict[str, Any]) -> None:
        ckpt["hyper_parameters"]["data"]["max_image_pixels"] = 10**12
        ckpt["datamodule_hyper_parameters"]["max_image_pixels"] = 10**12

    assert "max_image_pixels" not in load_checkpoint(altered(tmp_path, lift)).data


def test_a_checkpoint_without_an_optimizer_evaluates(tmp_path: Path) -> None:
    """Evaluation needs the model and what it read its data with, not what trained it."""

    def without_optimizer(ckpt: dict[str, Any]) -> None:
        arguments = translate_flat_hparams(ckpt["hyper_parameters"])
        ckpt["hyper_parameters"] = {key: arguments[key] for key in ("model", "data", "options")}

    path = altered(tmp_path, without_optimizer)
    network = load_checkpoint(path).model.state_dict()
    stored = torch.load(LENET, weights_only=True)["state_dict"]
    for key, tensor in network.items():
        assert torch.equal(tensor, stored[f"model.{key}"]), key
