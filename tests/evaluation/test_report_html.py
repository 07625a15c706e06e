"""zoo.evaluation.report_html: report.html, one self-contained page per evaluation, holding what
metrics.json and the figures hold, with every text from the run escaped; and the same pages in a
real browser (headless Chromium through Playwright): no console error, no request beyond the page
itself, every image decoded, the metrics those of metrics.json, no horizontal scroll at 1280 px,
sortable tables, and a class name holding a script shown as text and never run.

The pages are made from the small LeNet-5 and U-Net checkpoints of tests/evaluation/legacy on the
synthetic MNIST of conftest. Chromium is the system's (Debian: ``apt-get install chromium``;
.ci/run installs it); without it, or without Playwright, the browser tests are skipped.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from tests.conftest import compose_config
from zoo.core.errors import ConfigError
from zoo.core.files import file_digest
from zoo.core.schema import is_number
from zoo.evaluation.checkpoint import load_checkpoint
from zoo.evaluation.report_html import REPORT_FILE
from zoo.evaluation.run import evaluate
from zoo.evaluation.visualize import METHODS

LEGACY = Path(__file__).parent / "legacy"
# A class name as a hostile checkpoint might carry it: shown as text, never run.
HOSTILE = "<script>alert(1)</script>"


@dataclass
class Page:
    """One evaluation's run directory: its report.html and metrics.json."""

    run: Path
    html: str
    metrics: dict[str, Any]


def with_class_names(source: Path, names: list[str], target: Path) -> Path:
    """A copy of the checkpoint ``source`` whose data config names its classes ``names``: where
    a checkpoint carries them (``hyper_parameters["data"]["class_names"]``)."""
    checkpoint = torch.load(source, weights_only=True)
    checkpoint["hyper_parameters"]["data"]["class_names"] = names
    torch.save(checkpoint, target)
    return target


def evaluate_into(data_dir: Path, run: Path, *overrides: str) -> None:
    """evaluate() as evaluate.py runs it, writing into ``run``."""
    base = [f"paths.data_dir={data_dir}", "trainer.accelerator=cpu", "logger=none"]
    cfg = compose_config(base + list(overrides), run, config_name="evaluate")
    try:
        evaluate(cfg, run)
    finally:
        GlobalHydra.instance().clear()


def run_evaluation(
    data_dir: Path, run: Path, *overrides: str, results: str = "metrics.json"
) -> Page:
    """evaluate() into ``run``; the page and the ``results`` file (metrics.json,
    predictions.json) it wrote."""
    evaluate_into(data_dir, run, *overrides)
    return Page(
        run,
        (run / REPORT_FILE).read_text(encoding="utf-8"),
        json.loads((run / results).read_text()),
    )


@pytest.fixture(scope="module")
def hostile_lenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The legacy LeNet-5 checkpoint, its class 0 named ``HOSTILE``."""
    names = [HOSTILE, *map(str, range(1, 10))]
    target = tmp_path_factory.mktemp("ckpt") / "hostile.ckpt"
    return with_class_names(LEGACY / "lenet_before_layout.ckpt", names, target)


@pytest.fixture(scope="module")
def lenet_page(
    hostile_lenet: Path, synthetic_mnist: Path, tmp_path_factory: pytest.TempPathFactory
) -> Page:
    """LeNet-5 with FGSM and class models, as in the issue's size budget."""
    return run_evaluation(
        synthetic_mnist,
        tmp_path_factory.mktemp("lenet"),
        f"ckpt_path={hostile_lenet}",
        "attack=fgsm",
        "attack.eps=[0.0,0.1,0.3]",
        "worst_images=8",
        "visualize=class_models",
        "visualization.class_models.classes=[0,1]",
        "visualization.class_models.steps=10",
    )


