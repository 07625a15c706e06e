"""Where a training step's time goes under train.py's own config: microseconds per step.

    python -m benchmarks.step_profile                        # LeNet-5 on real MNIST, batch 128
    python -m benchmarks.step_profile --steps 400 --rounds 3 --json step_profile.json
    python -m benchmarks.step_profile experiment=lenet_mnist_fast trainer.accelerator=gpu

Three measurements, all of the same composed ``zoo/configs/train.yaml`` (plus any overrides):

1. **Ablations.** ``--steps`` training steps through ``zoo.training.run.train`` (train.py's
   path: TensorBoard, every callback, the progress bar), once as configured and once with each
   part switched off in turn: the difference in wall time per step is that part's cost, hooks,
   host syncs and all. Plus the same steps with no callbacks and no logger ("Lightning alone"),
   and a plain PyTorch loop over the same model, optimizer, schedule and batches (transformed
   and distorted as the datamodule does). Each variant runs ``--rounds`` times, in turn, each
   in a fresh process, and the best time is kept.
2. **Lightning's SimpleProfiler** over the configured run: the time per step of each hook of
   Lightning's loop, of the module and of each callback.
3. **The module's per-step calls, alone**, on a batch of the run's shape: a metric called as a
   function (``forward``: the batch's value and the accumulation) against ``update``, the mean
   loss, ``self.log`` inside a live Trainer, and reading a loss on the host.

Validation, testing and checkpoints at epoch ends are left out (``trainer.limit_val_batches=0``,
``test=false``, fewer steps than an epoch): this is the cost of the step. The step checkpoint
(every 200 steps) falls inside the timed steps when ``--steps`` passes it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, open_dict
from pytorch_lightning.callbacks import Callback
from rich.console import Console
from rich.table import Table
from torchmetrics import MeanMetric

from zoo.core.config import compose_config, to_plain
from zoo.core.logs import quiet_library_noise
from zoo.tasks.base import ZooTask
from zoo.tasks.build import build_datamodule, image_size, task_from_config
from zoo.tools.bench import synchronize
from zoo.training.run import train

REPO_ROOT = Path(__file__).resolve().parents[1]

# (name, overrides that switch it off). The callbacks are zoo/configs/callbacks/default.yaml's.
ABLATIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Rich progress bar", ("callbacks.progress_bar=null",)),
    ("throughput (ImagesPerSecond)", ("callbacks.throughput=null",)),
    ("learning-rate monitor", ("callbacks.learning_rate_monitor=null",)),
    ("finite guard", ("callbacks.finite_guard=null",)),
    ("preemption (SIGTERM)", ("callbacks.preemption=null",)),
    ("resume state", ("callbacks.resume_state=null",)),
    ("step checkpoint (every 200 steps)", ("callbacks.step_checkpoint=null",)),
    ("TensorBoard logger", ("logger=none",)),
    ("per-image distortions", ("data.distortion=null",)),
)
# With every callback of the config switched off too (lightning_alone()).
WITHOUT_LOGGING_OR_CHECKPOINTS = (
    "logger=none",
    "trainer.enable_checkpointing=false",
    "trainer.enable_progress_bar=false",
)
# What every variant shares: the training steps alone, seeded, without the model summary
# printed at every start.
STEPS_ONLY = (
    "trainer.limit_val_batches=0",
    "trainer.num_sanity_val_steps=0",
    "test=false",
    "callbacks.model_summary=null",
    "trainer.enable_model_summary=false",
)


class StepClock(Callback):
    """Wall time from the start of training batch ``skip`` to the end of the last one, and
    Lightning's profiler's records, kept for the caller. (bench's timer runs to the end of
    training, which here would add the epoch-end checkpoint to the steps.)"""

    def __init__(self, skip: int) -> None:
        self.skip = skip
        self.start: float | None = None
        self.end = 0.0
        self.steps = 0
        self.profile: dict[str, list[float]] = {}

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.skip:
            synchronize(trainer.strategy.root_device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        synchronize(trainer.strategy.root_device)
        self.end = time.perf_counter()
        self.steps = trainer.global_step - self.skip

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.profile = dict(getattr(trainer.profiler, "recorded_durations", {}))

    @property
    def us_per_step(self) -> float:
        if self.start is None or self.steps < 1:
            raise RuntimeError("the run ended before the timed steps")
        return (self.end - self.start) / self.steps * 1e6


def run_variant(
    overrides: Sequence[str], steps: int, skip: int, profiler: bool = False
) -> StepClock:
    """``skip + steps`` training steps of the composed config through train.py's path."""
    clock = StepClock(skip)
    with tempfile.TemporaryDirectory(prefix="zoo-step-profile-") as out:
        cfg = compose_config(
            [*overrides, *STEPS_ONLY, f"trainer.max_steps={skip + steps}"], Path(out)
        )
        if profiler:
            with open_dict(cfg):
                cfg.trainer.profiler = "simple"
        train(cfg, Path(out), extra_callbacks=[clock])
    return clock


