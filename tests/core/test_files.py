"""zoo.core.files: what stands at a path, named without opening it; JSON that other readers
accept, whatever the numbers."""

from __future__ import annotations

import json
import os
from pathlib import Path

from zoo.core.files import path_problem, write_json


def test_each_kind_of_path_is_named_for_what_it_is(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    os.mkfifo(tmp_path / "fifo")  # never opened: that would wait for a writer
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    expected = {
        ("folder", "folder"): None,
        ("file", "file"): None,
        ("folder", "file"): "is a directory, not a file",
        ("file", "folder"): "is a file, not a folder",
        ("fifo", "file"): "is not a regular file (a FIFO, a socket or a device)",
        ("fifo", "folder"): "is not a folder",
        ("missing", "file"): "does not exist",
        ("loop", "folder"): "cannot be read (Too many levels of symbolic links)",
    }
    found = {(name, kind): path_problem(tmp_path / name, kind) for name, kind in expected}
    assert found == expected


def test_json_holds_null_where_a_number_is_not_finite(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    report = {"l2": float("inf"), "rates": [float("nan"), 0.5], "pair": (-float("inf"), 1)}
    write_json(path, report)
    text = path.read_text()

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    assert json.loads(text, parse_constant=refuse) == {
        "l2": None,
        "rates": [None, 0.5],
        "pair": [None, 1],
    }
