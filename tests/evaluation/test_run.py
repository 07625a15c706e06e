"""evaluate.py: any checkpoint evaluated safely — metrics that match training's, hostile or broken
files refused with one line, predictions on image files, FGSM robustness, ONNX export."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import (
    UNET_MNIST_TOY,
    compose_config,
    run_script,
    synthetic_digits,
    synthetic_train_overrides,
)
from zoo.core.errors import ConfigError
from zoo.data.mnist.mnist import MNISTDataModule
from zoo.evaluation.attacks import fgsm, pixel_normalization
from zoo.evaluation.checkpoint import load_checkpoint
from zoo.evaluation.run import evaluate
from zoo.training.run import train


@dataclass
class Trained:
    ckpt: Path  # the best checkpoint, the one training tested
    metrics: dict[str, float]  # training's test metrics
    data_dir: Path


@pytest.fixture(scope="module")
def trained(synthetic_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """LeNet-5 trained for two epochs on synthetic MNIST: most test digits right, not all."""
    run = tmp_path_factory.mktemp("trained")
    overrides = ["trainer.max_epochs=2", "optimizer.lr=0.002", "logger=none"]
    metrics = train(
        compose_config(synthetic_train_overrides(synthetic_mnist) + overrides, run), run
    )
    GlobalHydra.instance().clear()
    [best] = [p for p in (run / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"]
    assert 0.5 < metrics["test/acc"] < 1.0, metrics  # so that there are mistakes to show
    return Trained(best, metrics, synthetic_mnist)


@pytest.fixture
def run_evaluate(trained: Trained, tmp_path: Path) -> Iterator[Callable[..., dict[str, Any]]]:
    """evaluate() the trained checkpoint (or ckpt=...) with overrides, as evaluate.py would,
    writing into output_dir (default tmp_path); returns the report."""

    def run(*overrides: str, ckpt: Path | None = None, output_dir: Path | None = None) -> dict:
        base = [
            f"ckpt_path={ckpt or trained.ckpt}",
            f"paths.data_dir={trained.data_dir}",
            "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false",
        ]
        output_dir = output_dir or tmp_path
        cfg = compose_config(base + list(overrides), output_dir, config_name="evaluate")
        return evaluate(cfg, output_dir)

    yield run
    GlobalHydra.instance().clear()


def test_float64_weights_are_cast_and_evaluate_as_the_float32_ones(
    trained: Trained, run_evaluate, tmp_path: Path
) -> None:
    ckpt = torch.load(trained.ckpt, weights_only=True, map_location="cpu")
    ckpt["state_dict"] = {
        k: v.double() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()
    }
    path = tmp_path / "float64.ckpt"
    torch.save(ckpt, path)
    report = run_evaluate("logger=none", ckpt=path, output_dir=tmp_path / "run")
    assert report["acc"] == trained.metrics["test/acc"]


def test_metrics_equal_the_training_runs_test_metrics(
    trained: Trained, run_evaluate, tmp_path: Path
) -> None:
    """One path: evaluate.py runs the task module's own test loop on the checkpoint training
    tested, so its numbers are training's to the last bit, not merely close."""
    report = run_evaluate()

    assert report["samples"] == 200
    assert report["acc"] == trained.metrics["test/acc"]
    assert report["acc_top5"] == trained.metrics["test/acc_top5"]
    assert report["loss"] == trained.metrics["test/loss"]
    assert report["images_per_sec"] > 0
    matrix = torch.tensor(report["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 200
    assert matrix.trace() / 200 == pytest.approx(report["acc"])
    for i, (name, row) in enumerate(report["per_class"].items()):
        assert name == str(i)
        assert row["samples"] == matrix[i].sum()
        assert row["acc"] == pytest.approx(float(matrix[i, i] / matrix[i].sum()))
    assert json.loads((tmp_path / "metrics.json").read_text()) == report

    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert {"test/confusion_matrix", "test/worst_misclassified"} <= set(events.Tags()["images"])
    assert {"test/acc", "test/loss", "test/acc_top5"} <= set(events.Tags()["scalars"])
    assert (tmp_path / "worst_misclassified.png").is_file()


@pytest.mark.parametrize(("split", "samples"), [("test", 200), ("val", 100), ("train", 540)])
def test_each_split_is_evaluated_whole(
    split: str, samples: int, run_evaluate, tmp_path: Path
) -> None:
    report = run_evaluate(f"split={split}", "logger=none")
    assert report["split"] == split
    assert report["samples"] == samples == sum(r["samples"] for r in report["per_class"].values())


@pytest.mark.parametrize(
    ("overrides", "tolerance"),
    [
        (["data.eval_batch_size=7"], 1e-6),
        (["trainer.precision=bf16-mixed"], 0.02),
        # Another data config: the model's training image size (32) still applies.
        (["data=mnist", "data.verify=false"], 1e-6),
    ],
)
def test_batch_size_precision_and_data_can_be_overridden(
    overrides: list[str], tolerance: float, trained: Trained, run_evaluate, tmp_path: Path
) -> None:
    report = run_evaluate(*overrides, "logger=none")
    assert report["samples"] == 200
    assert report["acc"] == pytest.approx(trained.metrics["test/acc"], abs=tolerance)
    assert report["image_size"] == 32


# --- hostile and broken checkpoints ---------------------------------------------------------


class CodePayload:
    """Pickles as a call to exec: whatever unpickles it runs the code."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return exec, (self.code,)


def touch_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


def bad_checkpoint(case: str, good: Path, tmp_path: Path, marker: Path) -> Path:
    """A copy of the good checkpoint, broken in the way ``case`` names."""
    path = tmp_path / f"{case}.ckpt"
    raw = good.read_bytes()
    if case == "missing":
        return path
    if case in ("empty", "truncated", "not a checkpoint"):
        content = {"empty": b"", "truncated": raw[: len(raw) // 2]}.get(case, b"hello world\n")
        path.write_bytes(content)
        return path
    ckpt = torch.load(good, weights_only=True, map_location="cpu")
    hparams, weights = ckpt["hyper_parameters"], ckpt["state_dict"]
    if case == "pickled code":
        hparams["note"] = CodePayload(touch_code(marker))
    elif case == "_target_":
        # Hydra's instantiate would create the marker file (it blocklists exec, not open).
        hparams["model"] = {"_target_": "builtins.open", "_args_": [str(marker), "w"]}
    elif case == "class path":
        hparams["model"] = {"class_path": "torch.nn.Linear", "init_args": {"in_features": 1}}
    elif case == "unknown model":
        hparams["model"]["name"] = "os.system"
    elif case == "wrong shapes":
        weights["model.classifier.4.weight"] = torch.zeros(11, 84)
    elif case == "missing weights":
        del weights["model.features.0.bias"]
    elif case == "nan weights":
        weights["model.features.3.weight"][0, 0, 0, 0] = float("nan")
    elif case == "infinite weights":
        weights["model.classifier.0.bias"][3] = float("inf")
    elif case == "integer weights":
        weights["model.classifier.2.weight"] = weights["model.classifier.2.weight"].long()
    elif case == "complex weights":
        weights["model.features.0.bias"] = weights["model.features.0.bias"].to(torch.complex64)
    elif case == "a billion classes":
        # 0.3 MB of LeNet's weights claiming a head of 84 x 10^9 floats (336 GB): refused on
        # the meta device, or this test would run out of memory.
        hparams["model"]["num_classes"] = 10**9
    torch.save(ckpt, path)
    return path


BROKEN = {
    "pickled code": r"refusing to load .*pickled code \(it would call exec\).*nothing .* was run",
    "_target_": r"holds '_target_': 'builtins.open'.*never imports a class path",
    "class path": r"holds 'class_path': 'torch.nn.Linear'",
    "unknown model": r"model 'os.system' is not a zoo model; available: alexnet, googlenet",
    "wrong shapes": r"weights do not fit LeNet5: size mismatch for classifier.4.weight",
    "missing weights": r"weights do not fit LeNet5: Missing key.*features.0.bias",
    "nan weights": r"weight 'features.3.weight' holds NaN or infinite values",
    "infinite weights": r"weight 'classifier.0.bias' holds NaN or infinite values",
    "integer weights": r"weight 'classifier.2.weight' is torch.int64, where LeNet5 holds torch.fl",
    "complex weights": r"weight 'features.0.bias' is torch.complex64",
    "a billion classes": r"weights do not fit LeNet5: size mismatch for classifier.4.weight",
    "truncated": r"not a readable PyTorch checkpoint \(truncated or corrupt\?\)",
    "not a checkpoint": r"not a readable PyTorch checkpoint",
    "empty": r"checkpoint .*empty.ckpt is empty",
    "missing": r"checkpoint .*missing.ckpt does not exist",
}


@pytest.mark.parametrize(("case", "message"), BROKEN.items(), ids=list(BROKEN))
def test_hostile_or_broken_checkpoints_fail_with_one_line_and_run_nothing(
    case: str,
    message: str,
    trained: Trained,
    run_evaluate,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    marker = tmp_path / "code_ran"
    ckpt = bad_checkpoint(case, trained.ckpt, tmp_path, marker)

    def no_data(*args: object, **kwargs: object) -> None:
        raise AssertionError("data was loaded for a checkpoint that should have been refused")

    monkeypatch.setattr("zoo.data.mnist.mnist.ensure_mnist", no_data)
    with pytest.raises(ConfigError, match=message) as refused:
        run_evaluate(ckpt=ckpt, output_dir=tmp_path / "run")
    assert "\n" not in str(refused.value)
    assert not marker.exists()


def test_a_pickle_payload_on_the_command_line_is_one_line_and_exit_2(
    trained: Trained, tmp_path: Path
) -> None:
    marker = tmp_path / "code_ran"
    ckpt = bad_checkpoint("pickled code", trained.ckpt, tmp_path, marker)
    result = run_script(
        "evaluate.py", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'run'}", timeout=120
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: refusing to load {ckpt}: it holds pickled code"), line
    assert not marker.exists()


def test_command_line_evaluation_writes_its_report_in_a_run_directory(
    trained: Trained, tmp_path: Path
) -> None:
    result = run_script(
        "evaluate.py",
        f"ckpt_path={trained.ckpt}",
        f"paths.data_dir={trained.data_dir}",
        f"paths.log_dir={tmp_path}",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    [metrics_file] = (tmp_path / "evaluate" / "runs").glob("*/metrics.json")
    assert json.loads(metrics_file.read_text())["acc"] == pytest.approx(
        trained.metrics["test/acc"], abs=1e-3
    )
    assert "mnist, test split" in result.stdout and "confusion_matrix.png" in {
        p.name for p in metrics_file.parent.iterdir()
    }


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("split=holdout", "split must be one of test, val, train, got 'holdout'"),
        ("data.eval_batch_size=0", "data.eval_batch_size must be an integer >= 1, got 0"),
        ("top_k=0", "top_k must be an integer >= 1, got 0"),
        ("export=tflite", "export must be one of onnx, got 'tflite'"),
        ("attack.eps=[-0.1]", r"attack.eps must be a list of numbers in \[0, 1\]"),
        ("data.image_size=28", "data.image_size=28: .*LeNet5: image_size must be exactly 32"),
        ("trainer.devices=2", "evaluate.py runs on one device"),
    ],
)
def test_impossible_options_are_one_clear_error(
    override: str, message: str, run_evaluate, tmp_path: Path
) -> None:
    extra = ["attack=fgsm"] if override.startswith("attack") else []
    extra += ["data=mnist"] if override.startswith("data.image_size") else []
    with pytest.raises(ConfigError, match=message):
        run_evaluate(*extra, override, "logger=none")


# --- predictions on image files -------------------------------------------------------------


def test_predictions_on_image_files_match_the_training_pipeline(
    trained: Trained, run_evaluate, tmp_path: Path
) -> None:
    digits, _ = synthetic_digits(4, seed=7)
    folder = tmp_path / "images"
    folder.mkdir()
    for i, digit in enumerate(digits):
        image = Image.fromarray(digit)
        image.save(folder / f"{i}_28.png")
        # Any size and format: a larger RGB PNG and a JPEG of the same digit.
        large = image.resize((84, 84), Image.Resampling.NEAREST)
        large.convert("RGB").save(folder / f"{i}_84_rgb.png")
        large.save(folder / f"{i}_84.jpg", quality=95)
    (folder / "notes.txt").write_text("not an image, and not a PNG or JPEG by name: skipped")

    report = run_evaluate(f"predict={folder}", "top_k=3", output_dir=tmp_path / "run")
    rows = {Path(row["file"]).name: row["top_k"] for row in report["predictions"]}
    assert len(rows) == 12
    assert json.loads((tmp_path / "run" / "predictions.json").read_text()) == report

    # A 28x28 PNG is exactly a dataset digit: the same probabilities as the data pipeline gives.
    model = load_checkpoint(trained.ckpt).model
    with torch.inference_mode():
        batch = MNISTDataModule(image_size=32).transform(torch.from_numpy(digits)[:, None])
        expected = model(batch).softmax(dim=1)
    for i in range(len(digits)):
        top = rows[f"{i}_28.png"]
        assert [c["index"] for c in top] == expected[i].topk(3).indices.tolist()
        assert [c["probability"] for c in top] == pytest.approx(expected[i].topk(3).values)
        assert top[0]["probability"] >= top[1]["probability"] >= top[2]["probability"]
        # Resized back to 28x28 on the way in, the other files agree on the class.
        assert rows[f"{i}_84_rgb.png"][0]["class"] == top[0]["class"]
        assert rows[f"{i}_84.jpg"][0]["class"] == top[0]["class"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"\x89PNG\r\n\x1a\n garbage",
            r"cannot read .*broken.png: not a readable PNG, JPEG, WebP or GIF",
        ),
        (None, "no PNG, JPEG or WebP files in"),
    ],
)
def test_unreadable_image_files_are_one_clear_error(
    content: bytes | None, message: str, run_evaluate, tmp_path: Path
) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    if content is not None:
        (folder / "broken.png").write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        run_evaluate(f"predict={folder}", output_dir=tmp_path / "run")


# --- FGSM -----------------------------------------------------------------------------------


def test_fgsm_at_zero_is_clean_accuracy_and_accuracy_falls_as_eps_grows(
    run_evaluate, tmp_path: Path
) -> None:
    report = run_evaluate("attack=fgsm", "attack.eps=[0,0.1,0.3]")
    accuracy = report["fgsm"]["acc"]
    assert report["fgsm"]["eps"] == [0.0, 0.1, 0.3]
    assert accuracy[0] == report["acc"]
    assert accuracy[0] > accuracy[1] > accuracy[2]
    assert (tmp_path / "fgsm_examples.png").is_file()
    images = EventAccumulator(str(tmp_path / "tensorboard")).Reload().Tags()["images"]
    assert {"fgsm/fgsm_examples", "fgsm/fgsm_accuracy"} <= set(images)


def test_fgsm_steps_by_eps_in_pixel_space_and_stays_in_0_1(trained: Trained) -> None:
    model = load_checkpoint(trained.ckpt).model
    datamodule = MNISTDataModule(image_size=32)
    digits, labels = synthetic_digits(16, seed=3)
    images = datamodule.transform(torch.from_numpy(digits)[:, None])
    mean, std = pixel_normalization(datamodule, channels=1)
    targets = torch.from_numpy(labels).long()
    clean, small, large = fgsm(model, images, targets, [0, 0.1, 0.5], mean, std)

    pixels = images * std + mean
    assert torch.equal(clean, images)
    for adversarial, eps in ((small, 0.1), (large, 0.5)):
        adv_pixels = adversarial * std + mean
        assert adv_pixels.min() >= -1e-6 and adv_pixels.max() <= 1 + 1e-6
        assert (adv_pixels - pixels).abs().max() == pytest.approx(eps, abs=1e-5)


# --- ONNX -----------------------------------------------------------------------------------


def test_onnx_export_matches_pytorch(trained: Trained, run_evaluate, tmp_path: Path) -> None:
    import onnxruntime

    report = run_evaluate("export=onnx")
    path = Path(report["export"]["path"])
    assert path == tmp_path / "model.onnx" and report["export"]["max_abs_diff"] < 1e-4

    model = load_checkpoint(trained.ckpt).model
    images = torch.randn(7, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_logits,) = session.run(None, {"images": images.numpy()})
    with torch.inference_mode():
        np.testing.assert_allclose(onnx_logits, model(images).numpy(), rtol=1e-4, atol=1e-5)


def test_onnx_export_without_onnxruntime_says_what_to_install(
    run_evaluate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec

    def without_onnxruntime(name: str, *args: object) -> object:
        return None if name == "onnxruntime" else find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_onnxruntime)
    with pytest.raises(ConfigError, match=r"needs onnxruntime.*pip install -e '\.\[onnx\]'"):
        run_evaluate("export=onnx")


# --- devices --------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_and_cpu_checkpoints_evaluate_on_either_device(
    trained: Trained, run_evaluate, tmp_path: Path
) -> None:
    ckpt = torch.load(trained.ckpt, weights_only=True, map_location="cuda")
    gpu_ckpt = tmp_path / "gpu.ckpt"
    torch.save(ckpt, gpu_ckpt)
    on_cpu = run_evaluate("logger=none", ckpt=gpu_ckpt, output_dir=tmp_path / "cpu")
    on_gpu = run_evaluate(
        "logger=none",
        "trainer.accelerator=gpu",
        "trainer.precision=bf16-mixed",
        output_dir=tmp_path / "gpu",
    )
    assert on_cpu["acc"] == pytest.approx(trained.metrics["test/acc"], abs=1e-3)
    assert on_gpu["acc"] == pytest.approx(trained.metrics["test/acc"], abs=0.02)


# --- segmentation ---------------------------------------------------------------------------


def test_segmentation_metrics_match_the_training_runs(
    train_cfg, run_evaluate, tmp_path: Path
) -> None:
    """U-Net at toy sizes (as in test_segmentation.py): mIoU, pixel accuracy and Dice as training
    tested them, plus per-class IoU/Dice and the pixel confusion matrix."""
    run = tmp_path / "train"
    cfg = train_cfg(
        *UNET_MNIST_TOY,
        "trainer.max_epochs=1",
        "logger=none",
        output_dir=run,
    )
    metrics = train(cfg, run)
    [best] = [p for p in (run / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"]

    report = run_evaluate(ckpt=best, output_dir=tmp_path / "eval")
    assert report["task"] == "segmentation" and report["samples"] == 8
    # The training objective (CE + Dice here), as the test step logged it: the same loop.
    for key in ("loss", "miou", "pixel_acc", "dice"):
        assert report[key] == metrics[f"test/{key}"], key
    for name, row in report["per_class"].items():
        assert row["dice"] == metrics.get(f"test/dice_{name}"), name
    assert list(report["per_class"]) == ["background", *map(str, range(10))]
    matrix = torch.tensor(report["confusion_matrix"])
    assert matrix.sum() == 8 * 32 * 32
    assert matrix.trace() / matrix.sum() == pytest.approx(report["pixel_acc"])
    for i, row in enumerate(report["per_class"].values()):
        union = matrix[i].sum() + matrix[:, i].sum() - matrix[i, i]
        if union == 0:  # neither in the truth nor predicted: no IoU, no Dice
            assert row["iou"] is None and row["dice"] is None
        else:
            assert row["iou"] == pytest.approx(float(matrix[i, i] / union))
            assert row["dice"] == pytest.approx(float(2 * matrix[i, i] / (union + matrix[i, i])))
    assert {"confusion_matrix.png", "worst_segmented.png"} <= {
        p.name for p in (tmp_path / "eval").iterdir()
    }
    with pytest.raises(ConfigError, match="attack and predict are for classifiers"):
        run_evaluate("attack=fgsm", ckpt=best, output_dir=tmp_path / "attack")


# --- checkpoints written before the package layout changed ------------------------------------

LEGACY = Path(__file__).parent / "legacy"
# What train.py's test step logged when each checkpoint was written (1 epoch on the synthetic
# MNIST of conftest, commit 006050c, before zoo/ was split into subpackages).
LEGACY_TEST_METRICS = {
    "lenet": {"acc": 0.824999988079071, "loss": 1.8268487453460693},
    "unet": {
        "loss": 3.4050865173339844,
        "miou": 0.022240258753299713,
        "pixel_acc": 0.16552734375,
        "dice": 0.03838173672556877,
    },
}


@pytest.mark.parametrize("name", list(LEGACY_TEST_METRICS))
def test_checkpoints_from_before_the_layout_change_evaluate_as_they_tested(
    name: str, run_evaluate, tmp_path: Path
) -> None:
    overrides = ["logger=none"]
    if name == "unet":
        overrides.append("worst_images=0")
    report = run_evaluate(*overrides, ckpt=LEGACY / f"{name}_before_layout.ckpt")
    for key, value in LEGACY_TEST_METRICS[name].items():
        assert report[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
