"""zoo.models.loading.safe_load: a damaged zip member is refused by name before torch reads it,
whatever kind of file it is (checkpoint, ckpt_path=, model.weights); so is a file that would
unpack to more than it holds, or than its reader can need; legacy files still load."""

from __future__ import annotations

import os
import re
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from zoo.models.loading import SizeLimit, WeightsError, safe_load


def saved(path: Path, **options: object) -> Path:
    torch.save({"weight": torch.arange(1000, dtype=torch.float32)}, path, **options)
    return path


def flip_bit(path: Path, member_suffix: str, offset: int) -> str:
    """Flip one bit ``offset`` bytes into the stored data of the member ending in the suffix."""
    with zipfile.ZipFile(path) as archive:
        [info] = [i for i in archive.infolist() if i.filename.endswith(member_suffix)]
    raw = bytearray(path.read_bytes())
    # The local header: 30 bytes, then the name and the extra field, then the data.
    name_length, extra_length = struct.unpack(
        "<HH", raw[info.header_offset + 26 : info.header_offset + 30]
    )
    raw[info.header_offset + 30 + name_length + extra_length + offset] ^= 0x10
    path.write_bytes(raw)
    return info.filename


@pytest.mark.parametrize(("member", "offset"), [("data/0", 2345), ("data.pkl", 40)])
def test_a_flipped_bit_is_refused_naming_its_member(
    member: str, offset: int, tmp_path: Path
) -> None:
    path = saved(tmp_path / "weights.pth")
    name = flip_bit(path, member, offset)
    with pytest.raises(WeightsError, match=rf"member '{name}' fails its CRC-32 check") as refused:
        safe_load(path, "weights file")
    assert "\n" not in str(refused.value)


def test_torch_itself_would_have_read_the_flipped_bit_without_a_word(tmp_path: Path) -> None:
    """Why the check exists: torch's zip reader does not verify CRCs."""
    path = saved(tmp_path / "weights.pth")
    flip_bit(path, "data/0", 8)
    damaged = torch.load(path, weights_only=True)["weight"]
    assert not torch.equal(damaged, torch.arange(1000, dtype=torch.float32))


def test_intact_files_load_as_saved_zip_and_legacy_alike(tmp_path: Path) -> None:
    expected = torch.arange(1000, dtype=torch.float32)
    zipped = saved(tmp_path / "new.pth")
    legacy = saved(tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    assert zipfile.is_zipfile(zipped) and not zipfile.is_zipfile(legacy)
    for path in (zipped, legacy):
        assert torch.equal(safe_load(path)["weight"], expected)


def test_a_truncated_zip_is_one_line(tmp_path: Path) -> None:
    path = saved(tmp_path / "weights.pth")
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint") as refused:
        safe_load(path)
    assert "\n" not in str(refused.value)


# --- files that unpack to more than they hold ---------------------------------------------------


def zeros_file(path: Path, count: int, **options: object) -> Path:
    torch.save({"weight": torch.zeros(count)}, path, **options)
    return path


def inflating(path: Path, count: int) -> Path:
    """A torch file of ``count`` float32 zeros, its members stored DEFLATE-compressed: a few kB
    that torch.load unpacks to ``4 * count`` bytes."""
    plain = zeros_file(path.with_suffix(".plain"), count)
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bomb:
        for info in source.infolist():
            bomb.writestr(info.filename, source.read(info))
    plain.unlink()
    return path


def test_torch_itself_unpacks_a_member_stored_compressed(tmp_path: Path) -> None:
    """Why the sizes are checked: torch.save never compresses a member, but torch.load inflates
    one, whole, before anything could look at what it holds."""
    path = inflating(tmp_path / "bomb.pth", 1_000_000)
    assert path.stat().st_size < 100_000
    assert torch.load(path, weights_only=True)["weight"].numel() == 1_000_000


def test_a_file_that_unpacks_past_its_own_size_is_refused_before_anything_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = inflating(tmp_path / "bomb.pth", 1_000_000)
    members: list[str] = []
    loads: list[Path] = []
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, name, *a, **k: members.append(name))
    monkeypatch.setattr(torch, "load", lambda path, **options: loads.append(path))
    with pytest.raises(WeightsError) as refused:
        safe_load(path, "weights file")
    assert re.fullmatch(
        rf"refusing {re.escape(str(path))}: its members unpack to 4\.0 MB from \d+\.\d kB on disk "
        r"\('bomb/data/0' alone to 4\.0 MB, stored compressed, which torch\.save never does\); "
        r"nothing was unpacked",
        str(refused.value),
    )
    assert members == [] and loads == []  # no member was unpacked, not even for its CRC


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_a_file_larger_than_its_reader_can_need_is_refused_before_it_is_read(
    legacy: bool, tmp_path: Path
) -> None:
    path = zeros_file(tmp_path / "big.pth", 4_500_000, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(WeightsError) as refused:
        safe_load(path, "weights file", SizeLimit.of_tensor((10,)))
    assert str(refused.value) == (
        f"refusing {path}: it unpacks to 18.0 MB, more than the 16.0 MB that a file for a (10,) "
        "float32 tensor can need (8 x 40 bytes + 16.0 MB); nothing was unpacked"
    )
    weight = safe_load(path, "weights file", SizeLimit.of_tensor((4_500_000,)))["weight"]
    assert weight.numel() == 4_500_000


MAKERS: dict[str, tuple[Callable[[Path], object], str]] = {
    "a directory": (Path.mkdir, "is a directory, not a file"),
    "a FIFO": (os.mkfifo, "is not a regular file (a FIFO, a socket or a device)"),
    "nothing": (lambda path: None, "does not exist"),
}


@pytest.mark.parametrize(("make", "words"), MAKERS.values(), ids=list(MAKERS))
def test_what_stands_at_the_path_is_named_and_a_fifo_is_never_opened(
    make: Callable[[Path], object], words: str, tmp_path: Path
) -> None:
    path = tmp_path / "weights.pth"
    make(path)
    with pytest.raises(WeightsError) as refused:
        safe_load(path, "weights file")
    assert str(refused.value) == f"weights file {path} {words}"
