"""How many intra-op threads train.py should use on this machine: wall time and peak RSS.

    python -m benchmarks.threads [--threads 1 2 auto] [--repeats 1] [--jobs ...]

Runs short `train.py` jobs (LeNet-5's default recipe and ResNet-18 on MNIST) at each thread count
(the `trainer.threads=` option), once on an idle machine and once beside one other busy process
(a Python loop holding one core, as another user's job would), and prints one row per run:
the wall seconds of the command (imports included) and its peak resident set size
(`/usr/bin/time -v`).
Start it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

REPO = Path(__file__).resolve().parents[1]

# name -> the overrides of train.py's default recipe
JOBS: dict[str, list[str]] = {
    "lenet (default recipe, 2 epochs)": ["trainer.max_epochs=2"],
    "resnet18_mnist (10 steps)": [
        "experiment=resnet18_mnist",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=10",
        "trainer.limit_val_batches=2",
    ],
}


@dataclass
class Row:
    job: str
    threads: str
    load: str
    wall_s: list[float]
    peak_rss_gb: float

    def line(self) -> str:
        wall = statistics.median(self.wall_s)
        spread = f" ({min(self.wall_s):.1f}-{max(self.wall_s):.1f})" if len(self.wall_s) > 1 else ""
        cells = [
            self.job,
            self.threads,
            self.load,
            f"{wall:.1f}{spread}",
            f"{self.peak_rss_gb:.2f}",
        ]
        return "| " + " | ".join(cells) + " |"


@contextmanager
def busy_core(on: bool):
    """One other process holding one core for the whole run, or nothing."""
    if not on:
        yield
        return
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)
        yield
    finally:
        hog.kill()
        hog.wait()


def run_once(overrides: list[str], threads: str, out: Path) -> tuple[float, float]:
    """(wall seconds of the whole command, its peak RSS in GB)."""
    command = [
        "/usr/bin/time",
        "-v",
        sys.executable,
        "train.py",
        *overrides,
        f"trainer.threads={threads}",
        "test=false",
        "logger=none",
        f"hydra.run.dir={out}",
    ]
    environment = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    start = time.perf_counter()
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, check=False, env=environment
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"threads: {' '.join(command)} failed:\n{done.stderr[-2000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    return wall, rss_kb / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--threads", nargs="+", default=["1", "2", "auto"], help="trainer.threads values"
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--loads", nargs="+", default=["idle", "one busy core"])
    parser.add_argument("--jobs", nargs="+", default=list(JOBS), choices=list(JOBS))
    args = parser.parse_args()
    print("| job | trainer.threads | machine | wall s | peak RSS GB |")
    print("|---|---|---|---|---|")
    for job in args.jobs:
        overrides = JOBS[job]
        for load in args.loads:
            for threads in args.threads:
                walls, rss = [], 0.0
                with busy_core(load != "idle"), TemporaryDirectory() as tmp:
                    for repeat in range(args.repeats):
                        wall, peak = run_once(overrides, threads, Path(tmp) / str(repeat))
                        walls.append(wall)
                        rss = max(rss, peak)
                print(Row(job, threads, load, walls, rss).line(), flush=True)


if __name__ == "__main__":
    main()
