"""evaluate.py attack=pgd|lbfgs|universal: DeepFool and L-BFGS checked against the closed-form
minimal perturbation of an affine classifier, |w.x + b| / ||w||; the reports on a trained LeNet;
impossible settings refused with one line."""

from __future__ import annotations

import csv
import dataclasses
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from torch import nn

from tests.conftest import UNET_MNIST_TOY, compose_config, run_script, synthetic_train_overrides
from tests.tasks.test_adversarial import (
    MEAN,
    STD,
    affine_classifier,
    interior_pixels,
    normalised,
    pixel_weights,
)
from zoo.core.config import CONFIG_DIR, to_plain
from zoo.core.errors import ConfigError
from zoo.evaluation.attacks import (
    ATTACK_CONFIGS,
    PGDConfig,
    PGDRobustness,
    attack_tables,
    check_attack,
    deepfool,
    minimal_targeted,
    universal_perturbation,
)
from zoo.evaluation.attacks.sweep import accuracy_figure, examples_figure
from zoo.evaluation.attacks.universal import load_perturbation
from zoo.evaluation.run import evaluate
from zoo.tasks.adversarial import AdversarialOptions, PGDSettings, project
from zoo.tasks.build import build_task
from zoo.training.run import train


def boundary_distances(model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Each image's L2 distance to the nearest decision boundary of the affine ``model``:
    min over k of |f_k - f_l| / ||w_k - w_l||, l the predicted class."""
    weight = pixel_weights(model)
    logits = model(normalised(pixels))
    predicted = logits.argmax(dim=1)
    gaps = (logits - logits.gather(1, predicted[:, None])).abs()
    norms = (weight[None] - weight[predicted][:, None]).norm(dim=2)
    gaps[torch.arange(len(pixels)), predicted] = float("inf")
    return (gaps / norms.clamp(min=1e-12)).min(dim=1).values


def test_deepfool_finds_the_nearest_boundary_of_an_affine_classifier() -> None:
    model = affine_classifier(10)
    pixels = interior_pixels(16)
    with torch.no_grad():
        r = deepfool(model, pixels, MEAN, STD, overshoot=0.0)
    expected = boundary_distances(model, pixels).detach()
    # One exact step, plus DeepFool's 1e-4 past the boundary.
    assert torch.allclose(r.flatten(1).norm(dim=1), expected, atol=3e-4)
    fooled = model(normalised(pixels + r)).argmax(dim=1) != model(normalised(pixels)).argmax(dim=1)
    assert fooled.all()


@pytest.mark.filterwarnings("error::UserWarning")  # torch's about a scalar taken with its grad
def test_lbfgs_targets_the_other_class_of_an_affine_classifier_minimally() -> None:
    model = affine_classifier(2)
    pixels = interior_pixels(4)
    with torch.no_grad():
        other = 1 - model(normalised(pixels)).argmax(dim=1)
    adversarial, success = minimal_targeted(model, pixels, other, MEAN, STD, search_steps=12)
    norms = (adversarial - pixels).flatten(1).norm(dim=1)
    distance = boundary_distances(model, pixels).detach()
    assert success.all()
    # Never shorter than the closed form (no shorter r crosses), and close to it.
    assert (norms >= distance * (1 - 1e-4)).all() and (norms <= distance * 1.1).all()


def test_a_universal_perturbation_stays_in_its_ball_and_fools_an_affine_classifier() -> None:
    model = affine_classifier(10)
    images = normalised(interior_pixels(64))
    for norm, eps in (("linf", 0.1), ("l2", 1.0)):
        v, log = universal_perturbation(
            model, iter([images[:32], images[32:]]), MEAN, STD, eps, norm, images=40, max_passes=2
        )
        size = v.abs().max() if norm == "linf" else v.norm()
        assert size <= eps + 1e-5
        assert log["train_images"] == 40 and log["train_fooling_rate"][-1] > 0.3


# --- PGD's restarts, on a classifier whose random start decides ----------------------------


class TwoBasins(nn.Module):
    """Images of one pixel p, clean at 0.5 and of class 0; the wrong class's logit margin is
    f(p) = 10 (p - 0.5)^2 + 2 (p - 0.5) - 0.8, lowest at p = 0.4. In the L-infinity ball of
    radius 0.3, PGD from a start below 0.4 climbs down to 0.2, where f = -0.5 (still class 0);
    from above 0.4 it climbs up to 0.8, where f = 0.7 (fooled). One random start fools an
    image with probability 2/3, and only a fresh start can fool one that it missed."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        p = images.flatten(1)[:, 0] - 0.5
        margin = 10 * p**2 + 2 * p - 0.8
        return torch.stack([torch.zeros_like(margin), margin], dim=1)


def robust_after_pgd(restarts: int, batches: int = 3, seed: int = 0) -> torch.Tensor:
    """Which of ``batches`` batches of 64 clean images survive PGD-10 at eps 0.3 with
    ``restarts`` restarts, the batches attacked in turn as the test loop hands them over."""
    model = TwoBasins()
    report = PGDRobustness(
        [0.3], torch.zeros(1), torch.ones(1), steps=10, restarts=restarts, seed=seed
    )
    report.reset(torch.device("cpu"))
    images, targets = torch.full((64, 1, 1, 1), 0.5), torch.zeros(64, dtype=torch.long)
    robust = []
    for _ in range(batches):
        [adversarial] = report.perturb(model, images, targets)
        robust.append(model(adversarial).argmax(dim=1) == targets)
    return torch.cat(robust)


def test_a_second_restart_fools_images_that_the_first_start_missed() -> None:
    once, twice = robust_after_pgd(restarts=1), robust_after_pgd(restarts=2)
    assert 0.2 < once.float().mean() < 0.5  # about 1/3: the starts below 0.4
    assert twice.sum() < once.sum() and not (twice & ~once).any()


@pytest.mark.parametrize("seed", [0, 1])
def test_an_image_counts_as_robust_only_if_it_survives_every_restart(seed: int) -> None:
    """On every batch, the first restart draws what restarts=1 draws with the same seed: more
    restarts never report an image robust that one restart fooled."""
    once = robust_after_pgd(restarts=1, seed=seed)
    for restarts in (3, 10):
        more = robust_after_pgd(restarts=restarts, seed=seed)
        assert not (more & ~once).any()
    assert robust_after_pgd(restarts=10, seed=seed).sum() < once.sum()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"restarts": 0}, "attack.restarts must be an integer >= 1, got 0"),
        (
            {"restarts": 101},
            r"attack.restarts must be at most 100 \(each is a whole PGD run on the images not "
            r"yet fooled\), got 101",
        ),
        (
            {"restarts": 2, "random_start": False},
            "attack.restarts=2 needs attack.random_start=true: without a random start every "
            "restart is the same attack",
        ),
    ],
)
def test_restarts_are_bounded_and_need_a_random_start(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        check_attack({"name": "pgd", **settings})
    assert check_attack({"name": "pgd", "restarts": 100}).restarts == 100


# --- the reports, on a trained LeNet --------------------------------------------------------


@pytest.fixture(scope="module")
def trained(synthetic_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The best checkpoint of LeNet-5 trained for two epochs on synthetic MNIST."""
    run = tmp_path_factory.mktemp("trained")
    overrides = ["trainer.max_epochs=2", "optimizer.lr=0.002", "logger=none", "test=false"]
    train(compose_config(synthetic_train_overrides(synthetic_mnist) + overrides, run), run)
    GlobalHydra.instance().clear()
    [best] = [p for p in (run / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"]
    return best


@pytest.fixture
def run_evaluate(
    trained: Path, synthetic_mnist: Path, tmp_path: Path
) -> Iterator[Callable[..., dict[str, Any]]]:
    def run(*overrides: str, ckpt: Path | None = None, output_dir: Path | None = None) -> dict:
        base = [
            f"ckpt_path={ckpt or trained}",
            f"paths.data_dir={synthetic_mnist}",
            "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false",
            "logger=none",
        ]
        output_dir = output_dir or tmp_path
        cfg = compose_config(base + list(overrides), output_dir, config_name="evaluate")
        return evaluate(cfg, output_dir)

    yield run
    GlobalHydra.instance().clear()


def test_pgd_is_at_least_as_strong_as_fgsm(run_evaluate, tmp_path: Path) -> None:
    eps = "attack.eps=[0,0.1,0.3]"
    fgsm = run_evaluate("attack=fgsm", eps, output_dir=tmp_path / "fgsm")["fgsm"]["acc"]
    report = run_evaluate("attack=pgd", eps, "attack.steps=5", output_dir=tmp_path / "pgd")
    pgd = report["pgd"]["acc"]
    assert pgd[0] == report["acc"]
    assert all(p <= f + 0.01 for p, f in zip(pgd, fgsm, strict=True)) and pgd[2] < pgd[1]
    assert {"pgd_examples.png", "pgd_accuracy.png"} <= {
        p.name for p in (tmp_path / "pgd").iterdir()
    }


def test_pgd_with_restarts_reports_at_most_one_starts_accuracy_and_its_timing_says_so(
    run_evaluate, tmp_path: Path
) -> None:
    settings = ("attack=pgd", "attack.eps=[0,0.1,0.2]", "attack.steps=3")
    once = run_evaluate(*settings, output_dir=tmp_path / "once")
    thrice = run_evaluate(*settings, "attack.restarts=3", output_dir=tmp_path / "thrice")
    assert thrice["pgd"]["restarts"] == 3 and once["pgd"]["restarts"] == 1
    assert all(t <= o for t, o in zip(thrice["pgd"]["acc"], once["pgd"]["acc"], strict=True))
    # The loop's throughput includes the attack, and its name says so.
    assert thrice["images_per_sec_attack_included"] > 0 and "images_per_sec" not in thrice
    [table] = attack_tables(thrice)
    assert str(table.title).startswith("PGD-3, 3 restarts (linf) (the attack alone: ")


def test_each_eps_accuracy_reaches_the_loggers_as_a_scalar(run_evaluate, tmp_path: Path) -> None:
    report = run_evaluate("attack=fgsm", "attack.eps=[0,0.1]", "logger=csv")
    rows = csv.DictReader((tmp_path / "csv" / "metrics.csv").open())
    [row] = [row for row in rows if row["fgsm/acc_eps_0"]]
    logged = [float(row["fgsm/acc_eps_0"]), float(row["fgsm/acc_eps_0.1"])]
    assert logged == pytest.approx(report["fgsm"]["acc"])


@pytest.mark.slow  # scipy solves over LeNet: 80 s on the contended 2 cores
def test_lbfgs_reaches_its_targets_and_reports_each_class(run_evaluate) -> None:
    report = run_evaluate(
        "attack=lbfgs",
        "attack.search_steps=4",
        # 10 digits, short solves: this is about the report, the minimality test is above.
        "attack.max_iterations=15",
        "data.eval_batch_size=10",
        "trainer.limit_test_batches=1",
    )["lbfgs"]
    assert report["attempts"] == 10 and report["success_rate"] >= 0.9
    assert sum(row["attempts"] for row in report["per_target"].values()) == 10
    assert report["median_l2"] > 0 and report["mean_l2"] > 0


def test_a_saved_universal_perturbation_applies_again_with_the_same_fooling_rate(
    run_evaluate, tmp_path: Path
) -> None:
    settings = ("attack=universal", "attack.train_images=10", "attack.max_passes=1")
    first = run_evaluate(*settings, output_dir=tmp_path / "built")["universal"]
    saved = tmp_path / "built" / "universal_perturbation.pt"
    assert (
        first["linf"] <= 0.2 + 1e-6
        and (tmp_path / "built" / "universal_perturbation.png").is_file()
    )
    again = run_evaluate(*settings, f"attack.load={saved}", output_dir=tmp_path / "loaded")
    assert again["universal"]["fooling_rate"] == first["fooling_rate"]
    assert torch.equal(
        torch.load(saved, weights_only=True),
        torch.load(tmp_path / "loaded" / "universal_perturbation.pt", weights_only=True),
    )


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ATTACK_CONFIGS))
def test_each_attack_config_holds_its_schemas_keys_and_defaults(name: str) -> None:
    written = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "attack" / f"{name}.yaml"))
    assert written.pop("name") == name
    assert written == ATTACK_CONFIGS[name]().to_dict()
    assert check_attack({"name": name, **written}) == ATTACK_CONFIGS[name]()


def test_the_pgd_attack_and_adversarial_training_share_one_schema() -> None:
    # What PGD takes besides its budget is declared once, and both configs extend it.
    shared = {field.name for field in dataclasses.fields(PGDSettings)}
    assert shared == {"steps", "step_size", "norm", "random_start"}
    assert issubclass(PGDConfig, PGDSettings) and issubclass(AdversarialOptions, PGDSettings)
    # Training takes one budget, the attack's sweep a list of them.
    assert isinstance(AdversarialOptions().eps, float) and isinstance(PGDConfig().eps, list)


def test_a_key_no_attack_has_is_refused_naming_the_attacks_keys() -> None:
    with pytest.raises(
        ConfigError, match=r"attack.colour is not an option of attack=pgd \(options:"
    ):
        check_attack({"name": "pgd", "colour": "red"})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["attack=pgd", "attack.eps=[0.1,1.5]"],
            r"attack.eps must be a list of numbers in \[0, 1\]",
        ),
        (["attack=pgd", "attack.eps=[-0.1]"], r"attack.eps must be a list of numbers in \[0, 1\]"),
        (["attack=universal", "attack.eps=-0.1"], r"attack.eps must be a number in \[0, 1\]"),
        (["attack=pgd", "attack.steps=0"], "attack.steps must be an integer >= 1, got 0"),
        (["attack=universal", "attack.deepfool_steps=0"], "attack.deepfool_steps must be an int"),
        (["attack=lbfgs", "attack.target=10"], r"attack.target must be .* in \[0, 9\], got 10"),
        (["attack=lbfgs", "attack.target=near"], "attack.target must be next, every or a class"),
        (["attack=pgd", "attack.norm=l1"], "attack.norm must be one of linf, l2"),
        (["attack=universal", "attack.load=/no/such/file.pt"], "does not exist"),
    ],
)
def test_impossible_attack_settings_are_one_clear_error(
    overrides: list[str], message: str, run_evaluate
) -> None:
    with pytest.raises(ConfigError, match=message):
        run_evaluate(*overrides)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"name": "pgd", "steps": 10**9},
            r"^attack.steps must be at most 10,000 \(each is a forward and a backward pass\), "
            r"got 1000000000$",
        ),
        ({"name": "lbfgs", "max_iterations": 10**9}, "^attack.max_iterations must be at most "),
        ({"name": "lbfgs", "search_steps": 1000}, "^attack.search_steps must be at most 50, "),
        ({"name": "lbfgs", "initial_c": float("inf")}, "initial_c must be a finite number, got"),
        (
            {"name": "universal", "train_images": 10**9},
            r"^attack.train_images must be at most 10,000 \(the images are held in memory at "
            r"once\), got 1000000000$",
        ),
        ({"name": "universal", "max_passes": 10**9}, "^attack.max_passes must be at most 100, "),
        ({"name": "universal", "deepfool_steps": 10**9}, "deepfool_steps must be at most 1,000 "),
        ({"name": "universal", "overshoot": float("nan")}, "overshoot must be a finite number"),
    ],
)
def test_an_attacks_counts_are_bounded_by_what_stays_feasible(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        check_attack(settings)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"name": "pgd", "eps": [0, 2]},
            r"^attack.eps must be a list of numbers in \[0, 1\] \(pixel units\) with "
            r"attack.norm=linf, got \[0.0, 2.0\]$",
        ),
        ({"name": "fgsm", "eps": [1.5]}, r"^attack.eps must be a list of numbers in \[0, 1\] "),
        ({"name": "universal", "eps": 1.5}, r"^attack.eps must be a number in \[0, 1\] "),
        ({"name": "pgd", "norm": "l2", "eps": [1e6]}, r"^attack.eps must be a list of numbers "),
    ],
)
def test_a_budget_is_bounded_by_its_norm(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_attack(settings)


def test_an_l2_budget_may_exceed_one_pixel_unit() -> None:
    """An L2 budget bounds a distance between whole images: 2 on a 32 x 32 digit is common."""
    assert check_attack({"name": "pgd", "norm": "l2", "eps": [0, 0.5, 1, 2]}).eps == [0, 0.5, 1, 2]
    assert check_attack({"name": "universal", "norm": "l2", "eps": 4.0}).eps == 4.0


def test_a_universal_perturbation_of_the_wrong_shape_is_refused(
    run_evaluate, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.pt"
    torch.save(torch.zeros(3, 32, 32), wrong)
    with pytest.raises(ConfigError, match=r"shape \(1, 3, 32, 32\), where the model takes"):
        run_evaluate("attack=universal", f"attack.load={wrong}")


@pytest.mark.parametrize("attack", ["pgd", "lbfgs", "universal"])
def test_attacks_on_a_segmentation_checkpoint_say_they_are_for_classifiers(
    attack: str, run_evaluate, tmp_path: Path
) -> None:
    cfg = compose_config(list(UNET_MNIST_TOY), tmp_path)
    module = build_task(
        to_plain(cfg.model), to_plain(cfg.optimizer), None, to_plain(cfg.data), to_plain(cfg.task)
    )
    checkpoint = tmp_path / "unet.ckpt"
    torch.save(
        {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, checkpoint
    )
    with pytest.raises(ConfigError, match="attack and predict are for classifiers"):
        run_evaluate(f"attack={attack}", ckpt=checkpoint)


def test_the_command_line_says_it_in_one_line_with_exit_code_2(tmp_path: Path) -> None:
    result = run_script(
        "evaluate.py", f"ckpt_path={tmp_path}/none.ckpt", "attack=pgd", "attack.steps=0"
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line == "Error: attack.steps must be an integer >= 1, got 0"


def test_the_fgsm_and_pgd_figures_build_without_a_warning() -> None:
    clean = torch.rand(3, 1, 8, 8)
    titles = (["a", "b", "c"], ["green", "red", "green"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for title in ("FGSM", "PGD-20 (L-inf)"):
            plt.close(examples_figure(clean, clean + 0.1, titles, titles, 0.1, title))
            plt.close(accuracy_figure([0.0, 0.1, 0.3], [0.9, 0.5, 0.1], title))


def saved_perturbation(path: Path, v: torch.Tensor) -> Path:
    torch.save(v, path)
    return path


@pytest.mark.parametrize(
    ("v", "eps", "norm", "words"),
    [
        (torch.full((1, 4, 4), 0.9), 0.05, "linf", "L∞ norm 0.9 is over attack.eps=0.05"),
        (torch.full((1, 4, 4), 0.1), 0.3, "l2", "L2 norm 0.4 is over attack.eps=0.3"),
        (torch.full((1, 4, 4), 1e30), 0.05, "l2", "L2 norm 4e+30 is over attack.eps=0.05"),
    ],
    ids=["linf", "l2", "finite 1e30"],
)
def test_a_loaded_perturbation_over_its_budget_is_refused(
    v: torch.Tensor, eps: float, norm: str, words: str, tmp_path: Path
) -> None:
    path = saved_perturbation(tmp_path / "v.pt", v)
    with pytest.raises(ConfigError) as refused:
        load_perturbation(path, (1, 4, 4), eps, norm)
    assert str(refused.value) == (
        f"{path}: the perturbation's {words} (attack.norm={norm}): it would be reported under "
        "a budget it breaks"
    )


def test_a_perturbation_whose_norm_overflows_is_refused(tmp_path: Path) -> None:
    path = saved_perturbation(tmp_path / "v.pt", torch.full((1, 4, 4), 1e300, dtype=torch.float64))
    with pytest.raises(ConfigError) as refused:
        load_perturbation(path, (1, 4, 4), 0.05, "l2")
    assert str(refused.value) == f"{path}: the perturbation's L2 norm overflows: absurd values"


def test_a_perturbation_on_its_ball_loads_as_saved(tmp_path: Path) -> None:
    v = project(torch.randn(1, 1, 4, 4), 0.3, "l2")  # its norm 0.3, give or take a rounding
    loaded = load_perturbation(saved_perturbation(tmp_path / "v.pt", v[0]), (1, 4, 4), 0.3, "l2")
    assert torch.equal(loaded, v)
