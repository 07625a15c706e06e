"""The steps of the GPU check (``benchmarks.gpu_check``) that run in Python, each in a process of
its own, so that a crash or a hung GPU loses that step alone:

    python -m benchmarks.gpu_check_steps {mnist,resnet18,models,imagenet,profile} --out DIR

Each writes ``DIR/<step>.json`` after every row it measures: what was measured before a failure
or a timeout is kept. Also the callbacks that the check's train.py runs take:
``PeakMemory`` (a run's peak GPU memory) and ``TorchProfile`` (a short torch.profiler table).

``GPU_CHECK_DRY=1``: on the CPU at toy sizes, torch.compile with the eager backend (inductor's
C++ compilation takes minutes on two cores; the dynamo tracing, the part that breaks, still runs).
"""

from __future__ import annotations

import argparse
import functools
import gc
import gzip
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.gpu_check import (
    REPO_ROOT,
    RESNET18_OPTIONS,
    STAGED_MNIST,
    data_dir,
    dry_run,
)
from zoo.core.logs import quiet_library_noise
from zoo.tools import bench

DRY = dry_run()
DEVICE = torch.device("cpu" if DRY else "cuda")


class Results:
    """A step's rows and notes, rewritten to ``<out>/<step>.json`` after each change."""

    def __init__(self, out: Path, step: str) -> None:
        self.path = out / f"{step}.json"
        self.rows: list[dict[str, Any]] = []
        self.notes: dict[str, Any] = {}

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.save()

    def failed(self, row: dict[str, Any], err: BaseException) -> None:
        """The row, with the error that stopped it; the traceback goes to the step's log."""
        traceback.print_exception(err)
        self.add({**row, "error": f"{type(err).__name__}: {err}".splitlines()[0][:300]})

    def save(self) -> None:
        partial = self.path.with_suffix(".tmp")
        partial.write_text(json.dumps({"rows": self.rows, "notes": self.notes}, indent=2) + "\n")
        partial.replace(self.path)


def free_memory() -> None:
    """Between rows: the next row's peak memory is its own, and compiled graphs go."""
    torch._dynamo.reset()
    gc.collect()
    if DEVICE.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(DEVICE)


def peak_memory_mb() -> float:
    return bench.peak_memory_mb(DEVICE)


def use_eager_compile() -> None:
    """The dry run's torch.compile: dynamo traces as on the GPU, without inductor's codegen."""
    compile_ = torch.compile
    torch.compile = functools.partial(compile_, backend="eager")  # type: ignore[assignment]


def bench_args(
    channels_last: bool = False, compile: bool = False, warmup: int = 3, steps: int = 10
) -> argparse.Namespace:
    """zoo.tools.bench's arguments for one row: batch 256 at 224 px in bf16 (a toy batch in the
    dry run)."""
    # One round: the check's time budget is sized for it.
    argv = ["--models", "resnet18", "--precision", "bf16", "--device", DEVICE.type, "--rounds", "1"]
    if DRY:
        argv += ["--batch-size", "2", "--image-size", "64", "--warmup", str(min(warmup, 1))]
        argv += ["--steps", str(min(steps, 2))]
    else:
        argv += ["--batch-size", "256", "--image-size", "224"]
        argv += ["--warmup", str(warmup), "--steps", str(steps)]
    if channels_last:
        argv.append("--channels-last")
    if compile:
        argv.append("--compile")
    return bench.parse_args(argv)


def bench_row(label: str, kind: str, options: str, result: bench.BenchResult) -> dict[str, Any]:
    return {"row": label, "kind": kind, "options": options, "device_type": DEVICE.type,
            **asdict(result)}  # fmt: skip


def timm_result(args: argparse.Namespace) -> bench.BenchResult:
    """timm's resnet18 through zoo.tools.bench's plain loop, on a batch like bench_model's."""
    import timm

    model = timm.create_model("resnet18", num_classes=args.num_classes)
    size = args.image_size
    images = torch.randn(args.batch_size, 3, size, size, device=DEVICE)
    targets = torch.randint(0, args.num_classes, (args.batch_size,), device=DEVICE)
    timings = bench.plain_loop(model, (images, targets), args)
    return bench.bench_result("timm resnet18", DEVICE, size, args, [timings])


def timm_missing() -> str | None:
    try:
        import timm  # noqa: F401
    except ImportError:
        return "timm not installed"
    return None


