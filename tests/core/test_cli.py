"""zoo.core.cli: an unknown key or group option on the command line of train.py or evaluate.py
is one line on stderr naming the closest valid ones, and exit code 2; Hydra keeps the rest."""

from __future__ import annotations

import pytest

from tests.conftest import run_script
from zoo.core.cli import check_command_line
from zoo.core.errors import ConfigError

# (command line, what the one line must say), for both entry points.
MISTAKES = [
    (
        "trainer.max_epoch=1",
        "trainer.max_epoch is not a key of the config; did you mean trainer.max_epochs?",
    ),
    (
        "model=resnet81",
        "model=resnet81 is not an option of model; one of: resnet18, resnet34, resnet50, ",
    ),
    ("data.batch_sise=8", "data.batch_sise is not a key of the config; did you mean data."),
]
TRAIN_MISTAKES = [
    *MISTAKES,
    ("optimizer.lrr=0.1", "optimizer.lrr is not a key of the config; did you mean optimizer.lr?"),
    ("optimizer=nope", "optimizer=nope is not an option of optimizer; one of: adam, adamw, "),
]
# evaluate.py has no optimizer group: the line says which groups it has.
EVALUATE_MISTAKES = [
    *MISTAKES,
    ("optimizer.lrr=0.1", "optimizer.lrr is not a key of the config; keys of the config: "),
    ("optimizer=nope", "optimizer=nope: evaluate has no optimizer group; its groups: "),
]
CASES = [("train.py", *case) for case in TRAIN_MISTAKES] + [
    ("evaluate.py", *case) for case in EVALUATE_MISTAKES
]


@pytest.mark.parametrize(("script", "override", "message"), CASES)
def test_a_mistyped_command_line_is_one_line_and_exit_2(
    script: str, override: str, message: str, tmp_path
) -> None:
    result = run_script(script, override, f"paths.log_dir={tmp_path}", timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"Error: {message}")
    assert "Traceback" not in result.stderr
    assert "search path" not in result.stderr


@pytest.mark.parametrize(
    ("override", "meant"),
    [
        ("trainr.max_epochs=1", "did you mean trainer.max_epochs?"),
        ("modle=lenet", "did you mean model?"),
        ("task.adversarial.step=3", "did you mean task.adversarial.steps?"),
        ("experiment=lenet_mnst", "one of: lenet_mnist, "),
        ("hydra/launcher=submitit", "one of: submitit_local, submitit_slurm, basic"),
    ],
)
def test_the_line_names_the_closest_valid_key_or_option(override: str, meant: str) -> None:
    with pytest.raises(ConfigError) as refused:
        check_command_line("train", [override])
    assert meant in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_key_close_to_none_lists_the_keys_of_its_group() -> None:
    with pytest.raises(ConfigError, match=r"keys of optimizer: name, lr, weight_decay"):
        check_command_line("train", ["optimizer.xyz=1"])


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["model=resnet18", "trainer.max_epochs=1", "+optimizer.betas=[0.8,0.9]"],
        # Hydra's own: its flags and multirun, and errors other than an unknown key or option.
        ["--cfg", "job", "trainer.max_epoch=1"],
        ["--help"],
        ["-m", "model=lenet,resnet81"],
        ["model=lenet,resnet18"],
    ],
)
def test_other_command_lines_are_left_to_hydra(argv: list[str]) -> None:
    check_command_line("train", argv)


def test_hydra_full_error_leaves_the_error_to_hydra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    check_command_line("train", ["trainer.max_epoch=1"])
