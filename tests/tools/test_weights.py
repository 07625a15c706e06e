"""python -m zoo.tools.weights: one listing of every set of weights the zoo knows, the docs'
table generated from it, and the making of the zoo's own sets: export from a training checkpoint,
cards measured by evaluate.py on the shipped file. The slow tests check the shipped files on the
real MNIST test set."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from hydra.core.global_hydra import GlobalHydra

from tests.conftest import REPO_ROOT, run_for_metrics
from tests.trained import Shipper, find
from zoo import data, models
from zoo.core.config import compose_config
from zoo.core.errors import ConfigError
from zoo.evaluation.run import evaluate
from zoo.models import trained_weights
from zoo.models import weights as model_weights
from zoo.models.trained_weights import FGSM, PGD20, PGD100X10, WEIGHT_SETS
from zoo.tasks.build import build_task
from zoo.tools import weights as tool


@pytest.fixture
def ship(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Shipper:
    return Shipper(tmp_path / "trained", monkeypatch)


# --- the listing ---------------------------------------------------------------------------------


def test_the_listing_holds_torchvisions_sets_and_the_zoos_own(
    ship: Shipper, capsys: pytest.CaptureFixture[str]
) -> None:
    ship("MNIST_V1")
    listed = tool.rows()
    published = model_weights.published()
    assert [row.source for row in listed] == ["torchvision"] * len(published) + ["zoo"] * 3
    by_name = {(row.model, row.weights): row for row in listed}
    resnet50 = by_name[("resnet50", "IMAGENET1K_V2 = DEFAULT")]
    assert (resnet50.params, resnet50.figure) == (25_557_032, "acc@1 80.858")
    lenet = by_name[("lenet", "MNIST_V1 = DEFAULT")]
    card = trained_weights.card_of(find("MNIST_V1"))
    assert (lenet.params, lenet.file_mb, lenet.figure) == (61_706, card._file_size, "not measured")
    robust = by_name[("lenet", "MNIST_ROBUST_V1")]  # not shipped here
    assert robust.cells()[2:5] == ["-", "-", "-"]
    assert tool.main([]) == 0
    shown = capsys.readouterr().out
    assert "MNIST_ROBUST_V1" in shown and "IMAGENET1K_FEATURES" not in shown


def test_the_docs_table_is_the_generated_one() -> None:
    text = (REPO_ROOT / "docs" / "models.md").read_text()
    start, stop = tool.docs_table(text, REPO_ROOT / "docs" / "models.md")
    assert text[start:stop].strip() == tool.markdown_table(tool.rows()), (
        "regenerate it: python -m zoo.tools.weights docs"
    )


# --- export --------------------------------------------------------------------------------------


def lightning_checkpoint(path: Path, seed: int) -> dict[str, torch.Tensor]:
    """A checkpoint as train.py experiment=lenet_mnist_robust writes it, with an average
    (callbacks=ema: ``state_dict``) beside the raw weights; the average's network tensors."""
    torch.manual_seed(seed)
    spec = data.parse({"name": "mnist", "image_size": 32}).to_dict()
    module = build_task(
        {"name": "lenet", "num_classes": 10, "in_channels": 1, "modern": True},
        {"name": "adam", "lr": 1e-3},
        None,
        spec,
    )
    raw = {key: value + 1 for key, value in module.state_dict().items()}
    torch.save(
        {
            "pytorch-lightning_version": pl.__version__,
            "state_dict": module.state_dict(),
            "current_model_state": raw,
            "hyper_parameters": dict(module.hparams),
            "datamodule_hyper_parameters": {"image_size": 32},
        },
        path,
    )
    return {k.removeprefix("model."): v for k, v in module.state_dict().items()}


