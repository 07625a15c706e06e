"""zoo.models.loading.safe_load: a damaged zip member is refused by name before torch reads it,
whatever kind of file it is (checkpoint, ckpt_path=, model.weights); legacy files still load."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import pytest
import torch

from zoo.models.loading import WeightsError, safe_load


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