def step_resnet18(out: Path) -> None:
    """ResNet18 at 224 px, bf16, for each option set: the zoo's plain loop and Lightning, then
    timm's resnet18 through the same plain loop (compile last: it takes longest)."""
    results = Results(out, "resnet18")
    missing = timm_missing()
    for options, (channels_last, compile_) in RESNET18_OPTIONS.items():
        args = bench_args(channels_last, compile_, warmup=5, steps=30)
        label = {"row": f"resnet18 {options}", "kind": "zoo", "options": options}
        try:
            results.add(
                bench_row(label["row"], "zoo", options, bench.bench_model("resnet18", args))
            )
        except Exception as err:  # one row's failure must not cost the others
            results.failed(label, err)
        free_memory()
        label = {"row": f"timm resnet18 {options}", "kind": "timm", "options": options}
        if missing:
            results.add({**label, "error": missing})
            continue
        try:
            results.add(bench_row(label["row"], "timm", options, timm_result(args)))
        except Exception as err:
            results.failed(label, err)
        free_memory()


def toy_image_size(name: str) -> int:
    from zoo import models

    spec = models.input_spec(name, num_classes=1000, in_channels=3)
    return spec.native if spec.exact else max(32, spec.minimum)


def step_models(out: Path) -> None:
    """Every other classifier at its native size, bf16 + channels_last."""
    from zoo import models

    results = Results(out, "models")
    names = [n for n in models.available() if models.MODELS.get(n).task == "classification"]
    for name in (n for n in names if n != "resnet18"):
        # In the dry run one step each: VGG's 120 M parameters take a second an SGD step there.
        args = bench_args(channels_last=True, warmup=0 if DRY else 3, steps=1 if DRY else 10)
        args.image_size = toy_image_size(name) if DRY else None
        label = {"row": f"{name} bf16 + channels_last", "kind": "zoo"}
        try:
            result = bench.bench_model(name, args)
            results.add(bench_row(label["row"], "zoo", "bf16 + channels_last", result))
        except Exception as err:
            results.failed(label, err)
        free_memory()


# --- the ImageNet input pipeline ------------------------------------------------------------

# (distinct JPEGs, links to each, batch, workers, timed passes); 8,192 files in the GPU run.
PIPELINE = (16, 2, 8, 2, 1) if DRY else (256, 32, 256, 16, 2)
PIPELINE_CLASSES = 8


def jpeg_tree(root: Path, distinct: int, links: int) -> Path:
    """An ImageNet-layout tree of generated JPEGs, each file hard-linked ``links`` times under
    further names: encoding thousands of 500x375 JPEGs would take most of the step's budget,
    and decoding a copy costs what decoding the original does."""
    from benchmarks.imagenet_pipeline import write_jpeg_tree

    per_class = distinct // PIPELINE_CLASSES
    write_jpeg_tree(root, PIPELINE_CLASSES, per_class, 1)
    for path in sorted(root.glob("train/*/*.JPEG")):
        wnid, index = path.stem.rsplit("_", 1)
        for copy in range(1, links):
            os.link(path, path.with_name(f"{wnid}_{int(index) + copy * per_class}.JPEG"))
    return root


def step_imagenet(out: Path) -> None:
    """benchmarks.imagenet_pipeline's measurement on the device, both decoders."""
    from benchmarks.imagenet_pipeline import measure

    results = Results(out, "imagenet")
    distinct, links, batch_size, workers, epochs = PIPELINE
    with tempfile.TemporaryDirectory() as tmp:
        root = jpeg_tree(Path(tmp), distinct, links)
        for decode in ("gpu", "cpu"):
            row = {"row": f"ImageNet pipeline decode={decode}", "decode": decode,
                   "batch_size": batch_size, "workers": workers, "images": distinct * links,
                   "size": "500x375", "device_type": DEVICE.type}  # fmt: skip
            try:
                rate = measure(root, decode, batch_size, workers, 224, DEVICE, epochs)
                results.add({**row, "images_per_s": rate, "peak_memory_mb": peak_memory_mb()})
            except Exception as err:
                results.failed(row, err)
            free_memory()


# --- MNIST, and what the machine runs -------------------------------------------------------