def plain_loop_us(overrides: Sequence[str], steps: int, skip: int) -> float:
    """Microseconds per step of a bare PyTorch loop: the task module's network, optimizer and
    schedule (configure_optimizers without a Trainer), the datamodule's batches with its batch
    transform and distortions, the task's loss; nothing logged, checked or saved."""
    with tempfile.TemporaryDirectory(prefix="zoo-step-profile-") as out:
        cfg = compose_config(list(overrides), Path(out))
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    module = task_from_config(cfg)
    size = image_size(module.model, cfg.data.get("image_size"), cfg.get("max_image_size"))
    datamodule = build_datamodule(to_plain(cfg.data), image_size=size)
    transform = getattr(datamodule, "transform", None)
    distort = getattr(datamodule, "distort", None)
    if transform is None:
        raise ValueError("the plain loop replays MNIST-style datamodules' batch transforms only")
    device = torch.device("cuda" if _on_gpu(cfg) else "cpu")
    datamodule.setup("fit")
    images_all, labels_all = datamodule.splits["train"].tensors
    images_all, labels_all = images_all.to(device), labels_all.to(device)
    # The module's own forward: channels_last and compile as the task options say.
    module.to(device).train()
    optimizer, scheduler = plain_optimizer(module, skip + steps)
    batch_size = cfg.data.batch_size

    def step(index: int) -> None:
        start = (index * batch_size) % (len(labels_all) - batch_size)
        images = transform(images_all[start : start + batch_size].unsqueeze(1))
        if distort is not None:
            images = distort(images)
        loss, _ = module.loss(module(images), labels_all[start : start + batch_size].long())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()

    for index in range(skip):
        step(index)
    synchronize(device)
    begin = time.perf_counter()
    for index in range(skip, skip + steps):
        step(index)
    synchronize(device)
    return (time.perf_counter() - begin) / steps * 1e6


def _on_gpu(cfg: DictConfig) -> bool:
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    return torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")


def plain_optimizer(module: ZooTask, total_steps: int) -> tuple[Any, Any]:
    """The module's own optimizer and step schedule, built as configure_optimizers builds them
    for a run of ``total_steps`` steps."""

    class _Trainer:  # what configure_optimizers reads of a Trainer
        estimated_stepping_batches = total_steps
        max_epochs = 1

    module._trainer = _Trainer()  # type: ignore[assignment]
    try:
        configured = module.configure_optimizers()
    finally:
        module._trainer = None
    if isinstance(configured, torch.optim.Optimizer):
        return configured, None
    return configured["optimizer"], configured["lr_scheduler"]["scheduler"]


