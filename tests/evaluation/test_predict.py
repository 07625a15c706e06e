"""zoo.evaluation.predict: image files and folders -> one preprocessed batch, each file decoded,
preprocessed and dropped before the next is decoded, so a folder of large images needs the
memory of one."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.core.errors import ConfigError
from zoo.evaluation import predict
from zoo.evaluation.predict import find_images, preprocess_files


def black_pngs(folder: Path, count: int, size: int = 300) -> list[Path]:
    """Large but cheap: black PNGs compress to almost nothing and decode to size² bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("L", (size, size)).save(folder / f"{i}.png")
    return sorted(folder.iterdir())


def shrink(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """A datamodule's preprocess_images in miniature: to 4x4, as float."""
    return torch.stack([image[:, :4, :4].float() for image in images])


def test_a_folder_is_decoded_one_image_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = black_pngs(tmp_path / "photos", 5)
    decoded: list[weakref.ref[torch.Tensor]] = []
    alive_at_each_decode = []

    def watched_decode(*args, **kwargs) -> torch.Tensor:
        alive_at_each_decode.append(sum(ref() is not None for ref in decoded))
        image = real_decode(*args, **kwargs)
        decoded.append(weakref.ref(image))
        return image

    real_decode = predict.decode
    monkeypatch.setattr(predict, "decode", watched_decode)
    batch = preprocess_files(find_images(str(tmp_path / "photos")), 1, shrink)

    assert batch.shape == (5, 1, 4, 4)
    # No decoded image is held when the next file is decoded: the peak is one image.
    assert alive_at_each_decode == [0] * len(files)


def test_the_batch_is_what_preprocessing_all_files_at_once_gives(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, colour in enumerate([(255, 0, 0), (0, 128, 255), (9, 9, 9)]):
        Image.new("RGB", (10 + i, 7), colour).save(folder / f"{i}.png")
    files = find_images(str(folder))
    pixels = [torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1) for path in files]
    assert torch.equal(preprocess_files(files, 3, shrink), shrink(pixels))


def test_a_file_over_the_pixel_limit_is_refused_naming_the_setting_that_named_it(
    tmp_path: Path,
) -> None:
    [large] = black_pngs(tmp_path / "photos", 1, size=100)
    with pytest.raises(ConfigError) as caught:
        preprocess_files([large], 1, shrink, max_pixels=5_000, key="visualization.x.image")
    assert str(caught.value) == (
        f"visualization.x.image: cannot read {large}: 10,000 pixels is over the limit of 5,000 "
        "pixels (max_image_pixels), like a decompression bomb"
    )