@pytest.fixture(scope="module")
def unet_page(synthetic_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Page:
    return run_evaluation(
        synthetic_mnist,
        tmp_path_factory.mktemp("unet"),
        f"ckpt_path={LEGACY / 'unet_before_layout.ckpt'}",
        "worst_images=2",
    )


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of three image files to predict."""
    folder = tmp_path_factory.mktemp("digits")
    for i in range(3):
        Image.new("L", (28, 28), color=40 * i).save(folder / f"digit{i}.png")
    return folder


@pytest.fixture(scope="module")
def predictions_page(
    hostile_lenet: Path,
    digits: Path,
    synthetic_mnist: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Page:
    return run_evaluation(
        synthetic_mnist,
        tmp_path_factory.mktemp("predict"),
        f"ckpt_path={hostile_lenet}",
        f"predict={digits}",
        "top_k=3",
        results="predictions.json",
    )


class Parsed(HTMLParser):
    """What the tests read from a page: its elements' attributes, the metrics and per-class
    rows (``data-key``, then each cell's text and ``data-value``) and the scripts."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.tables: dict[str, list[tuple[str | None, list[tuple[str, str | None]]]]] = {}
        self.scripts: list[str] = []
        self.text: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._in_script = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.elements.append((tag, attributes))
        if tag == "table":
            self._table = attributes.get("id")
            if self._table:
                self.tables[self._table] = []
        elif tag == "tr" and self._table and attributes.get("data-key") is not None:
            self.tables[self._table].append((attributes["data-key"], []))
        elif tag == "td" and self._table and self.tables[self._table]:
            self._cell = []
            self.tables[self._table][-1][1].append(("", attributes.get("data-value")))
        elif tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif tag == "td" and self._cell is not None and self._table:
            cells = self.tables[self._table][-1][1]
            cells[-1] = ("".join(self._cell), cells[-1][1])
            self._cell = None
        elif tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data
        elif self._cell is not None:
            self._cell.append(data)
        self.text.append(data)

    def images(self) -> list[str]:
        return [str(attrs["src"]) for tag, attrs in self.elements if tag == "img"]

    def sections(self) -> list[str]:
        return [str(attrs["id"]) for tag, attrs in self.elements if tag == "section"]


def png_bytes(src: str) -> bytes:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:40]
    return base64.b64decode(src.removeprefix(prefix), validate=True)


# --- what the page holds ------------------------------------------------------------------------


def test_a_classifier_page_holds_every_part_of_its_evaluation(lenet_page: Page) -> None:
    page = Parsed(lenet_page.html)
    assert page.sections() == ["metrics", "per-class", "worst", "attack", "visualizations"]
    # Every figure the run wrote is inline, byte for byte, and nothing else is.
    figures = lenet_page.metrics["figures"]
    written = [*figures.values(), lenet_page.metrics["class_models"]["png"]]
    assert set(figures) == {
        "confusion_matrix",
        "worst_misclassified",
        "fgsm_examples",
        "fgsm_accuracy",
    }
    assert [png_bytes(src) for src in page.images()] == [
        (lenet_page.run / name).read_bytes() for name in written
    ]
    # The attack's table, as evaluate.py prints it: clean, then each eps.
    text = " ".join(page.text)
    fgsm = lenet_page.metrics["fgsm"]
    for eps, acc in zip(fgsm["eps"], fgsm["acc"], strict=True):
        assert f"{eps:g} {acc:.4f}" in re.sub(r"\s+", " ", text)
    assert METHODS["class_models"].shows in text


def test_the_metrics_and_per_class_tables_hold_metrics_json_exactly(lenet_page: Page) -> None:
    page = Parsed(lenet_page.html)
    metrics = lenet_page.metrics
    shown = {key: float(cells[1][1]) for key, cells in page.tables["metrics-table"]}
    # Every number of metrics.json's top level but the image size (in the header).
    assert shown == {
        key: value for key, value in metrics.items() if is_number(value) and key != "image_size"
    }
    assert {"acc", "acc_top5", "loss"} <= set(shown)
    rows = page.tables["per-class-table"]
    assert [key for key, _ in rows] == list(metrics["per_class"])
    for index, ((key, cells), (name, values)) in enumerate(
        zip(rows, metrics["per_class"].items(), strict=True)
    ):
        (_, position), (text, _), (_, acc), (_, samples) = cells
        assert key == text == name and int(position) == index
        assert (None if acc == "" else float(acc)) == values["acc"]
        assert int(samples) == values["samples"]


def test_the_header_names_the_checkpoint_model_data_and_command(
    lenet_page: Page, hostile_lenet: Path
) -> None:
    text = re.sub(r"\s+", " ", " ".join(Parsed(lenet_page.html).text))
    assert f"sha256 {file_digest(hostile_lenet, 'sha256')[:12]}" in text
    network = load_checkpoint(hostile_lenet).model
    assert f"{sum(p.numel() for p in network.parameters()):,}" in text
    assert "mnist, test split, 200 samples, 32x32 px" in text
    assert "python evaluate.py paths.data_dir=" in text and "attack=fgsm" in text


def test_a_class_name_holding_html_is_text_and_the_only_script_is_the_pages_own(
    lenet_page: Page,
) -> None:
    page = Parsed(lenet_page.html)
    assert lenet_page.html.count("<script") == 1
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in lenet_page.html
    assert HOSTILE in [key for key, _ in page.tables["per-class-table"]]
    [script] = page.scripts
    assert "alert" not in script


def test_the_page_names_nothing_outside_itself(lenet_page: Page) -> None:
    page = Parsed(lenet_page.html)
    for tag, attributes in page.elements:
        for name in ("src", "href", "action", "srcset", "poster", "data"):
            value = attributes.get(name)
            assert value is None or value.startswith(("data:", "#")), (tag, name, value)
    # The policy lets the browser load nothing but inline images and run nothing but the
    # page's own script.
    [policy] = [
        attrs["content"]
        for tag, attrs in page.elements
        if tag == "meta" and attrs.get("http-equiv") == "Content-Security-Policy"
    ]
    assert str(policy).startswith("default-src 'none'; img-src data:;")


def test_a_segmentation_page_shows_miou_pixel_accuracy_dice_and_overlays(unet_page: Page) -> None:
    page = Parsed(unet_page.html)
    assert page.sections() == ["metrics", "per-class", "worst"]
    keys = [key for key, _ in page.tables["metrics-table"]]
    assert {"miou", "pixel_acc", "dice", "loss"} <= set(keys)
    for (name, cells), values in zip(
        page.tables["per-class-table"], unet_page.metrics["per_class"].values(), strict=True
    ):
        iou, dice = (None if v == "" else float(v) for _, v in cells[2:4])
        assert (iou, dice) == (values["iou"], values["dice"]), name
    assert len(page.images()) == 2  # the confusion matrix, the worst images
    assert png_bytes(page.images()[1]) == (unet_page.run / "worst_segmented.png").read_bytes()


def test_predictions_on_image_files_are_a_table(predictions_page: Page) -> None:
    page = Parsed(predictions_page.html)
    assert page.sections() == ["predictions"]
    text = re.sub(r"\s+", " ", " ".join(page.text))
    for row in predictions_page.metrics["predictions"]:
        best = row["top_k"][0]
        assert f"{row['file']} {best['class']} {best['probability']:.1%}" in text


# --- options and bad input ----------------------------------------------------------------------


# Predictions: the quickest evaluation that writes a page.
PREDICT = (f"ckpt_path={LEGACY / 'lenet_before_layout.ckpt'}", "top_k=1")


def test_report_none_writes_no_page_and_an_unknown_kind_is_one_line(
    digits: Path, synthetic_mnist: Path, tmp_path: Path
) -> None:
    run = tmp_path / "none"
    evaluate_into(synthetic_mnist, run, *PREDICT, f"predict={digits}", "report=none")
    assert (run / "predictions.json").is_file() and not (run / REPORT_FILE).exists()
    with pytest.raises(ConfigError, match=r"^report must be one of html, none, got 'pdf'$"):
        evaluate_into(synthetic_mnist, tmp_path / "pdf", *PREDICT, "report=pdf")


def test_a_page_that_cant_be_written_is_one_line_naming_it(
    digits: Path, synthetic_mnist: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    (run / REPORT_FILE).mkdir(parents=True)
    with pytest.raises(ConfigError) as refused:
        evaluate_into(synthetic_mnist, run, *PREDICT, f"predict={digits}")
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"cannot write {run / REPORT_FILE}: Is a directory; "), message
    assert (run / "predictions.json").is_file()  # everything else was written first


# --- in a real browser -------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
WIDTH = 1280


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium, or a skip saying what is missing."""
    if not Path(CHROMIUM).is_file():
        pytest.skip("no chromium on this machine (Debian: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


@dataclass
class Opened:
    """A page opened in the browser, and what the browser reported while loading it."""

    page: Any
    url: str
    console: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)


def open_page(browser: Any, run: Path) -> Opened:
    page = browser.new_page(viewport={"width": WIDTH, "height": 800})
    opened = Opened(page, (run / REPORT_FILE).as_uri())
    page.on("console", lambda m: opened.console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda error: opened.console.append(f"pageerror: {error}"))
    page.on("request", lambda request: opened.requests.append(request.url))
    page.on("requestfailed", lambda request: opened.failed.append(request.url))

    def dialog(shown: Any) -> None:
        opened.dialogs.append(shown.message)
        shown.dismiss()

    page.on("dialog", dialog)
    page.goto(opened.url, wait_until="load")
    return opened


@pytest.mark.parametrize("name", ["lenet_page", "unet_page", "predictions_page"])
def test_the_page_loads_clean_and_shows_metrics_json(
    name: str, browser: Any, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    made: Page = request.getfixturevalue(name)
    opened = open_page(browser, made.run)
    page = opened.page
    assert opened.console == []
    assert opened.failed == []
    # The page itself, and its inline images: nothing from a network or another file.
    assert all(url == opened.url or url.startswith("data:") for url in opened.requests)
    decoded = page.eval_on_selector_all("img", "images => images.map(i => i.naturalWidth)")
    assert len(decoded) == made.html.count("<img") and all(width > 0 for width in decoded)
    shown = page.eval_on_selector_all(
        "#metrics-table tbody tr",
        "rows => rows.map(r => [r.dataset.key, Number(r.cells[1].dataset.value)])",
    )
    assert {key: value for key, value in shown} == {key: made.metrics[key] for key, _ in shown}
    assert len(shown) == sum(
        is_number(value) and key != "image_size" for key, value in made.metrics.items()
    )
    # At 1280 px nothing is wider than the window: no horizontal scroll.
    assert page.evaluate(
        "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )
    screenshot = tmp_path / "page.png"
    page.screenshot(path=screenshot, full_page=True)
    with Image.open(screenshot) as image:
        assert image.width == WIDTH
    page.close()


def test_a_class_name_holding_a_script_shows_as_text_and_runs_nothing(
    browser: Any, lenet_page: Page
) -> None:
    opened = open_page(browser, lenet_page.run)
    page = opened.page
    first = page.eval_on_selector("#per-class-table tbody tr", "row => row.cells[1].textContent")
    assert first == HOSTILE
    assert page.evaluate("document.scripts.length") == 1
    assert opened.dialogs == [] and opened.console == []
    page.close()


def test_the_per_class_table_sorts_by_the_column_clicked(browser: Any, lenet_page: Page) -> None:
    opened = open_page(browser, lenet_page.run)
    page = opened.page
    per_class = lenet_page.metrics["per_class"]

    def order() -> list[str]:
        return page.eval_on_selector_all(
            "#per-class-table tbody tr", "rows => rows.map(r => r.dataset.key)"
        )

    def by_accuracy(descending: bool) -> list[str]:
        known = [name for name, row in per_class.items() if row["acc"] is not None]
        known.sort(key=lambda name: per_class[name]["acc"], reverse=descending)
        return known + [name for name, row in per_class.items() if row["acc"] is None]

    assert order() == list(per_class)
    button = page.get_by_role("button", name="accuracy")
    button.click()
    assert order() == by_accuracy(descending=False)
    button.click()
    assert order() == by_accuracy(descending=True)
    page.get_by_role("button", name="#").click()
    assert order() == list(per_class)
    assert opened.console == []
    page.close()