def call_costs(overrides: Sequence[str], repeats: int = 300) -> dict[str, float]:
    """Microseconds per call of what the task module does at each step, on a batch of the
    run's shape: metric forward against update, the mean loss, ``self.log`` (timed inside a
    live Trainer, where it does its work), and reading a loss on the host."""
    with tempfile.TemporaryDirectory(prefix="zoo-step-profile-") as out:
        cfg = compose_config(list(overrides), Path(out))
    module = task_from_config(cfg)
    device = torch.device("cuda" if _on_gpu(cfg) else "cpu")
    module.to(device)
    classes, batch = module.model.num_classes, cfg.data.batch_size
    logits = torch.randn(batch, classes, device=device)
    targets = torch.randint(0, classes, (batch,), device=device)
    loss = torch.tensor(0.5, device=device)
    metrics = module.train_metrics
    weighted, unweighted = MeanMetric().to(device), MeanMetric(nan_strategy="disable").to(device)
    images = loss.expand(batch)

    def timed(call: Callable[[], object]) -> float:
        for _ in range(10):
            call()
        synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            call()
        synchronize(device)
        return (time.perf_counter() - start) / repeats * 1e6

    costs = {
        "metrics called as a function (forward)": timed(lambda: metrics(logits, targets)),
        "metrics.update": timed(lambda: metrics.update(logits, targets)),
        "MeanMetric().update(loss, weight=batch size)": timed(
            lambda: weighted.update(loss, weight=batch)
        ),
        'MeanMetric(nan_strategy="disable").update(loss.expand(batch size))': timed(
            lambda: unweighted.update(images)
        ),
        "loss.item() (a host sync on a GPU)": timed(loss.item),
    }
    costs["self.log of a tensor, in a running Trainer"] = _log_cost(device, repeats)
    return costs