def test_export_writes_what_evaluate_evaluates_and_a_card(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "trained"
    monkeypatch.setattr(trained_weights, "TRAINED_DIR", directory)
    averaged = lightning_checkpoint(tmp_path / "best.ckpt", seed=0)
    card = tool.export(tmp_path / "best.ckpt", "MNIST_ROBUST_V1", "3bfce55")
    assert card.arguments == {"num_classes": 10, "in_channels": 1, "modern": True}
    assert card.data["name"] == "mnist" and "data_dir" not in card.data
    assert card.preprocessing == {
        "image_size": 32,
        "resize": "pad",
        "mean": [0.1307],
        "std": [0.3081],
    }
    assert (card.num_params, card.min_size, card.categories[:2]) == (61_706, [32, 32], ["0", "1"])
    assert card._ops == pytest.approx(423_038 / 1e9)
    assert card.recipe.command == "python train.py experiment=lenet_mnist_robust"
    assert card._metrics == {}
    network = models.build("lenet", weights="MNIST_ROBUST_V1")
    for key, tensor in averaged.items():
        assert torch.equal(network.state_dict()[key], tensor), key
    first = directory / card.file
    lightning_checkpoint(tmp_path / "best.ckpt", seed=1)
    again = tool.export(tmp_path / "best.ckpt", "MNIST_ROBUST_V1", "3bfce55")
    assert again.file != card.file and not first.exists()
    assert sorted(p.name for p in directory.iterdir()) == sorted([again.file, "cards.json"])


def test_export_takes_only_a_set_of_the_checkpoints_model(tmp_path: Path) -> None:
    lightning_checkpoint(tmp_path / "best.ckpt", seed=0)
    with pytest.raises(ConfigError) as refused:
        tool.export(tmp_path / "best.ckpt", "MNIST_SEGMENTATION_V1", "3bfce55", directory=tmp_path)
    assert str(refused.value) == (
        "MNIST_SEGMENTATION_V1 is not one of the zoo's sets of lenet: MNIST_V1, MNIST_ROBUST_V1"
    )


# --- measuring a card ----------------------------------------------------------------------------


def test_a_cards_figures_are_read_from_evaluates_report() -> None:
    report = {
        "acc": 0.9912,
        "acc_top5": 0.9999,
        "loss": 0.03,
        "pgd": {"eps": [0.1, 0.3], "acc": [0.5, 0.0123], "steps": 100},
    }
    assert tool.figures(report, PGD100X10) == {
        "acc@1": 99.12,
        "acc@5": 99.99,
        "pgd100x10@eps0.1": 50.0,
        "pgd100x10@eps0.3": 1.23,
    }
    assert tool.evaluate_command(find("MNIST_ROBUST_V1"), PGD100X10) == (
        "OMP_NUM_THREADS=1 python evaluate.py model=lenet model.weights=MNIST_ROBUST_V1 "
        "trainer=cpu logger=none worst_images=0 attack=pgd attack.eps=[0.1,0.3] "
        "attack.steps=100 attack.restarts=10"
    )


def test_a_card_is_measured_by_evaluate_on_the_shipped_file(
    ship: Shipper, synthetic_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ship("MNIST_V1")
    reports: list[dict[str, Any]] = []

    def evaluate_here(arguments: Sequence[str], log_dir: Path) -> dict[str, Any]:
        # evaluate.py's code in this process, which sees the stand-in files; 50 digits.
        on_synthetic = [
            f"paths.data_dir={synthetic_mnist}",
            "+data.verify=false",
            "data.eval_batch_size=50",
            "trainer.limit_test_batches=1",
        ]
        cfg = compose_config([*arguments, *on_synthetic], log_dir, config_name="evaluate")
        reports.append(evaluate(cfg, log_dir))
        GlobalHydra.instance().clear()
        return json.loads((log_dir / "metrics.json").read_text())

    monkeypatch.setattr(tool, "run_evaluate", evaluate_here)
    card = tool.write_card_metrics("MNIST_V1", tmp_path / "runs")
    fgsm, pgd = reports
    assert fgsm["samples"] == 50 and fgsm["pretrained"]["weights"] == "MNIST_V1"
    assert card._metrics == {
        "mnist": {
            "acc@1": round(100 * fgsm["acc"], 3),
            "acc@5": round(100 * fgsm["acc_top5"], 3),
            "fgsm@eps0.1": round(100 * fgsm["fgsm"]["acc"][0], 3),
            "fgsm@eps0.3": round(100 * fgsm["fgsm"]["acc"][1], 3),
            "pgd20@eps0.1": round(100 * pgd["pgd"]["acc"][0], 3),
            "pgd20@eps0.3": round(100 * pgd["pgd"]["acc"][1], 3),
        }
    }
    assert card._evaluation == [tool.evaluate_command(find("MNIST_V1"), m) for m in (FGSM, PGD20)]
    assert trained_weights.card_of(find("MNIST_V1"))._metrics == card._metrics


# --- the shipped files, on the real MNIST --------------------------------------------------------

MEASURED = [
    pytest.param(weight_set.name, measurement, id=f"{weight_set.name}-{measurement.label}")
    for weight_set in WEIGHT_SETS
    for measurement in weight_set.measurements
]


def real_mnist() -> Path:
    path = REPO_ROOT / "data" / "MNIST" / "raw"
    if not (path / "t10k-images-idx3-ubyte").is_file():
        pytest.skip(f"the real MNIST is not in {path}")
    return path


@pytest.mark.slow  # PGD-100 with 10 restarts on 10,000 digits takes most of an hour on a CPU
@pytest.mark.parametrize(("name", "measurement"), MEASURED)
def test_each_shipped_file_gives_every_figure_on_its_card(
    name: str, measurement: trained_weights.Measurement, tmp_path: Path
) -> None:
    weight_set = find(name)
    card = trained_weights.read_cards().get(weight_set.key)
    if card is None or not card._metrics:
        pytest.skip(f"{weight_set.description} is not shipped and measured yet")
    real_mnist()
    report = tool.run_evaluate(tool.evaluate_arguments(weight_set, measurement), tmp_path)
    measured = tool.figures(report, measurement)
    on_card = card._metrics[weight_set.dataset]
    assert measured == {key: on_card[key] for key in measured}


@pytest.mark.slow  # the default recipe, 15 epochs of LeNet-5 on a CPU
def test_the_default_recipe_reproduces_its_cards_accuracy(tmp_path: Path) -> None:
    card = trained_weights.read_cards().get(find("MNIST_V1").key)
    if card is None or not card._metrics:
        pytest.skip("lenet MNIST_V1 is not shipped and measured yet")
    real_mnist()
    _, metrics = run_for_metrics("train.py", tmp_path, "trainer=cpu", timeout=3600)
    assert abs(100 * metrics["test/acc"] - card._metrics["mnist"]["acc@1"]) <= 0.2
