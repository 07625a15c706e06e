"""Images/s of the two ImageNet input paths, on a tree of generated JPEGs.

    python -m benchmarks.imagenet_pipeline                      # 500 JPEGs of 500x375, both paths
    python -m benchmarks.imagenet_pipeline --root /data/imagenet --decode gpu --workers 16

Each path runs the training pipeline end to end as the Trainer would: the DataLoader (workers,
pinned memory, persistent workers), the transfer to the device and ``on_after_batch_transfer``,
until a normalised float batch sits on the device. The first pass over the data (worker start,
page cache) is not timed.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from zoo.data.imagenet.imagenet import ImageNetDataModule


def photo_like(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Smooth colour regions plus fine texture: JPEG sizes near ImageNet's (~110 kB at 500x375),
    unlike pure noise (far larger) or flat colour (far smaller)."""
    coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))
    texture = rng.normal(0, 18, size=(height, width, 3))
    return Image.fromarray(np.clip(base + texture, 0, 255).astype(np.uint8))


def write_jpeg_tree(
    root: Path,
    classes: int = 4,
    train_per_class: int = 5,
    val_per_class: int = 2,
    sizes: tuple[tuple[int, int], ...] = ((500, 375),),
    seed: int = 0,
    quality: int = 90,
) -> Path:
    """``root/{train,val}/<wnid>/*.JPEG`` with ImageNet's file naming, sizes cycling ``sizes``."""
    rng = np.random.default_rng(seed)
    count = 0
    for c in range(classes):
        wnid = f"n{c:08d}"
        for split, per_class in (("train", train_per_class), ("val", val_per_class)):
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                width, height = sizes[count % len(sizes)]
                count += 1
                name = (
                    f"{wnid}_{i}.JPEG" if split == "train" else f"ILSVRC2012_val_{count:08d}.JPEG"
                )
                photo_like(rng, width, height).save(folder / name, "JPEG", quality=quality)
    return root


def measure(
    root: Path,
    decode: str,
    batch_size: int,
    workers: int,
    image_size: int,
    device: torch.device,
    epochs: int,
) -> float:
    """Training-pipeline images/s over ``epochs`` timed passes after one untimed pass."""
    datamodule = ImageNetDataModule(
        root=str(root),
        batch_size=batch_size,
        num_workers=workers,
        image_size=image_size,
        decode=decode,
        classes=len(list((root / "train").iterdir())),
    )
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()

    def one_pass() -> int:
        seen = 0
        for batch in loader:
            batch = datamodule.transfer_batch_to_device(batch, device, 0)
            images, _ = datamodule.on_after_batch_transfer(batch, 0)
            seen += len(images)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return seen

    one_pass()
    start = time.perf_counter()
    seen = sum(one_pass() for _ in range(epochs))
    return seen / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="an ImageNet-layout tree (default: generate one)")
    parser.add_argument("--images", type=int, default=500, help="JPEGs to generate (train split)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--size", default="500x375", help="generated image size, WxH")
    parser.add_argument("--decode", nargs="+", default=["cpu", "gpu"], choices=["cpu", "gpu"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=2, help="timed passes over the data")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root
        if root is None:
            width, height = (int(v) for v in args.size.split("x"))
            root = write_jpeg_tree(
                Path(tmp),
                classes=args.classes,
                train_per_class=args.images // args.classes,
                val_per_class=1,
                sizes=((width, height),),
            )
            kb = np.mean([p.stat().st_size for p in root.glob("train/*/*.JPEG")]) / 1024
            print(f"generated {args.images} JPEGs of {args.size} (mean {kb:.0f} kB) in {root}")
        hardware = (
            torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
        )
        print(
            f"device {device} ({hardware or platform.machine()}), {torch.get_num_threads()} threads"
        )
        print("| decode | batch | workers | image size | device | images/s |")
        print("|---|---:|---:|---:|---|---:|")
        for decode in args.decode:
            rate = measure(
                root, decode, args.batch_size, args.workers, args.image_size, device, args.epochs
            )
            print(
                f"| {decode} | {args.batch_size} | {args.workers} | {args.image_size} | "
                f"{device.type} | {rate:,.0f} |"
            )


if __name__ == "__main__":
    main()