def _log_cost(device: torch.device, repeats: int) -> float:
    """Microseconds per ``self.log("train/loss", loss)`` in training_step, the way Lightning
    runs it there (its result collection, the device move of each logged value)."""

    class Logs(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(1, 1)
            self.seconds = 0.0

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            loss = self.layer(batch[0]).sum()
            start = time.perf_counter()
            for _ in range(repeats):
                self.log("train/loss", loss, prog_bar=True, batch_size=1)
            self.seconds = time.perf_counter() - start
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.0)

    module = Logs()
    trainer = pl.Trainer(
        accelerator=device.type, devices=1, max_steps=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    data = torch.utils.data.DataLoader([(torch.ones(1),)], batch_size=None)
    trainer.fit(module, train_dataloaders=data)
    return module.seconds / repeats * 1e6


def lightning_alone(overrides: Sequence[str]) -> list[str]:
    """``overrides`` plus every callback of the composed config, the logger, checkpointing and
    the progress bar switched off: Lightning's loop and the task module."""
    with tempfile.TemporaryDirectory(prefix="zoo-step-profile-") as out:
        cfg = compose_config(list(overrides), Path(out))
    names = [f"callbacks.{name}=null" for name in (cfg.get("callbacks") or {})]
    return [*overrides, *names, *WITHOUT_LOGGING_OR_CHECKPOINTS]


def profile_per_step(records: dict[str, list[float]], steps: int) -> list[tuple[str, float]]:
    """SimpleProfiler's actions that run at every training step (at least ``steps`` calls),
    as microseconds per step, the costliest first; the callbacks' hooks summed per callback."""
    per_step: dict[str, float] = {}
    for action, durations in records.items():
        if len(durations) < steps:
            continue
        name = action
        if action.startswith("[Callback]"):
            # "[Callback]FiniteGuard.on_train_batch_end" -> "[Callback]FiniteGuard, every hook"
            name = action.rsplit(".", 1)[0].split("{")[0] + ", every hook"
        per_step[name] = per_step.get(name, 0.0) + sum(durations) / steps * 1e6
    return sorted(per_step.items(), key=lambda item: -item[1])


def measure_one(kind: str, overrides: Sequence[str], steps: int, skip: int) -> float:
    """Microseconds per step of one variant: ``train`` (train.py's path) or ``plain``."""
    if kind == "plain":
        return plain_loop_us(overrides, steps, skip)
    return run_variant(overrides, steps, skip).us_per_step


def in_subprocess(kind: str, overrides: Sequence[str], steps: int, skip: int) -> float:
    """:func:`measure_one` in a fresh interpreter: in one process, each run leaves threads and
    objects behind that slow the next ones (measured: up to 30%), whatever the variant."""
    command = [
        sys.executable, "-m", "benchmarks.step_profile", "--one", kind,
        "--steps", str(steps), "--skip", str(skip), "--", *overrides,
    ]  # fmt: skip
    # The benchmarks package is not installed: the child finds it where this one was found.
    paths = [str(REPO_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def measure(overrides: Sequence[str], steps: int, skip: int, rounds: int) -> dict[str, Any]:
    """Every variant ``rounds`` times, in turn, each in its own process; the best (lowest)
    time of each is kept, the least disturbed by whatever else the machine ran."""
    variants: dict[str, tuple[str, list[str]]] = {
        "as configured": ("train", list(overrides)),
        **{f"without {name}": ("train", [*overrides, *off]) for name, off in ABLATIONS},
        "Lightning alone": ("train", lightning_alone(overrides)),
        "plain": ("plain", list(overrides)),
    }
    rounds_us: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (kind, variant) in variants.items():
            rounds_us[name].append(in_subprocess(kind, variant, steps, skip))
    best = {name: min(values) for name, values in rounds_us.items()}
    full = best["as configured"]
    profiled = run_variant(overrides, steps, skip, profiler=True)
    return {
        "overrides": list(overrides),
        "steps": steps,
        "skip": skip,
        "rounds": rounds,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "us_per_step": best,
        "rounds_us_per_step": rounds_us,
        "cost_us_per_step": {name: full - best[f"without {name}"] for name, _ in ABLATIONS},
        "profiler_us_per_step": profile_per_step(profiled.profile, skip + steps),
        "calls_us": call_costs(overrides),
    }


def render(result: dict[str, Any]) -> str:
    """The three tables as markdown, for docs/benchmarks.md."""
    median = result["us_per_step"]
    full, plain = median["as configured"], median["plain"]
    lines = [
        f"Overrides: `{' '.join(result['overrides']) or '(none)'}`; {result['steps']} timed "
        f"steps after {result['skip']}, best of {result['rounds']} rounds (each run its own "
        f"process); {result['device']}.",
        "",
        "| run | µs per step | over the plain loop |",
        "|---|---:|---:|",
    ]
    for name in ("as configured", "Lightning alone", "plain"):
        lines.append(f"| {name} | {median[name]:,.0f} | {median[name] / plain - 1:+.1%} |")
    lines += ["", "| switched off | µs per step without it | its cost, µs per step |",
              "|---|---:|---:|"]  # fmt: skip
    for name, cost in result["cost_us_per_step"].items():
        lines.append(f"| {name} | {median[f'without {name}']:,.0f} | {cost:+,.0f} |")
    lines += ["", f"Lightning's SimpleProfiler, as configured ({full:,.0f} µs per step):", "",
              "| action | µs per step |", "|---|---:|"]  # fmt: skip
    for action, us in result["profiler_us_per_step"][:25]:
        lines.append(f"| `{action}` | {us:,.1f} |")
    lines += ["", "| call, alone | µs per call |", "|---|---:|"]
    for call, us in result["calls_us"].items():
        lines.append(f"| {call} | {us:,.1f} |")
    return "\n".join(lines)


def print_summary(result: dict[str, Any]) -> None:
    table = Table(title="benchmarks.step_profile: µs per training step")
    table.add_column("run")
    table.add_column("µs/step", justify="right")
    for name, us in result["us_per_step"].items():
        table.add_row(name, f"{us:,.0f}")
    Console().print(table)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.step_profile", description=__doc__.split("\n")[0]
    )
    parser.add_argument("overrides", nargs="*", help="train.py overrides (key=value)")
    parser.add_argument("--steps", type=int, default=300, help="timed steps per run")
    parser.add_argument("--skip", type=int, default=30, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each variant (best)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--markdown", type=Path, default=None, help="write the tables here")
    # One variant, its microseconds per step printed last (what measure() runs per process).
    parser.add_argument("--one", choices=("train", "plain"), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.skip < 0 or args.rounds < 1:
        parser.error("--steps and --rounds must be >= 1, --skip >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_library_noise()
    # Each variant is a whole run: keep their start-up notices off the report.
    for name in ("pytorch_lightning", "lightning_fabric", "zoo"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if args.one:
        print(measure_one(args.one, args.overrides, args.steps, args.skip))
        return 0
    result = measure(args.overrides, args.steps, args.skip, args.rounds)
    print_summary(result)
    markdown = render(result)
    print(markdown)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(markdown + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
