"""pip install . (not editable): a wheel that holds every file the zoo reads at run time, and
console commands, zoo-train and zoo-evaluate, that run from any folder, writing ./outputs and
reading ./data there; the build's folders in the checkout are git-ignored."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import warnings
from pathlib import Path

import pytest
from setuptools.config.pyprojecttoml import apply_configuration
from setuptools.dist import Distribution

from tests.conftest import REPO_ROOT
from zoo.data.mnist.files import raw_dir

PACKAGE = REPO_ROOT / "zoo"


def package_data_files() -> set[Path]:
    """The files that setuptools puts into the wheel beside the Python modules, as pyproject.toml
    configures them (its package-data only: a checkout's MANIFEST or git files don't count)."""
    distribution = Distribution()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # setuptools' notes on pyproject.toml, not ours to check
        apply_configuration(distribution, REPO_ROOT / "pyproject.toml")
    distribution.include_package_data = False
    build_py = distribution.get_command_obj("build_py")
    build_py.ensure_finalized()
    return {
        (REPO_ROOT / source / name).resolve()
        for _, source, _, names in build_py.data_files
        for name in names
    }


def test_every_file_in_the_package_that_is_not_python_is_package_data(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(REPO_ROOT)  # setuptools reads package folders relative to the project
    data = {
        path.resolve()
        for path in PACKAGE.rglob("*")
        if path.is_file() and path.suffix not in {".py", ".pyc"} and "__pycache__" not in path.parts
    }
    assert data >= {PACKAGE / "configs" / "train.yaml", PACKAGE / "configs" / "evaluate.yaml"}
    missing = sorted(str(path.relative_to(REPO_ROOT)) for path in data - package_data_files())
    assert missing == [], "add them to [tool.setuptools.package-data] in pyproject.toml"


def test_the_build_folders_are_git_ignored() -> None:
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    paths = ["build/lib/zoo/__init__.py", "dist/zoo-0.1.0-py3-none-any.whl"]
    ignored = subprocess.run(
        ["git", "check-ignore", *paths], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert ignored.stdout.split() == paths


def build_wheel(workdir: Path) -> Path:
    """The wheel pip install . builds, from a copy of the sources an sdist holds, so that
    nothing is built in, or taken from a stale build/ of, the checkout; without downloading."""
    source = workdir / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    shutil.copytree(PACKAGE, source / "zoo", ignore=shutil.ignore_patterns("__pycache__"))
    wheels = workdir / "wheels"
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, "--no-index", "-w", str(wheels), str(source)], check=True, timeout=300)
    [wheel] = wheels.glob("zoo-*.whl")
    return wheel


def install_in_new_venv(wheel: Path, venv: Path) -> Path:
    """A new venv holding the wheel; the dependencies are this environment's, seen through a
    .pth file, whose folder Python puts after the venv's own site-packages, so the wheel's zoo
    comes first (and this environment's editable install of the checkout, loaded by a .pth
    file of its own there, is not loaded). Returns the venv's bin/."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps"]
    subprocess.run([*pip, "--no-index", str(wheel)], check=True, timeout=300)
    site_packages = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site_packages) / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return venv / "bin"


def run_command(
    command: list[str | Path], cwd: Path, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """A command as a user runs it in ``cwd``: nothing of the checkout on PYTHONPATH, and the
    zoo's own defaults for data and errors."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for name in ("PYTHONPATH", "HYDRA_FULL_ERROR", "ZOO_DATA_DIR"):
        env.pop(name, None)
    return subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_an_installed_zoo_trains_and_evaluates_outside_the_checkout(
    synthetic_mnist: Path, tmp_path: Path
) -> None:
    bin_dir = install_in_new_venv(build_wheel(tmp_path), tmp_path / "venv")
    work = tmp_path / "work"
    # MNIST in ./data, where an installed zoo looks by default; nothing is downloaded.
    shutil.copytree(raw_dir(synthetic_mnist), raw_dir(work / "data"))

    where = run_command(
        [bin_dir / "python", "-c", "import zoo.core.config as c; print(c.CONFIG_DIR)"], work
    )
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(tmp_path / "venv"), where.stdout

    quick = ["data.verify=false", "data.val_size=100", "trainer.accelerator=cpu"]
    train = run_command(
        [
            bin_dir / "zoo-train",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=5",
            "trainer.limit_val_batches=2",
            "test=false",
            "callbacks.progress_bar=null",
            *quick,
        ],
        work,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    [run_dir] = (work / "outputs" / "train" / "runs").iterdir()
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    assert (run_dir / "metrics.json").is_file() and (run_dir / "train.log").is_file()

    evaluate = run_command(
        [
            bin_dir / "zoo-evaluate",
            f"ckpt_path={checkpoint}",
            "trainer.limit_test_batches=2",
            "trainer.accelerator=cpu",
        ],
        work,
    )
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    [eval_dir] = (work / "outputs" / "evaluate" / "runs").iterdir()
    assert (eval_dir / "metrics.json").is_file() and (eval_dir / "evaluate.log").is_file()
    assert (eval_dir / "report.html").is_file()  # the report's template came with the wheel

    typo = run_command([bin_dir / "zoo-train", "trainer.max_epoch=1"], work)
    assert (typo.returncode, typo.stderr.strip()) == (
        2,
        "Error: trainer.max_epoch is not a key of the config; did you mean trainer.max_epochs?",
    )
