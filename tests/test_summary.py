"""zoo.summary: the structural-details table and its hand-written receptive field tracking."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from zoo import models
from zoo.summary import LayerRow, ModelSummary, main, receptive_fields, summarize


def build_meta(name: str, **kwargs: object) -> nn.Module:
    # Shapes, counts and receptive fields don't need weights: the meta device skips the
    # allocation and the arithmetic, which keeps VGG16 and AlexNet instant on a small CPU.
    with torch.device("meta"):
        return models.build(name, **kwargs)


def native(model: nn.Module) -> tuple[int, int, int]:
    return (model.in_channels, *model.native_input_size)


def rows_of(summary: ModelSummary, kind: str) -> list[LayerRow]:
    return [row for row in summary.rows if row.kind.split("+")[0] == kind]


def test_lenet_rows_and_total() -> None:
    summary = summarize(models.build("lenet"), (1, 32, 32))  # real weights, on the CPU
    assert summary.total_params == 61_706
    assert sum(row.params for row in summary.rows) == 61_706
    table = [
        (r.kind, r.input_shape, r.output_shape, r.kernel, r.params, r.rf.size, r.rf.jump)
        for r in summary.rows
    ]
    assert table == [
        ("Conv2d+Tanh", (1, 32, 32), (6, 28, 28), (5, 5), 156, 5, 1),
        ("AvgPool2d", (6, 28, 28), (6, 14, 14), (2, 2), 0, 6, 2),
        ("Conv2d+Tanh", (6, 14, 14), (16, 10, 10), (5, 5), 2_416, 14, 2),
        ("AvgPool2d", (16, 10, 10), (16, 5, 5), (2, 2), 0, 16, 4),
        ("Linear+Tanh", (400,), (120,), None, 48_120, None, None),
        ("Linear+Tanh", (120,), (84,), None, 10_164, None, None),
        ("Linear", (84,), (10,), None, 850, None, None),
    ]
    # C1: one MAC per weight and output position, bias included (torchinfo's convention).
    assert summary.rows[0].macs == 156 * 28 * 28


def test_lenet_unfolded_has_a_row_per_leaf() -> None:
    summary = summarize(models.build("lenet"), (1, 32, 32), fold=False)
    assert [r.kind for r in summary.rows] == [
        "Conv2d", "Tanh", "AvgPool2d", "Conv2d", "Tanh", "AvgPool2d",
        "Linear", "Tanh", "Linear", "Tanh", "Linear",
    ]  # fmt: skip


def test_alexnet_original() -> None:
    model = build_meta("alexnet", variant="original")
    summary = summarize(model, (3, 227, 227))
    assert summary.total_params == 62_378_344
    convs, pools = rows_of(summary, "Conv2d"), rows_of(summary, "MaxPool2d")
    assert [r.output_shape for r in convs] == [
        (96, 55, 55), (256, 27, 27), (384, 13, 13), (384, 13, 13), (256, 13, 13),
    ]  # fmt: skip
    assert (convs[0].kernel, convs[0].stride, convs[0].padding) == ((11, 11), (4, 4), (0, 0))
    assert [r.rf.size for r in convs] == [11, 51, 99, 131, 163]
    pool5 = pools[-1]
    assert pool5.output_shape == (256, 6, 6)
    assert (pool5.rf.size, pool5.rf.jump) == (195, 32)
    assert receptive_fields(model, (3, 227, 227))[pool5.name] == (195, 32)
    # The adaptive 6x6 pool is the identity at the native size; the classifier sees it all.
    assert rows_of(summary, "AdaptiveAvgPool2d")[0].rf == (195, 32)
    assert summary.rows[-1].rf.is_global


def test_vgg16() -> None:
    summary = summarize(build_meta("vgg16"), (3, 224, 224))
    assert summary.total_params == 138_357_544
    conv5_3 = rows_of(summary, "Conv2d")[-1]
    pool5 = rows_of(summary, "MaxPool2d")[-1]
    assert (conv5_3.output_shape, conv5_3.rf.size, conv5_3.rf.jump) == ((512, 14, 14), 196, 16)
    assert (pool5.output_shape, pool5.rf.size, pool5.rf.jump) == ((512, 7, 7), 212, 32)


def test_resnet18_on_cpu_matches_meta() -> None:
    real = summarize(models.build("resnet18"), (3, 224, 224))
    assert real == summarize(build_meta("resnet18"), (3, 224, 224))
    assert real.total_params == 11_689_512
    rfs = receptive_fields(models.build("resnet18"), (3, 224, 224))
    assert rfs["layer4.1.conv2"] == (435, 32)
    # The residual sums take the larger rf of their two branches.
    assert rfs["layer4.0.downsample.0"] == (211, 32)
    assert rfs["layer4.0:add"] == (307, 32) == rfs["layer4.0.conv2"]
    assert rfs["avgpool"].is_global


def test_googlenet_concat_takes_the_widest_branch() -> None:
    model = build_meta("googlenet")
    summary = summarize(model, (3, 224, 224))
    assert summary.total_params == 13_004_888  # the auxiliary heads count, though not run
    rfs = receptive_fields(model, (3, 224, 224))
    branches = [rf for name, rf in rfs.items() if name.startswith("inception3a.branch")]
    assert rfs["inception3a:cat"] == max(branches) == (43, 8)
    assert min(rf.size for rf in branches) == 27


class TwoBranches(nn.Module):
    """A 5x5 branch and a 1x1 branch, merged in place in the given order."""

    def __init__(self, wide_first: bool) -> None:
        super().__init__()
        self.wide = nn.Conv2d(1, 2, kernel_size=5, padding=2)
        self.narrow = nn.Conv2d(1, 2, kernel_size=1)
        self.pool = nn.MaxPool2d(2)
        self.wide_first = wide_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.wide(x), self.narrow(x)
        if self.wide_first:
            a += b
            return self.pool(a)
        b += a
        return self.pool(b)


@pytest.mark.parametrize("wide_first", [True, False])
def test_inplace_add_takes_the_max(wide_first: bool) -> None:
    rfs = receptive_fields(TwoBranches(wide_first), (1, 8, 8))
    assert rfs["(model):add"] == (5, 1)
    assert rfs["pool"] == (6, 2)


def test_unet_transposed_convs_and_skips() -> None:
    model = build_meta("unet", base_width=8)
    summary = summarize(model, (3, 64, 64))
    # Four 2x2 pools take the jump to 16, four stride-2 up-convolutions bring it back to 1.
    assert summary.rows[-1].output_shape == (2, 64, 64)
    assert summary.rows[-1].rf == (200, 1)
    up = next(r for r in summary.rows if r.kind == "ConvTranspose2d")
    assert (up.input_shape, up.output_shape, up.rf) == ((128, 4, 4), (64, 8, 8), (140, 8))
    # Each input position meets each weight once (torchinfo alone would count 4x as many).
    assert up.macs == 128 * 64 * 2 * 2 * 4 * 4 + 64 * 8 * 8
    assert summary.total_macs == sum(r.macs for r in summary.rows)


def test_bad_input_size() -> None:
    with pytest.raises(ValueError, match="too small"):
        summarize(build_meta("alexnet"), (3, 32, 32))
    with pytest.raises(ValueError, match="channels, height, width"):
        summarize(build_meta("alexnet"), (227, 227))


def test_cli_prints_the_table() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "zoo.summary", "alexnet", "--input", "3x227x227"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Total params: 62,378,344" in result.stdout
    assert "features.12" in result.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["alexnet", "--input", "3x22"], "--input must be CxHxW"),
        (["alexnet", "--input", "3x22x22"], "too small"),
        (["no_such_model"], "unknown model"),
        (["alexnet", "--arg", "variant"], "--arg must be key=value"),
    ],
)
def test_cli_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
