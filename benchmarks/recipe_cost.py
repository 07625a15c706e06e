"""What each training-recipe feature costs on the CPU (docs/benchmarks.md, "Training recipes"):

    python -m benchmarks.recipe_cost [--steps 60] [--threads 1]

- per training step of LeNet-5 at batch 128 on 32x32 MNIST-sized inputs, through the task
  module's own training_step, with EMA (Lightning's AveragedModel update), MixUp, CutMix;
- per ImageNet training image (a 500x375 uint8 photo to a 224 crop), each augmentation policy
  and random erasing, as a DataLoader worker (or the decode=gpu path) runs them.

Median milliseconds over the repetitions, after a warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_avg_fn

from zoo.data.imagenet.transforms import AUTO_AUGMENT, train_transform
from zoo.tasks.build import build_task

LENET = {"name": "lenet", "num_classes": 10, "in_channels": 1}
ADAM = {"name": "adam", "lr": 1e-3}


def median_ms(steps: dict[str, Callable[[], object]], repeats: int, warmup: int = 5) -> dict:
    """Median milliseconds of each step, the steps taking turns, so that a machine whose load
    changes (a shared one) weighs on all of them alike."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(values) for name, values in times.items()}


def training_step_costs(repeats: int) -> dict[str, float]:
    images = torch.rand(128, 1, 32, 32)
    labels = torch.randint(0, 10, (128,))
    features = {
        "baseline": {},
        "+ mixup (alpha 0.2, every batch)": {"mixing": {"mixup_alpha": 0.2, "mixup_prob": 1.0}},
        "+ cutmix (alpha 1.0, every batch)": {"mixing": {"cutmix_alpha": 1.0, "cutmix_prob": 1.0}},
    }
    steps: dict[str, Callable[[], object]] = {}
    for name, options in features.items():
        module = build_task(LENET, ADAM, None, None, options)
        module.log_split = lambda *args: None  # no Trainer to log to
        optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)

        def step(module=module, optimizer=optimizer) -> None:
            optimizer.zero_grad()
            module.training_step((images, labels), 0).backward()
            optimizer.step()

        steps[name] = step
        if module.mixing is not None:
            steps[f"{name.lstrip('+ ')}: the mixing alone"] = partial(module.mixing, images, labels)
    module = build_task(LENET, ADAM, None, None, {})
    average = AveragedModel(module, avg_fn=get_ema_avg_fn(0.999), use_buffers=True)
    steps["ema: the average's update alone (decay 0.999)"] = partial(
        average.update_parameters, module
    )
    return median_ms(steps, repeats)


def augmentation_costs(repeats: int) -> dict[str, float]:
    photo = torch.randint(0, 256, (3, 375, 500), dtype=torch.uint8)
    pipelines = {"crop + flip": train_transform(224)}
    for policy in AUTO_AUGMENT:
        pipelines[f"+ {policy}"] = train_transform(224, auto_augment=policy)
    pipelines["+ random erasing (p=1)"] = train_transform(224, random_erasing=1.0)
    return median_ms({name: partial(p, photo) for name, p in pipelines.items()}, repeats)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="repetitions of each measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.steps}")
    print("\nLeNet-5 training step, batch 128, 32x32 | ms")
    for name, ms in training_step_costs(args.steps).items():
        print(f"{name} | {ms:.2f}")
    print("\nImageNet training image, 500x375 -> 224 | ms")
    for name, ms in augmentation_costs(args.steps).items():
        print(f"{name} | {ms:.2f}")


if __name__ == "__main__":
    main()
