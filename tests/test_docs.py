"""Every ``train.py`` / ``evaluate.py`` command that README.md and docs/*.md show in a ```bash
block works as printed: parsed as a shell parses it, its overrides composed by Hydra (every key
and group option exists) and checked against the zoo's schemas (every value passes), without
reading a file or loading data. The README's first commands (its Quick start and its first
minute with the zoo's own weights) also run end to end, on the real MNIST (slow)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from omegaconf import DictConfig

from tests.conftest import REPO_ROOT, run_for_metrics
from zoo import data, models
from zoo.core.cli import MULTIRUN_FLAGS, check_command_line, multirun_jobs
from zoo.core.config import compose_config, to_plain
from zoo.evaluation.run import check_options
from zoo.tasks.build import check_task
from zoo.training.run import check_config

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
ENTRY_POINTS = {"train.py": "train", "zoo-train": "train", "evaluate.py": "evaluate"}
ENTRY_POINTS["zoo-evaluate"] = "evaluate"
# What the shell would end a command at.
OPERATORS = {"&&", "||", ";", "|", "&", ">", ">>", "<", "2>", "(", ")"}
# The placeholders the pages use: <anything> in angle brackets, and these shell variables.
PLACEHOLDER = re.compile(r"<[^<>\n]+>")
VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")
SHELL_VARIABLES = {
    "CKPT": "outputs/train/runs/placeholder/checkpoints/best.ckpt",
    "SLURM_JOB_ID": "4242",
    "NODE_RANK": "0",
    "MASTER_ADDR": "node0",
    "resume": "ckpt_path=last",
    "S": "1",
}


@dataclass(frozen=True)
class Command:
    """One documented command: where it is printed, under which heading, and its arguments."""

    page: str
    line: int
    heading: str
    config_name: str  # train or evaluate
    argv: tuple[str, ...]
    undefined: frozenset[str] = frozenset()  # shell variables it uses that nothing defines

    def __str__(self) -> str:
        return f"{self.page}:{self.line}"


def bash_blocks(text: str) -> list[tuple[int, str, list[str]]]:
    """The ```bash blocks of a Markdown page: (first line number, the ## heading above, lines)."""
    blocks, heading, inside, start, lines = [], "", False, 0, []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("```"):
            if inside:
                blocks.append((start, heading, lines))
                inside = False
            elif line.strip() in ("```bash", "```sh", "```shell"):
                inside, start, lines = True, number + 1, []
            continue
        if inside:
            lines.append(line)
        elif line.startswith("## "):
            heading = line[3:].strip()
    return blocks


def logical_lines(start: int, lines: list[str]) -> list[tuple[int, str]]:
    """The block's lines with continuations (a trailing backslash) joined, by first line number."""
    joined, pending, first = [], "", start
    for offset, line in enumerate(lines):
        if not pending:
            first = start + offset
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
        else:
            joined.append((first, pending + line))
            pending = ""
    return joined


def shell_words(line: str, variables: dict[str, str]) -> tuple[list[str], set[str]]:
    """``line`` split as a shell would, comments dropped, operators as words of their own, the
    variables and <placeholders> filled in; and the variables that nothing defined."""
    undefined = {name for name in VARIABLE.findall(line) if name not in variables}
    line = VARIABLE.sub(lambda match: variables.get(match.group(1), "placeholder"), line)
    line = PLACEHOLDER.sub("placeholder", line)
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>()")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer), undefined


ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(\S*)$")


def commands_in(page: Path) -> list[Command]:
    """The train.py / evaluate.py commands of a page's ```bash blocks; a variable assigned in a
    block (CKPT=...) holds for the rest of that block."""
    found = []
    name = str(page.relative_to(REPO_ROOT))
    for start, heading, lines in bash_blocks(page.read_text()):
        variables = dict(SHELL_VARIABLES)
        for number, line in logical_lines(start, lines):
            words, undefined = shell_words(line, variables)
            assigned = [ASSIGNMENT.match(word) for word in words]
            if words and all(assigned) and "$(" not in line:
                variables.update(match.groups() for match in assigned if match)
                continue
            for i, word in enumerate(words):
                entry = ENTRY_POINTS.get(Path(word).name)
                if entry is None:
                    continue
                end = next((j for j in range(i + 1, len(words)) if words[j] in OPERATORS), None)
                argv = tuple(words[i + 1 : end])
                found.append(Command(name, number, heading, entry, argv, frozenset(undefined)))
    return found


COMMANDS = [command for page in PAGES for command in commands_in(page)]


def jobs(argv: tuple[str, ...]) -> list[list[str]]:
    """The single jobs whose configs stand for the command's: a multirun's jobs as
    zoo.core.cli checks them, else the command itself."""
    overrides = [arg for arg in argv if arg not in MULTIRUN_FLAGS]
    return multirun_jobs(overrides) if len(overrides) < len(argv) else [overrides]


def check_train(cfg: DictConfig) -> None:
    """What train.py checks before it reads a file: the run settings, the optimizer, schedule and
    callbacks, the data config against its dataset's schema, the model and task options."""
    check_config(cfg)
    spec = to_plain(cfg.data)
    data.parse(spec)
    model = to_plain(cfg.model)
    if model.get("num_classes") is None:
        # An image folder counts its class folders when the run starts; the test reads none.
        model["num_classes"] = 2
    check_model_and_weights(model, spec["name"], to_plain(cfg.get("task")) or {})


