"""``report.html``: one self-contained page per evaluation, written into the run directory
(``report=html``, the default; ``report=none`` turns it off).

The page is built from what the evaluation already made: the report that goes to metrics.json
and the PNG figures in the run directory, inlined as ``data:`` URIs. It opens anywhere, offline,
with no server: the styles and the one small script (sortable tables) are inline too, and the
page's Content-Security-Policy allows nothing else, so that it requests nothing from any host and
runs no script but its own. Every text taken from the run (class names, paths, the command) goes
through Jinja2's autoescaping.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import shlex
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import jinja2
import torch
from hydra.core.hydra_config import HydraConfig
from markupsafe import Markup
from PIL import Image
from rich.table import Table as RichTable

import zoo
from zoo import models
from zoo.core.files import file_digest
from zoo.core.schema import is_number
from zoo.evaluation.attacks import ATTACKS, attack_tables
from zoo.evaluation.visualize import METHODS
from zoo.tasks.base import count_flops

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
REPORTS = ("html", "none")  # evaluate.yaml's ``report``
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %Z"

_HERE = Path(__file__).parent
_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_HERE),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

# How the metrics table names the report's numbers; others show under their own key.
METRIC_LABELS = {
    "acc": "top-1 accuracy",
    "acc_top5": "top-5 accuracy",
    "loss": "loss",
    "miou": "mean IoU",
    "pixel_acc": "pixel accuracy",
    "dice": "Dice",
    "samples": "samples",
    "images_per_sec": "images/s (end to end)",
    "images_per_sec_attack_included": "images/s (the attack included)",
}
# Numbers of the report that describe the run, not the model's quality: in the header.
NOT_METRICS = ("image_size",)

ATTACK_TITLES = {
    "fgsm": "FGSM, the fast gradient sign method",
    "pgd": "PGD, projected gradient descent",
    "lbfgs": "L-BFGS, targeted minimal perturbations",
    "universal": "Universal perturbation",
}
PER_CLASS_LABELS = {"acc": "accuracy", "iou": "IoU", "dice": "Dice"}
WORST = {
    "worst_misclassified": (
        "The misclassified test images with the highest loss: predicted class and its "
        "probability / true class."
    ),
    "worst_segmented": (
        "The images with the highest mean pixel loss: the input, the true mask over it, and the "
        "predicted mask over it."
    ),
}


# --- what the page is made of -----------------------------------------------------------------


@dataclass(frozen=True)
class Fact:
    """One line of the header: a label and its text (``code``: set in monospace)."""

    label: str
    text: str
    code: bool = False


@dataclass(frozen=True)
class Cell:
    """A table cell; a number keeps its exact value (``data-value``) for sorting and reading."""

    text: str
    numeric: bool = False
    value: float | int | None = None

    @property
    def sort_value(self) -> str:
        return "" if self.value is None else json.dumps(self.value)


@dataclass(frozen=True)
class Row:
    cells: list[Cell]
    key: str | None = None  # data-key: which entry of metrics.json the row shows


@dataclass(frozen=True)
class Table:
    kind: ClassVar[str] = "table"
    title: str | None
    headers: list[str]
    rows: list[Row]
    sortable: bool = False
    id: str | None = None


@dataclass(frozen=True)
class Figure:
    kind: ClassVar[str] = "figure"
    title: str
    src: str  # a data: URI
    width: int
    height: int
    caption: str = ""


@dataclass(frozen=True)
class Text:
    kind: ClassVar[str] = "text"
    heading: str = ""
    text: str = ""


@dataclass(frozen=True)
class Pair:
    """Blocks side by side where the page is wide enough, one under the other where not."""

    kind: ClassVar[str] = "pair"
    blocks: list[Table | Figure | Text]


Block = Table | Figure | Text | Pair


@dataclass
class Section:
    id: str
    title: str
    intro: str = ""
    blocks: list[Block] = field(default_factory=list)


# --- writing it ---------------------------------------------------------------------------------


def write_html_report(report: Mapping[str, Any], output_dir: Path) -> Path:
    """Write ``report.html`` for ``report`` (evaluate.py's, as in metrics.json) into
    ``output_dir``, whose figures it inlines; return its path. An OSError names the file (the
    caller, ``zoo.evaluation.outputs.output_errors``, makes it one line)."""
    started = time.perf_counter()
    path = output_dir / REPORT_FILE
    path.write_text(render(report, output_dir), encoding="utf-8")
    log.info(
        "%s: %.0f KB, written in %.2f s",
        path.name,
        path.stat().st_size / 1024,
        time.perf_counter() - started,
    )
    return path


def render(report: Mapping[str, Any], output_dir: Path) -> str:
    """The page's HTML."""
    style, script = (_HERE / "style.css").read_text(), (_HERE / "sort.js").read_text()
    sections = [
        section
        for section in (
            metrics_section(report),
            per_class_section(report, output_dir),
            worst_section(report, output_dir),
            attack_section(report, output_dir),
            visualization_section(report, output_dir),
            predictions_section(report),
            export_section(report),
        )
        if section is not None
    ]
    now = datetime.now().astimezone()
    return _ENVIRONMENT.get_template("page.html.jinja").render(
        title=f"{report['model']['name']} on {report['dataset']}",
        subtitle=subtitle(report),
        facts=header_facts(report, now),
        sections=sections,
        csp=content_security_policy(style, script),
        style=Markup(style),  # the package's own files, not the run's text
        script=Markup(script),
        version=zoo.__version__,
        date=now.strftime(DATE_FORMAT),
    )


def content_security_policy(style: str, script: str) -> str:
    """Nothing but inline data: images, and the page's own style and script by their hashes: no
    request to any host, and no script that a text of the run might smuggle in would run."""

    def digest(text: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"

    return (
        f"default-src 'none'; img-src data:; style-src {digest(style)}; "
        f"script-src {digest(script)}; base-uri 'none'; form-action 'none'"
    )


# --- the header ---------------------------------------------------------------------------------


def subtitle(report: Mapping[str, Any]) -> str:
    task = report.get("task", "")
    split = f", {report['split']} split" if "split" in report else ""
    return f"{task} evaluation{split}"


def header_facts(report: Mapping[str, Any], now: datetime) -> list[Fact]:
    """The checkpoint or weights, the model (parameters, GFLOPs), the data, the command, and
    when and by which zoo the page was made."""
    facts: list[Fact] = []
    pretrained = report.get("pretrained")
    checkpoint = report.get("checkpoint")
    if checkpoint and checkpoint != "None":
        path = Path(checkpoint)
        digest = file_digest(path, "sha256")[:12] if path.is_file() else "unreadable"
        facts.append(Fact("checkpoint", f"{checkpoint} (sha256 {digest}…)", code=True))
    if pretrained:
        facts.append(
            Fact(
                "weights",
                f"{pretrained['weights']} ({pretrained['file']}, sha256 "
                f"{pretrained['sha256_prefix']}…)",
                code=True,
            )
        )
    spec = dict(report["model"])
    name = spec.pop("name")
    spec.pop("weights", None)  # the shapes are all the counts need: read no weights file
    arguments = ", ".join(f"{key}={value}" for key, value in spec.items())
    facts.append(Fact("model", f"{name}({arguments})", code=True))
    size = int(report["image_size"])
    parameters, flops, channels = network_counts(name, spec, size)
    facts.append(Fact("parameters", f"{parameters:,}"))
    facts.append(
        Fact("GFLOPs", f"{flops / 1e9:.3g} (one {channels}x{size}x{size} image, forward pass)")
    )
    data = [str(report["dataset"])]
    if "split" in report:
        data.append(f"{report['split']} split")
    if "samples" in report:
        data.append(f"{report['samples']:,} samples")
    data.append(f"{size}x{size} px")
    facts.append(Fact("data", ", ".join(data)))
    if "precision" in report:
        facts.append(Fact("precision", str(report["precision"])))
    facts.append(Fact("command", run_command(), code=True))
    facts.append(Fact("date", now.strftime(DATE_FORMAT)))
    facts.append(Fact("zoo version", zoo.__version__))
    return facts


def network_counts(name: str, arguments: Mapping[str, Any], size: int) -> tuple[int, int, int]:
    """(parameters, forward FLOPs of one image, input channels) of the registry model, built
    on the meta device: no memory, no compute."""
    with torch.device("meta"):
        network = models.build(name, **arguments)
    parameters = sum(p.numel() for p in network.parameters())
    channels = network.in_channels
    flops = count_flops({"name": name, **arguments}, torch.Size((1, channels, size, size)), False)
    return parameters, flops, channels


def run_command() -> str:
    """The evaluate.py command of this run, as Hydra recorded its overrides."""
    if not HydraConfig.initialized():
        return "python evaluate.py"
    return shlex.join(["python", "evaluate.py", *HydraConfig.get().overrides.task])


# --- the sections -------------------------------------------------------------------------------


def metrics_section(report: Mapping[str, Any]) -> Section | None:
    keys = [key for key, value in report.items() if is_number(value) and key not in NOT_METRICS]
    if not keys:
        return None
    rows = [
        Row([Cell(METRIC_LABELS.get(key, key)), number_cell(report[key])], key=key) for key in keys
    ]
    table = Table(None, ["metric", "value"], rows, id="metrics-table")
    return Section("metrics", "Metrics", blocks=[table])


def per_class_section(report: Mapping[str, Any], output_dir: Path) -> Section | None:
    per_class: Mapping[str, Mapping[str, Any]] | None = report.get("per_class")
    if not per_class:
        return None
    columns = list(next(iter(per_class.values())))
    rows = [
        Row(
            [Cell(str(index), True, index), Cell(name)]
            + [number_cell(values.get(column)) for column in columns],
            key=name,
        )
        for index, (name, values) in enumerate(per_class.items())
    ]
    headers = ["#", "class", *(PER_CLASS_LABELS.get(c, c) for c in columns)]
    table = Table(None, headers, rows, sortable=True, id="per-class-table")
    figures = list(figures_named(report, output_dir, ["confusion_matrix"]))
    intro = "Click a column's header to sort by it."
    if figures:
        intro = (
            "The confusion matrix (rows: true class, columns: predicted) and each class's "
            f"results. {intro}"
        )
    return Section("per-class", "Per class", intro, [Pair([*figures, table])])


def worst_section(report: Mapping[str, Any], output_dir: Path) -> Section | None:
    figures: list[Block] = list(figures_named(report, output_dir, list(WORST)))
    if not figures:
        return None
    intro = " ".join(WORST[name] for name in WORST if name in report["figures"])
    return Section("worst", "Worst images", intro, figures)


def attack_section(report: Mapping[str, Any], output_dir: Path) -> Section | None:
    """The attack's tables (those evaluate.py prints) and its figures: accuracy against eps, and
    clean | adversarial | perturbation rows."""
    name = next((attack for attack in ATTACKS if attack in report), None)
    if name is None:
        return None
    blocks: list[Block] = [from_rich(table) for table in attack_tables(report)]
    prefix = f"{name}_"
    names = [figure for figure in report.get("figures", {}) if figure.startswith(prefix)]
    blocks += figures_named(report, output_dir, names)
    results = report[name]
    # The sweeps and the universal perturbation count "samples"; L-BFGS, which attacks a
    # subset, its "images".
    attacked = results.get("samples", results.get("images"))
    seconds = results.get("seconds")
    intro = (
        (f"{attacked:,} images attacked" if attacked is not None else "Attacked")
        + (f" in {seconds:.1f} s" if seconds is not None else "")
        + ("; budgets in pixel units (images in [0, 1])." if "eps" in results else ".")
    )
    return Section("attack", ATTACK_TITLES.get(name, name), intro, blocks)


def visualization_section(report: Mapping[str, Any], output_dir: Path) -> Section | None:
    methods = [name for name in METHODS if name in report]
    if not methods:
        return None
    seconds = report.get("visualize_seconds", {})
    blocks: list[Block] = []
    for name in methods:
        wall = seconds.get(name, {}).get("wall_s")
        took = f" ({wall:.1f} s)" if wall is not None else ""
        blocks.append(Text(heading=f"{name}{took}", text=METHODS[name].shows))
        files = list(png_files(report[name]))
        blocks += [image_figure(output_dir / file, Path(file).stem) for file in files]
    return Section("visualizations", "Visualisations", blocks=blocks)


def predictions_section(report: Mapping[str, Any]) -> Section | None:
    predictions = report.get("predictions")
    if not predictions:
        return None
    k = max(len(row["top_k"]) for row in predictions)
    headers = ["file", *(f"#{i + 1}" for i in range(k))]
    rows = [
        Row(
            [Cell(row["file"])]
            + [
                Cell(f"{entry['class']} {entry['probability']:.1%}", True, entry["probability"])
                for entry in row["top_k"]
            ]
        )
        for row in predictions
    ]
    table = Table(None, headers, rows, id="predictions-table")
    intro = f"The {k} most probable classes of each image file, most probable first."
    return Section("predictions", "Predictions", intro, [table])


def export_section(report: Mapping[str, Any]) -> Section | None:
    export = report.get("export")
    if not export:
        return None
    rows = [Row([Cell(str(key)), Cell(str(value))]) for key, value in export.items()]
    return Section("export", "Export", blocks=[Table(None, ["", "value"], rows)])


# --- helpers ------------------------------------------------------------------------------------


def number_cell(value: Any) -> Cell:
    if value is None:
        return Cell("-", True, None)
    if isinstance(value, int):
        return Cell(f"{value:,}", True, value)
    return Cell(f"{value:.4f}" if abs(value) < 1000 else f"{value:,.1f}", True, float(value))


def from_rich(table: RichTable) -> Table:
    """A rich table that evaluate.py prints, with the same cells, as a page table."""
    columns = [list(column.cells) for column in table.columns]
    rows = [Row([Cell(str(cell)) for cell in cells]) for cells in zip(*columns, strict=True)]
    title = str(table.title) if table.title is not None else None
    return Table(title, [str(column.header) for column in table.columns], rows)


def figures_named(
    report: Mapping[str, Any], output_dir: Path, names: Sequence[str]
) -> Iterator[Figure]:
    """The figures of ``names`` that the evaluation wrote (``report["figures"]``), inlined."""
    written = report.get("figures", {})
    for name in names:
        if name in written:
            yield image_figure(output_dir / written[name], name)


def png_files(entry: Any) -> Iterator[str]:
    """The figure files a visualisation's report names (its ``png`` keys), in order."""
    if isinstance(entry, Mapping):
        for key, value in entry.items():
            if key == "png" and isinstance(value, str):
                yield value
            else:
                yield from png_files(value)
    elif isinstance(entry, list):
        for value in entry:
            yield from png_files(value)


def image_figure(path: Path, title: str, caption: str = "") -> Figure:
    """The PNG at ``path`` as an inline figure."""
    data = path.read_bytes()
    with Image.open(path) as image:
        width, height = image.size
    src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return Figure(title.replace("_", " "), src, width, height, caption)
