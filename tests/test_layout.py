"""The package layout is the architecture: each subpackage is one job, and imports run one way,
core <- models, data <- tasks <- training, evaluation <- tools (README, "Layout")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import zoo

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
