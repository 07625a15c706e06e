"""Training and inference speed of the zoo's models on synthetic data, Lightning vs plain PyTorch.

    python -m zoo.tools.bench --models resnet18,lenet --batch-size 64 --device cuda --precision bf16
    python -m zoo.tools.bench --models resnet18 --channels-last --compile --json bench.json

For each model it measures training and inference images/s, the training step time, peak
memory and MFU (FLOPs counted by ``zoo.tasks.base.count_flops`` against the device's
peak from ``get_available_flops``; no peak is known for CPUs, so no MFU there). The same model,
optimizer and batch run in a plain PyTorch loop and through a Lightning ``Trainer`` (the zoo's
ClassificationModule), in turn, ``--rounds`` times (3 by default), and the table gives the
medians over the rounds, with the step time's and Lightning overhead's range (min to max) beside
them: one slow round on a shared machine shows as a wide range rather than as a result.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.throughput import get_available_flops, measure_flops
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.utils.data import DataLoader

from zoo import models
from zoo.core.logs import print_full_width, quiet_library_noise
from zoo.tasks.base import count_flops
from zoo.tasks.classification import (
    ClassificationModule,
    ClassificationOptions,
    classification_loss,
)
from zoo.tasks.optim import build_optimizer

PRECISIONS = {"32": torch.float32, "bf16": torch.bfloat16, "16": torch.float16}
LIGHTNING_PRECISION = {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}
OPTIMIZER = {"name": "sgd", "lr": 0.01, "momentum": 0.9}


@dataclass
class BenchResult:
    model: str
    device: str
    batch_size: int
    image_size: int
    precision: str
    channels_last: bool
    compile: bool
    train_images_per_s: float
    step_ms: float
    inference_images_per_s: float
    peak_memory_mb: float
    tflops_per_step: float
    mfu: float | None
    lightning_images_per_s: float | None
    # The median over the rounds of (Lightning step time / plain step time - 1), each round's
    # two loops timed one after the other.
    lightning_overhead: float | None
    rounds: int = 1
    step_ms_range: tuple[float, float] | None = None  # the rounds' (min, max)
    lightning_overhead_range: tuple[float, float] | None = None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # Process high-water mark (kilobytes on Linux): an upper bound, shared across models.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=PRECISIONS[precision])


def timed(step: Callable[[], object], device: torch.device, warmup: int, steps: int) -> float:
    """Seconds per call of ``step`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - start) / steps


def model_spec(name: str, image_size: int | None, num_classes: int) -> tuple[dict, int]:
    """The registry spec and the image size (the model's native one unless given)."""
    spec = {"name": name, "num_classes": num_classes, "in_channels": 3}
    # Read from the class: building VGG16 just to learn "224" would allocate 138 M parameters.
    arguments = {key: value for key, value in spec.items() if key != "name"}
    size = image_size or models.input_spec(name, **arguments).native
    return spec, size


def module_flops(model: nn.Module, input_shape: torch.Size) -> int:
    """FLOPs of one training step (forward and backward) of a ready module, counted as
    ``count_flops`` counts a registry model's: on a copy on the meta device."""
    meta = copy.deepcopy(model).to("meta").train()
    images = torch.empty(input_shape, device="meta")
    return measure_flops(meta, lambda: meta(images), loss_fn=torch.Tensor.sum)


def plain_loop(
    spec: dict | nn.Module, batch: tuple[torch.Tensor, torch.Tensor], args: argparse.Namespace
) -> tuple[float, float, float, float]:
    """(train s/step, inference s/batch, peak MB, FLOPs per train step) of a bare PyTorch loop.

    ``spec`` is a registry spec, or a ready classifier from elsewhere (timm's resnet18, say),
    trained by the same loop on the same batch, so that it can serve as a peer."""
    device = batch[0].device
    if isinstance(spec, nn.Module):
        model, flops = spec, module_flops(spec, batch[0].shape)
    else:
        model = models.build(spec["name"], **{k: v for k, v in spec.items() if k != "name"})
        flops = count_flops(spec, batch[0].shape, training=True)
    model.to(device)
    images, targets = batch
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = build_optimizer(model.parameters(), OPTIMIZER)
    forward = torch.compile(model) if args.compile else model

    def train_step() -> None:
        with autocast(device, args.precision):
            # The loss ClassificationModule trains with (GoogLeNet's auxiliary heads included),
            # so that both loops do the same work.
            loss, _ = classification_loss(forward(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def infer_step() -> None:
        with torch.inference_mode(), autocast(device, args.precision):
            forward(images)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model.train()
    train_s = timed(train_step, device, args.warmup, args.steps)
    peak = peak_memory_mb(device)
    model.eval()
    infer_s = timed(infer_step, device, args.warmup, args.steps)

    model.train()
    return train_s, infer_s, peak, float(flops)


class _StepTimer(pl.Callback):
    """Wall time of the training steps after the warm-up ones."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = 0.0
        self.end = 0.0

    def on_train_batch_start(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == self.warmup:
            synchronize(trainer.strategy.root_device)
            self.start = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, *args: object) -> None:
        synchronize(trainer.strategy.root_device)
        self.end = time.perf_counter()


def lightning_loop(
    spec: dict, batch: tuple[torch.Tensor, torch.Tensor], args: argparse.Namespace
) -> float:
    """Seconds per training step through Trainer.fit, on the same batch as the plain loop."""
    device = batch[0].device
    options = ClassificationOptions(channels_last=args.channels_last, compile=args.compile)
    module = ClassificationModule(model=spec, optimizer=OPTIMIZER, options=options)
    timer = _StepTimer(args.warmup)
    trainer = pl.Trainer(
        accelerator=device.type,
        devices=1,
        precision=LIGHTNING_PRECISION[args.precision],
        max_steps=args.warmup + args.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[timer],
    )
    # batch_size=None: the loader hands over the ready-made device batch as it is, like the
    # plain loop, so the difference measured is Lightning's own.
    batches = DataLoader([batch] * (args.warmup + args.steps), batch_size=None)
    trainer.fit(module, train_dataloaders=batches)
    return (timer.end - timer.start) / args.steps


def bench_model(name: str, args: argparse.Namespace) -> BenchResult:
    """Time the plain loop and the Lightning loop in turn, ``args.rounds`` times each: a load
    that comes and goes on a shared machine then touches both, and the medians are compared."""
    device = torch.device(args.device)
    spec, size = model_spec(name, args.image_size, args.num_classes)
    images = torch.randn(args.batch_size, 3, size, size, device=device)
    targets = torch.randint(0, args.num_classes, (args.batch_size,), device=device)
    plain_rounds, lightning_rounds = [], []
    for _ in range(args.rounds):
        plain_rounds.append(plain_loop(spec, (images, targets), args))
        if not args.no_lightning:
            lightning_rounds.append(lightning_loop(spec, (images, targets), args))
    peak_flops = get_available_flops(device, PRECISIONS[args.precision])
    return bench_result(name, device, size, args, plain_rounds, lightning_rounds, peak_flops)


def bench_result(
    name: str,
    device: torch.device,
    image_size: int,
    args: argparse.Namespace,
    rounds: Sequence[tuple[float, float, float, float]],
    lightning_rounds: Sequence[float] = (),
    peak_flops: float | None = None,
) -> BenchResult:
    """One row from the ``rounds`` of ``plain_loop`` (train s, inference s, peak MB, FLOPs
    each) and, if timed, the Lightning step's seconds of the same rounds: medians, and the
    range (min to max) of the step time and of the Lightning overhead; MFU where the device's peak
    FLOP/s is known."""
    train_s, infer_s, peak, flops = (
        statistics.median(values) for values in zip(*rounds, strict=True)
    )
    steps_ms = [round_[0] * 1e3 for round_ in rounds]
    # Each round's own ratio: its two loops ran back to back, under the same load.
    overheads = []
    if lightning_rounds:
        overheads = [
            lightning_s / round_[0] - 1
            for round_, lightning_s in zip(rounds, lightning_rounds, strict=True)
        ]
    lightning_s = statistics.median(lightning_rounds) if lightning_rounds else None
    return BenchResult(
        model=name,
        device=device_name(device),
        batch_size=args.batch_size,
        image_size=image_size,
        precision=args.precision,
        channels_last=args.channels_last,
        compile=args.compile,
        train_images_per_s=args.batch_size / train_s,
        step_ms=train_s * 1e3,
        inference_images_per_s=args.batch_size / infer_s,
        peak_memory_mb=peak,
        tflops_per_step=flops / 1e12,
        mfu=(flops / train_s / peak_flops) if peak_flops else None,
        lightning_images_per_s=args.batch_size / lightning_s if lightning_s else None,
        lightning_overhead=statistics.median(overheads) if overheads else None,
        rounds=len(rounds),
        step_ms_range=(min(steps_ms), max(steps_ms)),
        lightning_overhead_range=(min(overheads), max(overheads)) if overheads else None,
    )


COLUMNS = (
    "model", "device", "batch", "px", "precision", "channels_last", "compile", "train img/s",
    "step ms", "infer img/s", "peak MB", "MFU", "Lightning img/s", "Lightning overhead",
)  # fmt: skip


def with_range(median: str, spread: tuple[str, str] | None) -> str:
    """A median and, where the rounds differ, their range: "13.4 (12.1 to 15.0)"."""
    if spread is None or spread[0] == spread[1]:
        return median
    return f"{median} ({spread[0]} to {spread[1]})"


def format_row(r: BenchResult) -> list[str]:
    """One result as the cells of COLUMNS, shared by the terminal and markdown tables."""
    step_ms = None if r.step_ms_range is None else tuple(f"{v:.1f}" for v in r.step_ms_range)
    overhead = None
    if r.lightning_overhead_range is not None:
        overhead = tuple(f"{v:+.1%}" for v in r.lightning_overhead_range)
    return [
        r.model, r.device, str(r.batch_size), str(r.image_size), r.precision,
        str(r.channels_last), str(r.compile), f"{r.train_images_per_s:,.0f}",
        with_range(f"{r.step_ms:.1f}", step_ms),
        f"{r.inference_images_per_s:,.0f}", f"{r.peak_memory_mb:,.0f}",
        f"{r.mfu:.1%}" if r.mfu is not None else "n/a",
        f"{r.lightning_images_per_s:,.0f}" if r.lightning_images_per_s else "-",
        with_range(f"{r.lightning_overhead:+.1%}", overhead)
        if r.lightning_overhead is not None else "-",
    ]  # fmt: skip


def title(results: Sequence[BenchResult]) -> str:
    rounds = max((r.rounds for r in results), default=1)
    if rounds == 1:
        return "zoo.tools.bench (synthetic data, one round)"
    return f"zoo.tools.bench (synthetic data): medians of {rounds} rounds (min to max)"


def markdown_table(results: list[BenchResult]) -> str:
    lines = [f"{title(results)}:", ""]
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(format_row(r)) + " |" for r in results]
    return "\n".join(lines)


def print_table(results: list[BenchResult], console: Console | None = None) -> None:
    """The results as a table, at the width its cells need (a log file's too)."""
    table = Table(title=title(results))
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("model", "device") else "right")
    for r in results:
        table.add_row(*format_row(r))
    print_full_width(console or Console(), table)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m zoo.tools.bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--models", default="resnet18", help="comma-separated registry names")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=None, help="default: each model's native")
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="time both loops this many times, in turn (medians, with their range)",
    )
    parser.add_argument("--no-lightning", action="store_true", help="skip the Lightning timing")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in models.available()]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; available: {', '.join(models.available())}")
    if [n for n in names if models.MODELS.get(n).task != "classification"]:
        parser.error("zoo.tools.bench times classifiers; unet is a segmentation network")
    if args.batch_size < 1 or args.steps < 1 or args.rounds < 1 or args.warmup < 0:
        parser.error("--batch-size, --steps and --rounds must be >= 1, --warmup >= 0")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda, but no CUDA device is available")
    args.model_names = names
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_library_noise()
    torch.backends.cudnn.benchmark = True
    try:
        results = [bench_model(name, args) for name in args.model_names]
    except ValueError as err:  # e.g. an image size too small for a model
        print(f"zoo.tools.bench: error: {err}", file=sys.stderr)
        return 2
    print_table(results)
    print(markdown_table(results))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
