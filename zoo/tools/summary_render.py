"""The summary table on the console: rich table, number formatting and the totals."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # summary.py imports this module for its command line
    from zoo.tools.summary import ModelSummary

__all__ = ["render"]


def _fmt_shape(shape: tuple[int, ...] | None) -> str:
    return "-" if not shape else "x".join(map(str, shape))


def _fmt_geometry(value: tuple[int, ...] | str | None, kernel: bool = False) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if len(set(value)) == 1:
        # Kernels read as the lecture writes them (11x11); strides and paddings as one number.
        return f"{value[0]}x{value[0]}" if kernel else str(value[0])
    return "x".join(map(str, value))


def _fmt_int(n: int) -> str:
    return f"{n:,}" if n else ""


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(int(n))


def render(summary: ModelSummary, console: Console | None = None) -> None:
    """Print ``summary`` as a rich table followed by the totals."""
    if console is None:
        console = Console()
        if not console.is_terminal:
            # Piped output: don't squeeze the table into rich's 80-column default.
            console = Console(width=200)
    c, h, w = summary.input_size
    table = Table(
        title=f"{summary.model_name}, input {c}x{h}x{w} (C x H x W, batch 1)",
        title_justify="left",
    )
    table.add_column("Layer", no_wrap=True)
    table.add_column("Type", no_wrap=True)
    for header in ("Input", "Output", "Kernel", "Stride", "Pad", "Params", "MACs", "RF", "Jump"):
        table.add_column(header, justify="right", no_wrap=True)
    for row in summary.rows:
        rf = row.rf
        merge = row.input_shape is None
        table.add_row(
            row.name,
            f"[italic]{row.kind}[/italic]" if merge else row.kind,
            _fmt_shape(row.input_shape),
            _fmt_shape(row.output_shape),
            _fmt_geometry(row.kernel, kernel=True),
            _fmt_geometry(row.stride),
            _fmt_geometry(row.padding),
            _fmt_int(row.params),
            _fmt_int(row.macs),
            "global" if rf.is_global else str(rf.size),
            "-" if rf.is_global else str(rf.jump),
        )
    console.print(table)
    console.print(
        f"Total params: {summary.total_params:,}"
        f" (trainable {summary.trainable_params:,})\n"
        f"Total MACs:   {summary.total_macs:,} ({_human(summary.total_macs)}MAC)\n"
        "RF: receptive field in input pixels; Jump: input pixels between neighbouring outputs."
    )
