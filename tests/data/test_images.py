"""zoo.data.images: every image file read through one module (TorchCodec), its header checked
before any pixel is decoded, its format taken from its content, failures one line naming it."""

from __future__ import annotations

import io
import resource
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.core.errors import ZooError
from zoo.data import images
from zoo.data.images import decode, decode_jpegs, read_bytes, write_jpeg, write_png

FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
NOT_OURS = "not a readable PNG, JPEG, WebP or GIF image"


class Unreadable(ValueError):
    pass


def unreadable(path: str, reason: str) -> Unreadable:
    return Unreadable(f"cannot read {path}: {reason}")


def picture(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def save(image: Image.Image, path: Path, fmt: str, **options: object) -> Path:
    image.save(path, fmt, **({"lossless": True} if fmt == "WEBP" else {}), **options)
    return path


def bomb_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` RGB pixels, in a few hundred bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\0" * (width * 3 + 1) * 4, 9)  # the first rows, all black
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    path.write_bytes(png)
    return path


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_image_over_the_pixel_limit_is_refused_from_its_header(fmt: str, tmp_path: Path) -> None:
    path = save(picture(64, 48), tmp_path / f"image.{fmt.lower()}", fmt)
    assert decode(path, "RGB", unreadable, max_pixels=64 * 48).shape == (3, 48, 64)
    with pytest.raises(Unreadable, match=r"64x48 = 3,072 pixels is over the limit of 3,071"):
        decode(path, "RGB", unreadable, max_pixels=64 * 48 - 1)


def test_a_50000_pixel_square_png_is_refused_before_any_decoding(tmp_path: Path) -> None:
    path = bomb_png(tmp_path / "bomb.png", 50_000, 50_000)
    assert path.stat().st_size < 2_000  # 7.5 GB once decoded
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with pytest.raises(Unreadable) as refused:
        decode(path, "RGB", unreadable)
    message = str(refused.value)
    assert message.startswith(f"cannot read {path}: ") and "\n" not in message
    assert "2,500,000,000 pixels" in message and "max_image_pixels" in message
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert grown < 100 * 1024, f"the peak memory grew by {grown / 1024:.0f} MB"


def test_a_limit_above_pils_own_is_the_one_that_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PIL refuses in Image.open above twice its MAX_IMAGE_PIXELS: our limit overrides it, both
    ways, and PIL's setting is left as it was."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = save(picture(64, 48), tmp_path / "image.png", "PNG")
    assert decode(path, "RGB", unreadable, max_pixels=10_000).shape == (3, 48, 64)
    assert Image.MAX_IMAGE_PIXELS == 1000


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
@pytest.mark.parametrize("name", ["photo.jpg", "scan.png"])
def test_the_format_comes_from_the_content_not_the_name(
    fmt: str, name: str, tmp_path: Path
) -> None:
    source = picture().convert("L")  # grey, so that every format holds it exactly
    true_name = save(source, tmp_path / f"true.{fmt.lower()}", fmt)
    misnamed = tmp_path / name
    misnamed.write_bytes(true_name.read_bytes())
    expected = torch.from_numpy(np.array(source))[None]
    for mode, channels in (("GRAY", 1), ("RGB", 3)):
        image = decode(misnamed, mode, unreadable)
        assert image.shape == (channels, 48, 64) and image.dtype == torch.uint8
        assert torch.equal(image[:1], expected)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_an_animated_image_is_refused_naming_the_file(fmt: str, tmp_path: Path) -> None:
    path = tmp_path / "clip.png"
    frames = [picture(seed=seed) for seed in range(3)]
    frames[0].save(path, fmt, save_all=True, append_images=frames[1:], duration=100)
    with pytest.raises(Unreadable, match=rf"cannot read {path}: an animated {fmt}"):
        decode(path, "RGB", unreadable)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"not an image at all", NOT_OURS),
        (b"BM" + bytes(100), NOT_OURS),  # a BMP header: PIL reads BMP, but zoo takes none
        (b"", NOT_OURS),
    ],
)
def test_other_content_is_one_line_naming_the_file(
    content: bytes, reason: str, tmp_path: Path
) -> None:
    path = tmp_path / "image.png"
    path.write_bytes(content)
    with pytest.raises(Unreadable, match=rf"cannot read {path}: {reason}") as refused:
        decode(path, "RGB", unreadable)
    assert "\n" not in str(refused.value)


def test_a_truncated_jpeg_is_one_line_without_the_codecs_source_location(tmp_path: Path) -> None:
    path = save(picture(), tmp_path / "image.jpg", "JPEG")
    path.write_bytes(path.read_bytes()[:-300])
    with pytest.raises(Unreadable) as refused:
        decode(path, "RGB", unreadable)
    message = str(refused.value)
    assert message.startswith(f"cannot read {path}: ") and ".cpp" not in message


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(Unreadable, match=r"cannot read .*absent.png: No such file"):
        read_bytes(tmp_path / "absent.png", unreadable)


def test_written_images_read_back_exactly_and_16_bit_pngs_keep_their_depth(tmp_path: Path) -> None:
    rgb = torch.from_numpy(np.array(picture())).permute(2, 0, 1).contiguous()
    write_png(rgb, tmp_path / "rgb.png")
    write_png(rgb[:1], tmp_path / "grey.png")
    assert torch.equal(decode(tmp_path / "rgb.png", "RGB", unreadable), rgb)
    assert torch.equal(decode(tmp_path / "grey.png", "UNCHANGED", unreadable), rgb[:1])
    smooth = torch.linspace(0, 255, 64).round().to(torch.uint8).expand(3, 48, 64).contiguous()
    write_jpeg(smooth, tmp_path / "smooth.jpg", quality=95)
    error = decode(tmp_path / "smooth.jpg", "RGB", unreadable).float() - smooth.float()
    assert error.abs().max() <= 4  # lossy, but the same picture
    labels = np.full((8, 8), 300, dtype=np.uint16)  # a 16-bit mask: 300 is a class index
    buffer = io.BytesIO()
    Image.fromarray(labels).save(buffer, "PNG")
    (tmp_path / "mask.png").write_bytes(buffer.getvalue())
    mask = decode(tmp_path / "mask.png", "UNCHANGED", unreadable, keep_depth=True)
    assert mask.dtype == torch.uint16 and mask.long().unique().tolist() == [300]


def test_the_batched_jpeg_decoder_equals_decoding_each_file(tmp_path: Path) -> None:
    """The gpu path's call (nvJPEG on a GPU, tests/gpu); its CPU form is the same decoder."""
    paths = [save(picture(40 + 8 * i, 32, seed=i), tmp_path / f"{i}.jpg", "JPEG") for i in range(3)]
    batch = decode_jpegs([read_bytes(p, unreadable) for p in paths], torch.device("cpu"))
    for image, path in zip(batch, paths, strict=True):
        assert torch.equal(image, decode(path, "RGB", unreadable))


def test_the_default_limit_is_pils_own() -> None:
    assert images.MAX_IMAGE_PIXELS == Image.MAX_IMAGE_PIXELS


# --- the datamodules read through it --------------------------------------------------------


@pytest.mark.parametrize("decode_on", ["cpu", "gpu"])
def test_imagenet_refuses_a_file_over_data_max_image_pixels_or_skips_it(
    decode_on: str, tmp_path: Path
) -> None:
    from benchmarks.imagenet_pipeline import write_jpeg_tree
    from zoo.data.imagenet.imagenet import ImageNetDataModule
    from zoo.data.imagenet.io import ImageNetDataError

    root = write_jpeg_tree(
        tmp_path, classes=2, train_per_class=2, val_per_class=1, sizes=((40, 30),)
    )
    large = next((root / "train").rglob("*.JPEG"))
    save(picture(80, 60), large, "JPEG")

    def datamodule(**options: object) -> ImageNetDataModule:
        dm = ImageNetDataModule(
            root=str(root),
            classes=2,
            image_size=32,
            num_workers=0,
            batch_size=4,
            decode=decode_on,
            max_image_pixels=40 * 30,
            **options,
        )
        dm.setup("fit")
        return dm

    dm = datamodule()
    refused = rf"cannot read image {large}: 4,800 pixels is over the limit of 1,200"
    with pytest.raises(ImageNetDataError, match=refused):
        for batch in dm.train_dataloader():
            dm.on_after_batch_transfer(batch, 0)
    assert datamodule(skip_corrupt=True).skipped == [str(large)]


def test_the_segmentation_folder_decodes_images_by_content_and_takes_only_png_masks(
    tmp_path: Path,
) -> None:
    from zoo.data.segmentation_folder import SegmentationDataError, read_pair

    mask = torch.zeros(1, 48, 64, dtype=torch.uint8)
    mask[:, :10] = 2
    write_png(mask, tmp_path / "mask.png")
    gif_as_png = save(picture(), tmp_path / "image.png", "GIF")  # a GIF behind a .png name
    image, labels = read_pair(gif_as_png, tmp_path / "mask.png", channels=3, num_classes=3)
    assert image.shape == (3, 48, 64) and labels.unique().tolist() == [0, 2]
    jpeg_mask = tmp_path / "jpeg_mask.png"
    save(Image.fromarray(mask[0].numpy()), jpeg_mask, "JPEG")  # lossy: it would invent labels
    with pytest.raises(
        SegmentationDataError, match=rf"mask {jpeg_mask} is a JPEG image, not a PNG"
    ):
        read_pair(gif_as_png, jpeg_mask, channels=3, num_classes=3)
    with pytest.raises(SegmentationDataError, match=r"3,072 pixels is over the limit of 1,000"):
        read_pair(gif_as_png, tmp_path / "mask.png", 3, 3, max_pixels=1000)


# --- folders: one listing for every datamodule and predict= ----------------------------------


def test_a_folder_lists_its_visible_subfolders_and_images_in_the_order_paths_sort(
    tmp_path: Path,
) -> None:
    for name in ("b/z.png", "b/a/x.JPEG", "b.png", "a.webp", ".hidden/c.png", "b/.d.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image by name")
    (tmp_path / "up").symlink_to(tmp_path)  # a link to a parent: listed, never descended into

    listing = images.list_folder(tmp_path, unreadable)
    assert listing.folders == [tmp_path / "b", tmp_path / "up"]
    assert listing.images == [tmp_path / "a.webp", tmp_path / "b.png"]
    found = images.list_folder(tmp_path, unreadable, recursive=True).images
    expected = ["a.webp", "b/a/x.JPEG", "b/z.png", "b.png"]
    assert found == sorted(found) == [tmp_path / name for name in expected]


def symlink_loop(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).symlink_to(name)  # itself
    return folder / name


@pytest.mark.parametrize("name", ["loop.png", "class_folder"])
def test_a_symbolic_link_loop_named_like_an_image_or_a_folder_is_one_line_naming_it(
    name: str, tmp_path: Path
) -> None:
    loop = symlink_loop(tmp_path / "deep", name)
    refused = f"cannot read {loop}: a symbolic link loop (it never reaches a file or folder)"
    for recursive in (False, True):
        with pytest.raises(Unreadable) as caught:
            images.list_folder(loop.parent, unreadable, recursive)
        assert str(caught.value) == refused
    with pytest.raises(Unreadable) as caught:
        images.list_folder(tmp_path, unreadable, recursive=True)  # found a level down
    assert str(caught.value) == refused


def image_tree(root: Path, *folders: str) -> Path:
    """A small image in each folder named under ``root``."""
    for folder in folders:
        (root / folder).mkdir(parents=True, exist_ok=True)
        save(picture(8, 8), root / folder / "0.png", "PNG")
    return root


def read_class_folders(root: Path) -> None:
    from zoo.data.image_folder import ImageFolderDataModule

    image_tree(root, "train/cat", "train/dog", "val/cat", "val/dog")
    ImageFolderDataModule(str(root), num_workers=0).setup("fit")


def read_segmentation_folder(root: Path) -> None:
    from zoo.data.segmentation_folder import pair_files

    pair_files(image_tree(root, "images", "masks"))


def read_predict_folder(root: Path) -> None:
    from zoo.evaluation.predict import find_images

    find_images(str(image_tree(root, "photos")))


@pytest.mark.parametrize(
    ("read", "where"),
    [
        (read_class_folders, "train/dog/loop.png"),
        (read_class_folders, "train/loop"),  # where a class folder would be
        (read_class_folders, "val/dog/loop.jpg"),
        (read_segmentation_folder, "images/loop.png"),
        (read_segmentation_folder, "masks/sub/loop"),
        (read_predict_folder, "photos/loop.png"),
        (read_predict_folder, "photos/sub/loop"),
    ],
)
def test_every_folder_reader_names_a_symbolic_link_loop_in_one_line(
    read, where: str, tmp_path: Path
) -> None:
    loop = symlink_loop(tmp_path / Path(where).parent, Path(where).name)
    with pytest.raises(ZooError) as caught:
        read(tmp_path)
    assert str(caught.value).endswith(
        f"cannot read {loop}: a symbolic link loop (it never reaches a file or folder)"
    )
