"""zoo.summary: the structural-details table and its hand-written receptive field tracking."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from zoo import models
from zoo.tools.summary import LayerRow, ModelSummary, main, receptive_fields, summarize


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


# Arguments that change the layer table, beside each model's defaults.
VARIANTS: list[tuple[str, dict[str, object]]] = [
    *((name, {}) for name in models.available()),
    ("alexnet", {"variant": "torchvision"}),
    ("googlenet", {"aux_logits": False}),
    ("resnet50", {"small_input": True, "num_classes": 10}),
    *((f"vgg{depth}", {"batch_norm": True}) for depth in (11, 13, 16, 19)),
    ("unet", {"bilinear": True}),
]


@pytest.mark.parametrize(
    ("name", "kwargs"),
    VARIANTS,
    ids=[name + "".join(f"-{k}={v}" for k, v in kw.items()) for name, kw in VARIANTS],
)
def test_every_model_summarises_at_its_native_size(name: str, kwargs: dict[str, object]) -> None:
    model = build_meta(name, **kwargs)
    summary = summarize(model, native(model))
    params = sum(p.numel() for p in model.parameters())
    assert summary.total_params == params
    # GoogLeNet's auxiliary heads hold parameters but don't run in eval mode: they get no row.
    if not (name == "googlenet" and kwargs.get("aux_logits", True)):
        assert sum(row.params for row in summary.rows) == params
    assert summary.total_macs == sum(row.macs for row in summary.rows) > 0
    last = summary.rows[-1]
    if model.task == "segmentation":
        assert last.output_shape == (model.num_classes, *model.native_input_size)
        assert not last.rf.is_global
    else:
        assert last.output_shape == (model.num_classes,)
        assert last.rf.is_global
    # Every spatial layer has a finite receptive field until the global pool or the classifier.
    spatial = [row for row in summary.rows if row.rf is not None and not row.rf.is_global]
    assert spatial and all(row.rf.size >= 1 and row.rf.jump >= 1 for row in spatial)


@pytest.mark.parametrize(
    ("name", "layer", "rf"),
    [
        # BasicBlock: two 3x3 convolutions a block, 3-4-6-3 blocks.
        ("resnet34", "layer4.2.conv2", (899, 32)),
        # Bottleneck: one 3x3 a block, so a smaller rf than ResNet-34's despite more layers.
        ("resnet50", "layer4.2.conv3", (427, 32)),
        ("resnet50", "layer4.2:add", (427, 32)),
        # v1.5 strides in the 3x3: the 1x1 before it still sees the previous stage's grid.
        ("resnet50", "layer2.0.conv1", (35, 4)),
        ("resnet50", "layer2.0.conv2", (43, 8)),
        ("resnet50", "layer2.0.downsample.0", (35, 8)),
        # pool5 of each VGG configuration: A, B, D, E.
        ("vgg11", "features.20", (150, 32)),
        ("vgg13", "features.24", (156, 32)),
        ("vgg16", "features.30", (212, 32)),
        ("vgg19", "features.36", (268, 32)),
    ],
)
def test_receptive_fields_of_the_deeper_variants(
    name: str, layer: str, rf: tuple[int, int]
) -> None:
    model = build_meta(name)
    assert receptive_fields(model, native(model))[layer] == rf


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
        [sys.executable, "-m", "zoo.tools.summary", "alexnet", "--input", "3x227x227"],
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