def synthetic_mnist(target: Path) -> None:
    """MNIST-format stand-ins (class k: a bright bar at its own height) for a dry run on a
    machine without the real files."""
    from zoo.data.mnist.files import raw_dir, write_idx

    rng = np.random.default_rng(0)
    folder = raw_dir(target)
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", 2000), ("t10k", 500)):
        labels = np.arange(count) % 10
        images = rng.integers(0, 60, size=(count, 28, 28), dtype=np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 + 2 * label : 5 + 2 * label, 4:24] = 255
        write_idx(folder / f"{split}-images-idx3-ubyte", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte", labels.astype(np.uint8))


def unpack_mnist(source: Path, target: Path) -> None:
    from zoo.data.mnist.files import MNIST_MD5, raw_dir

    folder = raw_dir(target)
    folder.mkdir(parents=True, exist_ok=True)
    for name in MNIST_MD5:
        partial = folder / f"{name}.tmp"
        with gzip.open(source / f"{name}.gz", "rb") as packed, partial.open("wb") as raw:
            shutil.copyfileobj(packed, raw)
        partial.replace(folder / name)


def step_mnist(out: Path) -> None:
    """The real MNIST where train.py looks for it, unpacked from the staged .gz files and
    checked against the published md5s; the dry run unpacks into --out instead. Also the
    versions and device, for the summary's first line."""
    from zoo.data.mnist.files import MNIST_MD5, raw_dir, verified

    results = Results(out, "mnist")
    results.notes["environment"] = environment()
    results.save()
    staged = REPO_ROOT / STAGED_MNIST
    home = data_dir()
    target = out / "mnist" if DRY else home
    packed = all((staged / f"{name}.gz").is_file() for name in MNIST_MD5)
    verify = True
    if verified(raw_dir(target)):
        source = f"already in {raw_dir(target)}"
    elif packed:
        unpack_mnist(staged, target)
        source = f"unpacked from {STAGED_MNIST}"
    elif DRY and verified(raw_dir(home)):
        target, source = home, f"already in {raw_dir(home)}"
    elif DRY:
        synthetic_mnist(target)
        source, verify = "synthetic stand-in (no real MNIST here)", False
    else:
        raise FileNotFoundError(
            f"no MNIST in {raw_dir(home)} and none staged in {STAGED_MNIST}/: run "
            "`make gpu-stage` in this repository on a machine with network first"
        )
    if verify and not verified(raw_dir(target)):
        raise ValueError(f"the MNIST files in {raw_dir(target)} do not match the published md5s")
    results.notes.update(data_dir=str(target), verify=verify, source=source)
    results.save()
    print(f"MNIST: {source}")


def environment() -> dict[str, Any]:
    import lightning_fabric

    info = {
        "torch": torch.__version__,
        "lightning": pl.__version__,
        "fabric": lightning_fabric.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    if DEVICE.type == "cuda":
        info["device"] = torch.cuda.get_device_name(DEVICE)
        info["memory_gb"] = torch.cuda.get_device_properties(DEVICE).total_memory / 1e9
    else:
        info["device"] = f"CPU ({platform.processor() or platform.machine()})"
    try:
        import timm

        info["timm"] = timm.__version__
    except ImportError:
        info["timm"] = None
    return info


# --- profiles -------------------------------------------------------------------------------


def activities() -> list[ProfilerActivity]:
    return [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEVICE.type == "cuda" else [])


def self_time(event: Any, device: bool) -> float:
    """An op's own time in microseconds, on the device or the CPU."""
    if not device:
        return float(event.self_cpu_time_total)
    for name in ("self_device_time_total", "self_cuda_time_total"):
        if hasattr(event, name):
            return float(getattr(event, name))
    return 0.0


def write_profile(prof: profile, row: str, out: Path) -> None:
    """profile_<row>.txt (the top ops by self device time, then by self CPU time) and
    profile_<row>.json (the top ones, with their share), for the summary."""
    averages = prof.key_averages()
    on_device = DEVICE.type == "cuda"
    key = "self_cuda_time_total" if on_device else "self_cpu_time_total"
    text = [f"# {row}: top ops by {key}", averages.table(sort_by=key, row_limit=25)]
    if on_device:
        text += ["", f"# {row}: top ops by self_cpu_time_total"]
        text.append(averages.table(sort_by="self_cpu_time_total", row_limit=25))
    (out / f"profile_{row}.txt").write_text("\n".join(text) + "\n")
    total = sum(self_time(e, on_device) for e in averages) or 1.0
    top = sorted(averages, key=lambda e: self_time(e, on_device), reverse=True)[:10]
    ops = [{"op": e.key, "ms": self_time(e, on_device) / 1e3, "calls": e.count,
            "share": self_time(e, on_device) / total} for e in top]  # fmt: skip
    clock = "CUDA" if on_device else "CPU"
    (out / f"profile_{row}.json").write_text(json.dumps({"clock": clock, "top": ops}, indent=2))
    print("\n".join(text))


@contextmanager
def profiled(row: str, out: Path) -> Iterator[None]:
    with profile(activities=activities()) as prof:
        yield
        bench.synchronize(DEVICE)
    write_profile(prof, row, out)


def profile_resnet18(out: Path, args: argparse.Namespace) -> None:
    """A few training steps of the plain loop at the row's options, warmed up (and compiled)
    before the profiler starts."""
    from zoo import models
    from zoo.tasks.classification import classification_loss
    from zoo.tasks.optim import build_optimizer

    spec, size = bench.model_spec("resnet18", args.image_size, args.num_classes)
    model = models.build("resnet18", **{k: v for k, v in spec.items() if k != "name"}).to(DEVICE)
    images = torch.randn(args.batch_size, 3, size, size, device=DEVICE)
    targets = torch.randint(0, args.num_classes, (args.batch_size,), device=DEVICE)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = build_optimizer(model.parameters(), bench.OPTIMIZER)
    forward = torch.compile(model) if args.compile else model

    def train_step() -> None:
        with bench.autocast(DEVICE, args.precision):
            loss, _ = classification_loss(forward(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        train_step()
    bench.synchronize(DEVICE)
    with profiled("resnet18", out):
        for _ in range(args.steps):
            train_step()


def profile_lightning(out: Path, args: argparse.Namespace) -> None:
    """bench's Lightning loop at the row's options, without compile: its compilation would
    fill the profile, and the overhead sought is the host's."""
    args.compile = False
    spec, size = bench.model_spec("resnet18", args.image_size, args.num_classes)
    images = torch.randn(args.batch_size, 3, size, size, device=DEVICE)
    targets = torch.randint(0, args.num_classes, (args.batch_size,), device=DEVICE)
    bench.lightning_loop(spec, (images, targets), args)  # warm-up: cudnn's choices, CUDA setup
    with profiled("lightning", out):
        bench.lightning_loop(spec, (images, targets), args)


def profile_imagenet_gpu(out: Path) -> None:
    """A few batches through the decode=gpu pipeline, after the first ones."""
    from zoo.data.imagenet.imagenet import ImageNetDataModule

    distinct, _, batch_size, workers, _ = PIPELINE
    with tempfile.TemporaryDirectory() as tmp:
        root = jpeg_tree(Path(tmp), distinct, 4)
        datamodule = ImageNetDataModule(root=str(root), batch_size=batch_size,
                                        num_workers=workers, image_size=224, decode="gpu",
                                        classes=PIPELINE_CLASSES)  # fmt: skip
        datamodule.setup("fit")
        batches = iter(datamodule.train_dataloader())

        def one_batch() -> None:
            batch = datamodule.transfer_batch_to_device(next(batches), DEVICE, 0)
            datamodule.on_after_batch_transfer(batch, 0)

        one_batch()
        bench.synchronize(DEVICE)
        with profiled("imagenet_gpu", out):
            for _ in range(3):
                one_batch()


def step_profile(out: Path, row: str, channels_last: bool, compile_: bool) -> None:
    if row == "resnet18":
        profile_resnet18(out, bench_args(channels_last, compile_, warmup=5, steps=5))
    elif row == "lightning":
        profile_lightning(out, bench_args(channels_last, compile_, warmup=2, steps=10))
    elif row == "imagenet_gpu":
        profile_imagenet_gpu(out)
    else:
        raise ValueError(f"no profile for row {row!r}")


# --- callbacks for the check's train.py runs -------------------------------------------------


class PeakMemory(pl.Callback):
    """Writes the peak memory of fit() (the GPU's max_memory_allocated; on a CPU the process's
    high-water mark) to ``path``: a train.py run records it nowhere else."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        device = trainer.strategy.root_device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        peak = bench.peak_memory_mb(trainer.strategy.root_device)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"peak_memory_mb": peak}) + "\n")


class TorchProfile(pl.Callback):
    """torch.profiler from on_train_start to on_train_end, written as profile_<row>.{txt,json}
    into ``out``: where a train.py run's training time goes."""

    def __init__(self, out: str, row: str) -> None:
        self.out, self.row = Path(out), row
        self.profiler: profile | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.profiler = profile(activities=activities())
        self.profiler.start()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.profiler is not None:
            bench.synchronize(trainer.strategy.root_device)
            self.profiler.stop()
            write_profile(self.profiler, self.row, self.out)
            self.profiler = None


STEPS: dict[str, Callable[..., None]] = {
    "mnist": step_mnist,
    "resnet18": step_resnet18,
    "models": step_models,
    "imagenet": step_imagenet,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check_steps")
    parser.add_argument("step", choices=[*STEPS, "profile"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--row", default=None, help="profile: resnet18, lightning, imagenet_gpu")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args(argv)
    quiet_library_noise()
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check_steps: no CUDA device (GPU_CHECK_DRY=1 runs on the CPU)", file=sys.stderr)
        return 2
    if DRY:
        use_eager_compile()
        torch.set_num_threads(min(2, torch.get_num_threads()))
    torch.backends.cudnn.benchmark = True  # as zoo.tools.bench and train.py run
    started = time.perf_counter()
    if args.step == "profile":
        step_profile(args.out, args.row, args.channels_last, args.compile)
    else:
        STEPS[args.step](args.out)
    print(f"{args.step}: {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
