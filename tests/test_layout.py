"""The package layout is the architecture: each subpackage is one job, and imports run one way,
core <- models, data <- tasks <- training, evaluation <- tools (README, "Layout")."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

import zoo
from zoo.core.config import CONFIG_DIR

PACKAGE = Path(zoo.__file__).parent
# Each subpackage may import its own modules, those of lower layers, and nothing else: not a
# higher layer, and not a sibling of its own layer (models and data, training and evaluation
# stay independent of each other).
LAYERS = {
    "core": 0,
    "models": 1,
    "data": 1,
    "tasks": 2,
    "training": 3,
    "evaluation": 3,
    "tools": 4,
}


def zoo_imports(path: Path) -> set[str]:
    """The zoo subpackages a module imports, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "zoo":
                names = [f"zoo.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "zoo" and len(parts) > 1:
                found.add(parts[1])
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE)


def test_every_module_lives_in_a_subpackage_of_a_known_layer() -> None:
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert loose == []
    assert {p.relative_to(PACKAGE).parts[0] for p in MODULES} == set(LAYERS)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_one_way(path: Path) -> None:
    home = path.relative_to(PACKAGE).parts[0]
    wrong = {
        other
        for other in zoo_imports(path) - {home}
        if other not in LAYERS or LAYERS[other] >= LAYERS[home]
    }
    assert not wrong, f"zoo/{home} must not import zoo.{', zoo.'.join(sorted(wrong))}"


README = (PACKAGE.parent / "README.md").read_text()


def readme_section(title: str) -> str:
    """The text of the README's ``## title`` section."""
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end > 0 else None]


def tracked_top_level_folders() -> set[str]:
    listed = subprocess.run(
        ["git", "ls-files"], cwd=PACKAGE.parent, capture_output=True, text=True, check=True
    ).stdout.split()
    return {f"{path.split('/')[0]}/" for path in listed if "/" in path}


def test_the_readme_layout_names_every_folder_and_only_folders_that_exist() -> None:
    """README "Layout": the package's folders (the config groups have their own table) and the
    checkout's, so that the list cannot go stale."""
    block = readme_section("Layout").split("```text\n")[1].split("```")[0]
    named = {
        name.strip()
        for line in block.splitlines()
        if line and not line[0].isspace()
        for name in line.split("  ")[0].split(",")
    }
    package = {
        f"zoo/{path.relative_to(PACKAGE)}/"
        for path in PACKAGE.rglob("*")
        if path.is_dir() and path.name != "__pycache__" and "configs/" not in str(path)
    }
    top = tracked_top_level_folders() - {"zoo/"}
    files = {name for name in named if not name.endswith("/")}
    assert package | top <= named, f"not in the README's layout: {sorted(package | top - named)}"
    assert all((PACKAGE.parent / name).exists() for name in named), sorted(named)
    assert named - files <= package | top, sorted(named - files - package - top)


def config_groups() -> dict[str, list[str]]:
    """Each config group folder of zoo/configs (hydra/launcher, not Hydra's own settings), with
    its options."""
    groups = {}
    for folder in sorted(CONFIG_DIR.rglob("*")):
        options = sorted(path.stem for path in folder.glob("*.yaml"))
        group = str(folder.relative_to(CONFIG_DIR))
        if folder.is_dir() and options and group != "hydra":
            groups[group] = options
    return groups


def written_options(cell: str) -> list[re.Pattern[str]]:
    """The options a table cell names in backticks, as patterns: `vgg{11,13}_bn` is a brace
    expansion, `<model>_mnist` stands for any model."""
    patterns = []
    for written in re.findall(r"`([^`]+)`", cell):
        pattern = re.escape(written).replace(re.escape("<model>"), "[a-z0-9]+")
        pattern = re.sub(r"\\\{([^}]*)\\\}", lambda m: f"({m.group(1).replace(',', '|')})", pattern)
        patterns.append(re.compile(pattern + "$"))
    return patterns


@pytest.mark.parametrize("group", config_groups())
def test_the_readme_config_table_lists_the_group_and_its_options(group: str) -> None:
    rows = [row for row in readme_section("Config groups").splitlines() if row.startswith("| `")]
    [row] = [row for row in rows if row.startswith(f"| `{group}/` |")]
    patterns = written_options(row.split("|")[2])
    missing = [name for name in config_groups()[group] if not any(p.match(name) for p in patterns)]
    assert not missing, f"README's config table, {group}/: {missing} not listed"