def check_model_and_weights(model: dict, dataset: str | None, options: dict) -> None:
    """The model config, the task options, and the weights it names resolved (not read)."""
    check_task(model, dataset, options)
    if model.get("weights"):
        arguments = {key: value for key, value in model.items() if key not in ("name", "weights")}
        models.pretrained(model["name"], model["weights"], **arguments)


def check_evaluate(cfg: DictConfig) -> None:
    """What evaluate.py checks before it reads a checkpoint: its options (the source, attack and
    visualisations), and, where the command names them, the data config and the model."""
    check_options(cfg)
    spec = to_plain(cfg.get("data")) or {}
    if "name" in spec:
        data.parse(spec)
    if cfg.get("model"):
        check_model_and_weights(to_plain(cfg.model), spec.get("name"), {})


# Each distinct command once (the same line may be printed on several pages), named by where
# it is printed first.
DISTINCT = list({(c.config_name, c.argv): c for c in reversed(COMMANDS)}.values())[::-1]


def test_the_pages_show_commands_of_both_entry_points() -> None:
    """The extraction itself: every page is read, and the count below is what the test checks."""
    by_entry = {
        name: sum(c.config_name == name for c in COMMANDS) for name in ("train", "evaluate")
    }
    assert by_entry["train"] >= 40 and by_entry["evaluate"] >= 20, by_entry


def test_every_shell_variable_a_command_uses_is_defined() -> None:
    undefined = {str(c): sorted(c.undefined) for c in COMMANDS if c.undefined}
    assert not undefined, "define them in the block (CKPT=...) or in SHELL_VARIABLES"


@pytest.mark.parametrize("command", DISTINCT, ids=str)
def test_documented_command_composes_and_passes_the_schemas(
    command: Command, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # cluster=slurm names the run directory after the job, read from the environment.
    monkeypatch.setenv("SLURM_JOB_ID", SHELL_VARIABLES["SLURM_JOB_ID"])
    try:
        configs = [compose_config(job, tmp_path, command.config_name) for job in jobs(command.argv)]
    except Exception:
        # The entry point's own one-line message for an unknown key or option, else Hydra's.
        check_command_line(command.config_name, command.argv)
        raise
    for cfg in configs:
        if command.config_name == "train":
            check_train(cfg)
        else:
            check_evaluate(cfg)


# The README's sections whose commands a new user runs first: these run end to end.
FIRST_SECTIONS = ("Quick start", "A first minute, without training")
FIRST_COMMANDS = [c for c in COMMANDS if c.page == "README.md" and c.heading in FIRST_SECTIONS]


def test_the_readme_first_commands_are_found() -> None:
    assert {c.heading for c in FIRST_COMMANDS} == set(FIRST_SECTIONS)
    assert any(c.config_name == "train" and c.argv == () for c in FIRST_COMMANDS)


@pytest.mark.slow
@pytest.mark.parametrize("command", FIRST_COMMANDS, ids=lambda c: " ".join(c.argv) or "train.py")
def test_readme_first_command_runs_end_to_end_on_real_mnist(
    command: Command, tmp_path: Path
) -> None:
    """The Quick start reaches its 99%; the weights give their card's figures, to the digit."""
    script = "train.py" if command.config_name == "train" else "evaluate.py"
    _, metrics = run_for_metrics(script, tmp_path, *command.argv, timeout=1500)
    if command.config_name == "train":
        assert metrics["test/acc"] >= 0.99, metrics
        return
    [run_dir] = (tmp_path / "evaluate" / "runs").iterdir()
    assert (run_dir / "report.html").stat().st_size > 0
    overrides = dict(arg.split("=", 1) for arg in command.argv)
    card = models.pretrained("lenet", overrides["model.weights"]).meta["_metrics"]["mnist"]
    if "visualize" in overrides:
        methods = overrides["visualize"].strip("[]").split(",")
        assert set(methods) <= set(metrics), metrics.keys()
        assert (run_dir / f"{methods[-1]}.png").is_file()
        return
    assert round(metrics["acc"] * 100, 2) == card["acc@1"], metrics
    if overrides.get("attack") == "fgsm":
        measured = dict(zip(metrics["fgsm"]["eps"], metrics["fgsm"]["acc"], strict=True))
        for eps in (0.1, 0.3):
            assert round(measured[eps] * 100, 2) == card[f"fgsm@eps{eps}"], measured


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces to
    hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO_ROOT)))
def test_every_link_of_a_page_reaches_a_file_and_heading_that_exist(page: Path) -> None:
    broken = []
    for target in LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (anchor and anchor not in anchors(linked)):
            broken.append(target)
    assert not broken, broken


TOPIC_PAGES = sorted((REPO_ROOT / "docs").glob("*.md"))


@pytest.mark.parametrize("page", TOPIC_PAGES, ids=lambda page: page.name)
def test_a_topic_page_opens_with_the_three_commands_most_people_need(page: Path) -> None:
    """Its first code block, before any section: three commands (a variable they use, such as
    CKPT=..., may come first)."""
    text = page.read_text()
    first_section = text.find("\n## ")
    [(start, _, lines), *_] = bash_blocks(text)
    assert text.index("```bash") < first_section, "the first block comes before any section"
    commands = [
        line
        for _, line in logical_lines(start, lines)
        if (words := shell_words(line, SHELL_VARIABLES)[0])
        and not all(ASSIGNMENT.match(word) for word in words)
    ]
    assert len(commands) == 3, commands
