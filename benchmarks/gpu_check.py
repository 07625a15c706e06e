"""The GPU check: every CUDA path run once, and the GPU speed targets of docs/benchmarks.md
measured beside timm's, in at most 8 minutes.

    make gpu-stage                                   # online: the packages and MNIST it needs
    make gpu-check PY=python3                        # on the GPU: python -m benchmarks.gpu_check
    GPU_CHECK_DRY=1 python -m benchmarks.gpu_check --out /tmp/rehearsal   # the CPU rehearsal

Steps, each in a process of its own with its own time budget, all within ``--budget``: a step
that fails or runs out of time is recorded (status, error, log) and the next one runs. They
install the staged wheels, unpack the staged MNIST, run ``pytest -m gpu``, time ResNet18 (three
option sets, plain loop vs Lightning, beside timm's resnet18), the ImageNet input pipeline,
``experiment=lenet_mnist_fast`` with MNIST resident and not, and the other models; then a short
torch.profiler run of each row that misses its target. Everything goes to ``--out`` (``bench/``):
JSON per step, logs/, profiles, and summary.md, which is also printed.

With ``GPU_CHECK_DRY=1`` the same steps run on the CPU at toy sizes (torch.compile with the eager
backend, the GPU tests in their CPU form): their numbers say that the steps work, nothing more.
Without CUDA and without it, the check stops at once with one line.

This module imports nothing heavy, so that it can say so at once; the steps that run Python
are in ``benchmarks.gpu_check_steps``.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
# What `make gpu-stage` downloads, while online, for an offline GPU machine (both git-ignored):
# the packages its Python lacks, as wheels, and MNIST's four IDX files, gzipped.
WHEELS = Path(".whl")
STAGED_MNIST = Path("data/MNIST/gz")

# The dense bf16 peak of the H100 SXM, whose tensor cores the H200 shares. Lightning's table gives
# the H200 2.0e15 FLOP/s, the sparse figure, and no entry of it matches "NVIDIA H200".
DENSE_BF16_PEAK = 989.4e12

# The GPU targets (docs/benchmarks.md, "GPU").
RESNET18_IMAGES_PER_S = 15_000
LIGHTNING_OVERHEAD = 0.03
LENET_ACCURACY, LENET_FIT_SECONDS = 0.99, 2.0
PIPELINE_IMAGES_PER_S = 15_000

# ResNet18's option sets, each measured for the zoo (plain loop and Lightning) and for timm.
RESNET18_OPTIONS = {
    "bf16": (False, False),
    "bf16 + channels_last": (True, False),
    "bf16 + channels_last + compile": (True, True),
}
LENET_ROWS = {"lenet_fast_resident": True, "lenet_fast_host": False}

# Seconds per step (on the GPU, in the dry run): caps, whose sum the whole budget may cut short.
BUDGETS: dict[str, tuple[float, float]] = {
    "setup": (60, 180),
    "mnist": (30, 120),
    "pytest": (150, 900),
    "resnet18": (170, 480),
    "lenet_fast_resident": (45, 240),
    "lenet_fast_host": (45, 240),
    "imagenet": (50, 240),
    "models": (80, 480),
    "profile": (40, 240),
}
TOTAL_BUDGET = (465.0, 3000.0)  # 8 minutes for `make gpu-check`, less what make and pip take
SUMMARY_RESERVE = 5.0  # kept back for the summary
MIN_STEP_SECONDS = 10.0  # a step given less than this would only start up and be stopped

# The rows summary.md always has, measured or not (tests/benchmarks/test_gpu_check.py checks them).
TARGET_ROWS = (
    "pytest -m gpu",
    "ResNet18 224 px bf16 training",
    "Lightning overhead on ResNet18",
    "lenet_mnist_fast, MNIST resident",
    "ImageNet input pipeline, decode=gpu",
)


def dry_run() -> bool:
    return os.environ.get("GPU_CHECK_DRY", "") not in ("", "0")


def default_out() -> Path:
    return Path(os.environ.get("GPU_CHECK_OUT") or REPO_ROOT / "bench")


def data_dir() -> Path:
    """Where train.py looks for MNIST by default (zoo/configs/paths/default.yaml)."""
    return Path(os.environ.get("ZOO_DATA_DIR") or REPO_ROOT / "data")


@dataclass
class Step:
    name: str
    title: str
    budget: float
    status: str = "not run"  # ok, failed, timed out, skipped
    seconds: float = 0.0
    error: str = ""
    log: str = ""


_ERROR_LINE = re.compile(r"(\w+(Error|Exception|Interrupt)\b|^Error: |^E\s|FAILED|error:)")


def last_error(log: Path) -> str:
    """The line of a step's log that best says what went wrong: the last exception or error
    line, else the last line."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    for line in reversed(lines[-300:]):
        if _ERROR_LINE.search(line):
            return line[:240]
    return lines[-1][:240] if lines else "no output"


