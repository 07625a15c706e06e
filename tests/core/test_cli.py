"""zoo.core.cli: an unknown key or group option on the command line of train.py or evaluate.py
is one line on stderr naming the closest valid ones, and exit code 2; Hydra keeps the rest."""

from __future__ import annotations

import sys

import pytest

import zoo.tools.evaluate
import zoo.tools.train
from tests.conftest import run_script
from zoo.core.cli import check_command_line, multirun_jobs
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


# The console commands' mains, as zoo-train and zoo-evaluate (and train.py, evaluate.py) run them.
MAINS = {"train.py": zoo.tools.train.main, "evaluate.py": zoo.tools.evaluate.main}


@pytest.mark.parametrize(("script", "override", "message"), CASES)
def test_a_mistyped_command_line_is_one_line_and_exit_2(
    script: str,
    override: str,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The entry point's main() in this process, with the command line in sys.argv."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(sys, "argv", [script, override])
    with pytest.raises(SystemExit) as exited:
        MAINS[script]()
    stderr = capsys.readouterr().err
    assert exited.value.code == 2
    assert stderr.strip().splitlines() == [stderr.strip()]
    assert stderr.startswith(f"Error: {message}")


@pytest.mark.parametrize("script", MAINS)
def test_from_a_shell_a_mistake_is_one_line_and_exit_2_before_hydra_speaks(
    script: str, tmp_path
) -> None:
    override, message = MISTAKES[0]
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
        ["-m", "--cfg", "job", "model=lenet,resnet81"],
        ["model=lenet,resnet18"],  # a sweep without -m: Hydra's "Ambiguous value"
        # Valid multiruns, as Hydra will run them.
        ["-m", "optimizer.lr=1e-3,3e-3", "model=lenet,resnet18"],
        ["--multirun", "model=glob(resnet*)", "data.batch_size=range(8,10000000)"],
        ["-m", "optimizer.lr=interval(1e-4,1e-2)"],  # for sweepers such as Optuna's
    ],
)
def test_other_command_lines_are_left_to_hydra(argv: list[str]) -> None:
    check_command_line("train", argv)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["-m", "model=lenet,resnet81"],
            "model=resnet81 is not an option of model; one of: resnet18, resnet34, resnet50, ",
        ),
        (
            ["--multirun", "optimizer.lrr=1e-3,3e-3"],
            "optimizer.lrr is not a key of the config; did you mean optimizer.lr?",
        ),
        (
            ["-m", "model=lenet,resnet18", "trainer.max_epoch=1"],
            "trainer.max_epoch is not a key of the config; did you mean trainer.max_epochs?",
        ),
        (["optimizer=adam,sgd,adamm", "-m"], "optimizer=adamm is not an option of optimizer"),
        (
            ["-m", "optimizer.lr=interval(1e-4,1e-2)", "optimizer.lrr=1"],
            "optimizer.lrr is not a key of the config",
        ),
    ],
)
def test_a_multirun_with_an_unknown_key_or_option_is_refused_in_one_line(
    argv: list[str], message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        check_command_line("train", argv)
    assert str(refused.value).startswith(message)
    assert "\n" not in str(refused.value)


def test_a_multiruns_jobs_check_each_swept_option_and_a_swept_keys_first_value() -> None:
    jobs = multirun_jobs(["model=lenet,resnet18,vgg11", "optimizer.lr=range(1,1000000)", "seed=1"])
    assert jobs == [
        ["model=lenet", "optimizer.lr=1", "seed=1"],
        ["model=resnet18", "optimizer.lr=1", "seed=1"],
        ["model=vgg11", "optimizer.lr=1", "seed=1"],
    ]


def test_hydra_full_error_leaves_the_error_to_hydra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    check_command_line("train", ["trainer.max_epoch=1"])