class Check:
    """Runs the steps within their budgets and keeps their records."""

    def __init__(self, out: Path, budget: float, dry: bool) -> None:
        self.out, self.budget, self.dry = out, budget, dry
        self.start = time.monotonic()
        self.deadline = self.start + budget
        self.steps: list[Step] = []
        paths = [str(REPO_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        # Full tracebacks in the logs: a failure on the GPU machine may not be rerun soon.
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "1"}
        self.env["PYTHONPATH"] = os.pathsep.join(paths)
        (out / "logs").mkdir(parents=True, exist_ok=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def budget_of(self, key: str) -> float:
        gpu, dry = BUDGETS[key]
        return dry if self.dry else gpu

    def run(
        self,
        name: str,
        title: str,
        command: Sequence[str],
        budget_key: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Step:
        step = Step(name, title, self.budget_of(budget_key or name))
        self.steps.append(step)
        left = self.deadline - time.monotonic() - SUMMARY_RESERVE
        if left < MIN_STEP_SECONDS:
            step.status, step.error = "skipped", f"no time left of the check's {self.budget:.0f} s"
            self.report(step)
            return step
        timeout = min(step.budget, left)
        log = self.out / "logs" / f"{name}.log"
        step.log = str(log.relative_to(self.out))
        started = time.monotonic()
        with log.open("w") as output:
            output.write(f"$ {shlex.join(command)}\n")
            output.flush()
            # A session of its own: a timeout stops the step's whole tree (pytest's train.py
            # runs, DataLoader workers), which would otherwise hold on to the GPU.
            process = subprocess.Popen(
                list(command),
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                env={**self.env, **(env or {})},
                start_new_session=True,
            )
            try:
                code: int | None = process.wait(timeout)
            except subprocess.TimeoutExpired:
                code = None
            _kill_group(process)
        step.seconds = time.monotonic() - started
        if code == 0:
            step.status = "ok"
        elif code is None:
            step.status, step.error = "timed out", f"stopped at its budget of {timeout:.0f} s"
        else:
            step.status, step.error = "failed", f"exit {code}: {last_error(log)}"
        self.report(step)
        return step

    def record(self, name: str, title: str, status: str, error: str = "") -> Step:
        """A step done in this process (nothing to run, or too little to need a process)."""
        step = Step(name, title, 0.0, status, 0.0, error)
        self.steps.append(step)
        self.report(step)
        return step

    def report(self, step: Step) -> None:
        detail = f": {step.error}" if step.error else ""
        print(
            f"[{self.elapsed():5.0f} s] {step.name}: {step.status} ({step.seconds:.0f} s){detail}",
            flush=True,
        )

    def python(self, *args: str) -> list[str]:
        return [sys.executable, *args]

    def worker(self, step: str, *args: str) -> list[str]:
        (self.out / f"{step}.json").unlink(missing_ok=True)
        return self.python("-m", "benchmarks.gpu_check_steps", step, "--out", str(self.out), *args)


def _kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group may have ended with the step
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


# --- the steps ------------------------------------------------------------------------------


def install_wheels(check: Check) -> None:
    """The staged wheels into a folder of their own, first on every step's PYTHONPATH; the
    dry run installs them too, into --out, so that the rehearsal installs what was staged."""
    wheels = sorted((REPO_ROOT / WHEELS).glob("*.whl"))
    if not wheels:
        needed = ("hydra", "omegaconf", "torchinfo")
        missing = [name for name in needed if not importlib.util.find_spec(name)]
        if missing:
            error = f"{', '.join(missing)} missing and no {WHEELS}/ (make gpu-stage)"
            check.record("setup", "install the staged wheels", "failed", error)
        else:
            check.record("setup", "install the staged wheels", "ok", f"no {WHEELS}/: installed")
        return
    site = check.out / "site" if check.dry else Path("/tmp/site")
    command = check.python(
        "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
        "--no-cache-dir", "--upgrade", "--target", str(site), *map(str, wheels),
    )  # fmt: skip
    if check.run("setup", f"install {len(wheels)} staged wheels", command).status == "ok":
        check.env["PYTHONPATH"] = os.pathsep.join([str(site), check.env["PYTHONPATH"]])


def pytest_command(check: Check) -> list[str]:
    command = check.python(
        "-m", "pytest", "-m", "gpu", "-v", "-p", "no:cacheprovider", "--durations=15",
        f"--junitxml={check.out / 'pytest_gpu.xml'}",
    )  # fmt: skip
    if importlib.util.find_spec("pytest_timeout"):
        command.append(f"--timeout={300 if check.dry else 140}")
    # Each of the GPU tests' train.py runs spends most of its time starting up: several at once
    # keep the one GPU busy. (Not in the dry run: two shared cores.)
    if not check.dry and importlib.util.find_spec("xdist"):
        command += ["-n", "6"]
    (check.out / "pytest_gpu.xml").unlink(missing_ok=True)
    return command


def lenet_command(check: Check, row: str, resident: bool, mnist: Mapping[str, Any]) -> list[str]:
    run_dir = check.out / "runs" / row
    shutil.rmtree(run_dir, ignore_errors=True)
    command = check.python(
        "train.py", "experiment=lenet_mnist_fast", "trainer=gpu",
        f"data.device_resident={str(resident).lower()}",
        f"data.data_dir={_quoted(mnist.get('data_dir', data_dir()))}",
        f"data.verify={str(mnist.get('verify', True)).lower()}",
        f"hydra.run.dir={_quoted(run_dir)}",
        "+callbacks.peak_memory._target_=benchmarks.gpu_check_steps.PeakMemory",
        f"+callbacks.peak_memory.path={_quoted(run_dir / 'peak_memory.json')}",
    )  # fmt: skip
    if check.dry:
        command += [
            "trainer.accelerator=cpu", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
            "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
            "callbacks.progress_bar=null", "data.batch_size=64", "data.eval_batch_size=500",
        ]  # fmt: skip
        if not mnist.get("verify", True):  # the synthetic stand-in is smaller than val_size
            command.append("data.val_size=200")
    return command


def _quoted(path: object) -> str:
    # Quoted, a path is one string to Hydra's override parser, whatever its characters.
    return "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"


# --- results and targets --------------------------------------------------------------------


def load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def step_rows(out: Path, step: str) -> list[dict[str, Any]]:
    data = load_json(out / f"{step}.json") or {}
    return list(data.get("rows", []))


def lenet_result(out: Path, row: str) -> dict[str, Any] | None:
    metrics = load_json(out / "runs" / row / "metrics.json")
    if metrics is None:
        return None
    memory = load_json(out / "runs" / row / "peak_memory.json") or {}
    return {"row": row, **metrics, "peak_memory_mb": memory.get("peak_memory_mb")}


def pytest_result(out: Path, log: Path) -> dict[str, Any]:
    """Counts and failures from the JUnit XML, or, when a timeout left none, from the -v log."""
    counts = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
    failures: list[str] = []
    xml = out / "pytest_gpu.xml"
    if xml.is_file():
        for case in ET.parse(xml).getroot().iter("testcase"):
            name = f"{case.get('classname', '')}::{case.get('name', '')}"
            outcome = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "")
            outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}.get(
                outcome, "passed"
            )
            counts[outcome] += 1
            if outcome in ("failed", "error"):
                failures.append(name)
        return {**counts, "failures": failures, "source": "junit"}
    if log.is_file():
        seen: dict[str, str] = {}
        pattern = r"(tests/\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED)|(PASSED|FAILED|ERROR|SKIPPED) (tests/\S+::\S+)"  # noqa: E501
        for match in re.finditer(pattern, log.read_text(errors="replace")):
            name = match[1] or match[4]
            seen[name] = (match[2] or match[3]).lower()
        for name, outcome in seen.items():
            counts["error" if outcome == "error" else outcome] += 1
            if outcome in ("failed", "error"):
                failures.append(name)
    return {**counts, "failures": failures, "source": "log"}


def mfu(row: Mapping[str, Any]) -> float | None:
    """MFU against the dense bf16 peak, for GPU rows."""
    if row.get("device_type") != "cuda" or not row.get("step_ms"):
        return None
    return row["tflops_per_step"] * 1e12 / (row["step_ms"] / 1e3) / DENSE_BF16_PEAK


def best_resnet18(rows: Sequence[Mapping[str, Any]]) -> tuple[str | None, dict, dict]:
    """(the fastest measured option set, zoo rows by option set, timm rows by option set)."""
    zoo = {r["options"]: r for r in rows if r.get("kind") == "zoo" and r.get("train_images_per_s")}
    timm = {
        r["options"]: r for r in rows if r.get("kind") == "timm" and r.get("train_images_per_s")
    }
    best = max(zoo, key=lambda o: zoo[o]["train_images_per_s"]) if zoo else None
    return best, zoo, timm


@dataclass
class Target:
    name: str
    goal: str
    measured: str = "not measured"
    met: bool | None = None  # None: not measured, or not decidable (no timm to compare with)
    peak_memory_mb: float | None = None
    profile: str | None = None  # the profile step's --row, run when the target is missed
    profile_args: tuple[str, ...] = ()
    where: str = ""


def targets(results: Mapping[str, Any]) -> list[Target]:
    pytest_counts = results["pytest"]
    passed, failed = pytest_counts["passed"], pytest_counts["failed"] + pytest_counts["error"]
    tests = Target(
        TARGET_ROWS[0],
        "all pass" + ("" if results["dry"] else ", none skipped"),
        f"{passed} passed, {failed} failed, {pytest_counts['skipped']} skipped",
        passed > 0 and failed == 0 and (results["dry"] or pytest_counts["skipped"] == 0),
    )
    if failed:
        tests.where = "failing: " + ", ".join(pytest_counts["failures"][:6])

    best, zoo, timm = best_resnet18(results["resnet18"])
    throughput = Target(
        TARGET_ROWS[1], f"≥ {RESNET18_IMAGES_PER_S:,} img/s and ≥ timm's", profile="resnet18"
    )
    overhead = Target(TARGET_ROWS[2], f"≤ {LIGHTNING_OVERHEAD:.0%}", profile="lightning")
    if best is not None:
        ours, peer = zoo[best], timm.get(best)
        flags = _option_flags(best)
        throughput.profile_args = overhead.profile_args = flags
        throughput.peak_memory_mb = ours.get("peak_memory_mb")
        throughput.measured = f"{ours['train_images_per_s']:,.0f} img/s ({best})"
        fast = ours["train_images_per_s"] >= RESNET18_IMAGES_PER_S
        if peer is None:
            throughput.measured += ", no timm figure to compare with"
            throughput.met = False if not fast else None
        else:
            ratio = ours["train_images_per_s"] / peer["train_images_per_s"]
            throughput.measured += f", {ratio:.2f}x timm's {peer['train_images_per_s']:,.0f}"
            throughput.met = fast and ratio >= 1.0
        if ours.get("lightning_overhead") is not None:
            overhead.measured = f"{ours['lightning_overhead']:+.1%} ({best})"
            overhead.met = ours["lightning_overhead"] <= LIGHTNING_OVERHEAD

    lenet = Target(
        TARGET_ROWS[3],
        f"≥ {LENET_ACCURACY:.1%} test accuracy in ≤ {LENET_FIT_SECONDS:.0f} s of fit()",
        profile="lenet_fast",
    )
    resident = results["lenet"].get("lenet_fast_resident")
    if resident and "test/acc" in resident:
        lenet.measured = f"{resident['test/acc']:.2%} in {resident['fit_seconds']:.2f} s"
        lenet.met = (
            resident["test/acc"] >= LENET_ACCURACY and resident["fit_seconds"] <= LENET_FIT_SECONDS
        )
        lenet.peak_memory_mb = resident.get("peak_memory_mb")

    pipeline = Target(TARGET_ROWS[4], f"≥ {PIPELINE_IMAGES_PER_S:,} img/s", profile="imagenet_gpu")
    gpu_rows = [r for r in results["imagenet"] if r.get("decode") == "gpu" and "images_per_s" in r]
    if gpu_rows:
        pipeline.measured = f"{gpu_rows[0]['images_per_s']:,.0f} img/s"
        pipeline.met = gpu_rows[0]["images_per_s"] >= PIPELINE_IMAGES_PER_S
        pipeline.peak_memory_mb = gpu_rows[0].get("peak_memory_mb")
    return [tests, throughput, overhead, lenet, pipeline]


def _option_flags(options: str) -> tuple[str, ...]:
    channels_last, compile_ = RESNET18_OPTIONS[options]
    return (("--channels-last",) if channels_last else ()) + (("--compile",) if compile_ else ())


def profile_summary(out: Path, row: str) -> str:
    data = load_json(out / f"profile_{row}.json")
    if not data or not data.get("top"):
        return ""
    clock = data.get("clock", "CUDA")
    ops = ", ".join(f"{op['op'][:48]} {op['share']:.0%}" for op in data["top"][:3])
    return f"top ops by self {clock} time: {ops} (profile_{row}.txt)"


# --- the summary ----------------------------------------------------------------------------


def _cell(value: Any, pattern: str = "{:,.0f}") -> str:
    return "—" if value is None else pattern.format(value)


def _met(met: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "?"}[met]


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_summary(
    results: Mapping[str, Any], goals: Sequence[Target], steps: Sequence[Step]
) -> str:
    """summary.md: the targets, the speed rows, the pipeline and time-to-accuracy rows, the
    GPU tests, and the steps."""
    env = results["environment"]
    dry = results["dry"]
    lines = [
        "# GPU check",
        "",
        f"{env.get('device', '?')} · torch {env.get('torch', '?')} · Lightning "
        f"{env.get('lightning', '?')} · {env.get('date', '')} · {results['seconds']:.0f} s of "
        f"a {results['budget']:.0f} s budget",
        "",
    ]
    if dry:
        lines += [
            "**Dry run** (GPU_CHECK_DRY=1): every step on the CPU at toy sizes, torch.compile with "
            "the eager backend, the GPU tests in their CPU form. The numbers only show that the "
            "steps work; the targets are for the GPU.",
            "",
        ]
    lines += [
        f"MFU is against the dense bf16 peak, {DENSE_BF16_PEAK / 1e12:.1f} TFLOP/s: the H100 "
        "SXM's, whose tensor cores the H200 shares. (Lightning's table gives the H200 2.0e15 "
        "FLOP/s, the sparse figure, and none of its names matches 'NVIDIA H200'.) Peak memory is "
        "the GPU's max_memory_allocated"
        + (" (on the CPU: the process's high-water mark)" if dry else "")
        + ".",
        "",
        "## Targets",
        "",
        "| target | goal | measured | met | peak memory MB | where the time goes |",
        "|---|---|---|---|---:|---|",
    ]
    for t in goals:
        lines.append(
            f"| {t.name} | {t.goal} | {_escape(t.measured)} | {_met(t.met)} | "
            f"{_cell(t.peak_memory_mb)} | {_escape(t.where)} |"
        )

    lines += ["", "## ResNet18 at 224 px and the other models, bf16", ""]
    lines += [
        "Plain PyTorch loop and Lightning `Trainer` on the same synthetic batch "
        "(`zoo.tools.bench`); timm's resnet18 through the same plain loop. Gain: over the row "
        "above it, the option added.",
        "",
        "| row | batch | px | train img/s | step ms | MFU | Lightning img/s | Lightning "
        "overhead | timm img/s | ours / timm | gain | peak memory MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    _, zoo, timm = best_resnet18(results["resnet18"])
    previous = None
    for options in RESNET18_OPTIONS:
        row, peer = zoo.get(options), timm.get(options)
        note = _row_error(results["resnet18"], "zoo", options)
        timm_cell = _cell(peer["train_images_per_s"]) if peer else _timm_note(results, options)
        if row is None:
            lines.append(f"| resnet18 {options} | | | {note or 'not measured'} | | | | | "
                         f"{timm_cell} | | | |")  # fmt: skip
            continue
        ratio = row["train_images_per_s"] / peer["train_images_per_s"] if peer else None
        gain = row["train_images_per_s"] / previous if previous else None
        lines.append(_speed_line(f"resnet18 {options}", row, timm_cell, ratio, gain))
        previous = row["train_images_per_s"]
    for row in results["models"]:
        if "train_images_per_s" in row:
            lines.append(_speed_line(row["row"], row, "", None, None))
        else:
            lines.append(f"| {row['row']} | | | {_escape(row.get('error', 'not measured'))} "
                         "| | | | | | | | |")  # fmt: skip
    if not results["models"]:
        lines.append("| the other models | | | not measured | | | | | | | | |")

    lines += [
        "",
        "## Input pipeline and time to accuracy",
        "",
        "| row | measured | gain | peak memory MB |",
        "|---|---|---|---:|",
    ]
    rates = {r.get("decode"): r for r in results["imagenet"] if "images_per_s" in r}
    for decode in ("cpu", "gpu"):
        row = rates.get(decode)
        if row is None:
            lines.append(f"| ImageNet pipeline, decode={decode} | not measured | | |")
            continue
        gain = (
            f"{row['images_per_s'] / rates['cpu']['images_per_s']:.2f}x decode=cpu"
            if decode == "gpu" and "cpu" in rates
            else ""
        )
        measured = (
            f"{row['images_per_s']:,.0f} img/s (batch {row['batch_size']}, {row['workers']} "
            f"workers, {row['images']:,} JPEGs of {row['size']}, {row['device_type']})"
        )
        lines.append(f"| ImageNet pipeline, decode={decode} | {measured} | {gain} | "
                     f"{_cell(row.get('peak_memory_mb'))} |")  # fmt: skip
    lenet = results["lenet"]
    for row, resident in LENET_ROWS.items():
        label = f"lenet_mnist_fast, MNIST {'resident' if resident else 'not resident'}"
        metrics = lenet.get(row)
        if not metrics or "fit_seconds" not in metrics:
            lines.append(f"| {label} | not measured | | |")
            continue
        accuracy = f"{metrics['test/acc']:.2%} test accuracy" if "test/acc" in metrics else ""
        other = lenet.get("lenet_fast_host") if resident else None
        gain = (
            f"{other['fit_seconds'] / metrics['fit_seconds']:.2f}x faster fit() than not resident"
            if other and "fit_seconds" in other
            else ""
        )
        lines.append(f"| {label} | {accuracy}, fit() {metrics['fit_seconds']:.2f} s | {gain} | "
                     f"{_cell(metrics.get('peak_memory_mb'))} |")  # fmt: skip

    counts = results["pytest"]
    lines += ["", "## pytest -m gpu", ""]
    lines.append(
        f"{counts['passed']} passed, {counts['failed']} failed, {counts['error']} errors, "
        f"{counts['skipped']} skipped (from the {counts['source']}; logs/pytest.log)."
    )
    for name in counts["failures"]:
        lines.append(f"- failed: `{name}`")

    lines += ["", "## Steps", "", "| step | status | seconds | budget | log | error |",
              "|---|---|---:|---:|---|---|"]  # fmt: skip
    for s in steps:
        lines.append(
            f"| {s.name}: {s.title} | {s.status} | {s.seconds:.0f} | {s.budget:.0f} | {s.log} "
            f"| {_escape(s.error)} |"
        )
    return "\n".join(lines) + "\n"


def _speed_line(
    label: str, row: Mapping[str, Any], timm_cell: str, ratio: float | None, gain: float | None
) -> str:
    overhead = row.get("lightning_overhead")
    cells = [
        label, str(row["batch_size"]), str(row["image_size"]), _cell(row["train_images_per_s"]),
        _cell(row["step_ms"], "{:.1f}"), _cell(mfu(row), "{:.1%}"),
        _cell(row.get("lightning_images_per_s")),
        _cell(overhead, "{:+.1%}"), timm_cell, _cell(ratio, "{:.2f}x"),
        _cell(gain, "{:.2f}x"), _cell(row.get("peak_memory_mb")),
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def _row_error(rows: Sequence[Mapping[str, Any]], kind: str, options: str) -> str:
    for row in rows:
        if row.get("kind") == kind and row.get("options") == options and row.get("error"):
            return _escape(row["error"])[:160]
    return ""


def _timm_note(results: Mapping[str, Any], options: str) -> str:
    return _row_error(results["resnet18"], "timm", options) or "not measured"


# --- main -----------------------------------------------------------------------------------


def environment(check: Check) -> dict[str, Any]:
    env: dict[str, Any] = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    # The mnist step, the first to import torch, noted the versions and the device.
    env.update((load_json(check.out / "mnist.json") or {}).get("notes", {}).get("environment", {}))
    if shutil.which("nvidia-smi") and not check.dry:
        query = "--query-gpu=name,driver_version,memory.total,clocks.max.sm"
        smi = subprocess.run(["nvidia-smi", query, "--format=csv"], capture_output=True, text=True)
        (check.out / "gpu.csv").write_text(smi.stdout)
    return env


def run_check(out: Path, budget: float, dry: bool) -> int:
    out.mkdir(parents=True, exist_ok=True)
    check = Check(out, budget, dry)
    where = " (dry run on the CPU)" if dry else ""
    print(f"gpu_check{where}: {budget:.0f} s, into {out}", flush=True)
    install_wheels(check)
    check.run("mnist", "MNIST for lenet_mnist_fast; versions", check.worker("mnist"))
    mnist = load_json(out / "mnist.json") or {}
    mnist_notes = mnist.get("notes", {})
    check.run("pytest", "pytest -m gpu", pytest_command(check),
              env={"ZOO_GPU_TESTS_ON_CPU": "1"} if dry else None)  # fmt: skip
    check.run("resnet18", "ResNet18 rows, zoo and timm", check.worker("resnet18"))
    for row, resident in LENET_ROWS.items():
        title = f"lenet_mnist_fast trainer=gpu, MNIST {'resident' if resident else 'on the host'}"
        check.run(row, title, lenet_command(check, row, resident, mnist_notes))
    check.run("imagenet", "ImageNet input pipeline, both decoders", check.worker("imagenet"))
    check.run("models", "the other models, bf16 + channels_last", check.worker("models"))

    results: dict[str, Any] = {
        "dry": dry,
        "budget": budget,
        "environment": environment(check),
        "pytest": pytest_result(out, out / "logs" / "pytest.log"),
        "resnet18": step_rows(out, "resnet18"),
        "models": step_rows(out, "models"),
        "imagenet": step_rows(out, "imagenet"),
        "lenet": {row: lenet_result(out, row) for row in LENET_ROWS},
        "mnist": mnist_notes,
    }
    goals = targets(results)
    for goal in goals:
        if goal.met is False and goal.profile:
            run_profile(check, goal, mnist_notes)
            goal.where = goal.where or profile_summary(out, goal.profile) or "profile failed"

    results["seconds"] = check.elapsed()
    results["targets"] = [asdict(g) for g in goals]
    results["steps"] = [asdict(s) for s in check.steps]
    summary = render_summary(results, goals, check.steps)
    (out / "summary.md").write_text(summary)
    (out / "summary.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(summary, flush=True)
    failed = [s.name for s in check.steps if s.status != "ok"]
    if failed:
        print(f"gpu_check: steps not ok: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def run_profile(check: Check, goal: Target, mnist: Mapping[str, Any]) -> None:
    row = goal.profile or ""
    name = f"profile_{row}"
    title = f"torch.profiler on the missed row: {goal.name}"
    if row == "lenet_fast":
        # The recipe itself, for two of its epochs, profiled from on_train_start to on_train_end.
        command = lenet_command(check, name, True, mnist)
        command += [
            "+callbacks.profile._target_=benchmarks.gpu_check_steps.TorchProfile",
            f"+callbacks.profile.out={_quoted(check.out)}",
            "+callbacks.profile.row=lenet_fast",
            "logger=none",
            "test=false",
        ]
        if not check.dry:
            command.append("trainer.max_epochs=2")
        check.run(name, title, command, budget_key="profile")
        return
    check.run(name, title, check.worker("profile", "--row", row, *goal.profile_args), "profile")


# --- staging (online, for an offline GPU machine) ---------------------------------------------


def gzip_mnist() -> list[Path]:
    """MNIST's four IDX files, fetched if need be and checked against the published md5s,
    gzipped into the staging folder (no timestamps: the same bytes each time)."""
    from zoo.data.mnist.files import MNIST_MD5, ensure_mnist

    raw = ensure_mnist(data_dir())
    target = REPO_ROOT / STAGED_MNIST
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name in MNIST_MD5:
        destination = target / f"{name}.gz"
        partial = destination.with_suffix(".gz.tmp")
        with (
            (raw / name).open("rb") as source,
            partial.open("wb") as raw_out,
            gzip.GzipFile(filename=name, mode="wb", fileobj=raw_out, mtime=0) as packed,
        ):
            shutil.copyfileobj(source, packed)
        partial.replace(destination)
        written.append(destination)
    return written


def stage() -> int:
    """Gzip MNIST into data/MNIST/gz/ and list the wheels in .whl/: what an offline GPU machine
    needs besides the repository."""
    for path in gzip_mnist():
        print(f"{path.relative_to(REPO_ROOT)}: {path.stat().st_size:,} bytes")
    wheels = sorted((REPO_ROOT / WHEELS).glob("*.whl"))
    print("wheels: " + (", ".join(w.name for w in wheels) or f"none in {WHEELS}/"))
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_check", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default: $GPU_CHECK_OUT, else bench/)")  # fmt: skip
    parser.add_argument("--budget", type=float, default=None,
                        help=f"seconds for all the steps (default {TOTAL_BUDGET[0]:.0f}; dry run "
                        f"{TOTAL_BUDGET[1]:.0f})")  # fmt: skip
    parser.add_argument("--stage", action="store_true",
                        help="gzip MNIST into data/MNIST/gz/ for an offline machine")  # fmt: skip
    return parser.parse_args(argv)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.stage:
        return stage()
    dry = dry_run()
    if not dry and not cuda_available():
        print(
            "gpu_check: no CUDA device here; run it on the GPU machine (make gpu-check "
            "PY=python3), or rehearse it on the CPU with GPU_CHECK_DRY=1",
            file=sys.stderr,
        )
        return 2
    budget = args.budget or TOTAL_BUDGET[1 if dry else 0]
    return run_check((args.out or default_out()).resolve(), budget, dry)


if __name__ == "__main__":
    sys.exit(main())
