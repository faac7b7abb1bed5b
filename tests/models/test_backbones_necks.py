"""Backbones, necks and their shared layers: shapes, initialisation, training-only behaviour, export."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from inspector.models.backbones import BasicBlock, MobileNetV3, ResNetVd
from inspector.models.layers import (
    SPP,
    CoordConv,
    DeformableConvBNAct,
    DropBlock,
    coordinate_channels,
    make_divisible,
)
from inspector.models.necks import LiteFPN, PPYOLOFPN

STRIDES = (8, 16, 32)
REPO_ROOT = Path(__file__).resolve().parents[2]


def build(arch: str, in_channels: int = 3) -> tuple[paddle.nn.Layer, paddle.nn.Layer]:
    """A (backbone, neck) pair as the detector will combine them."""
    if arch.startswith("resnet"):
        backbone = ResNetVd(int(arch.removeprefix("resnet")), in_channels=in_channels)
        return backbone, PPYOLOFPN(backbone.out_channels, out_channels=(64, 128, 256))
    backbone = MobileNetV3(arch.removeprefix("mobilenetv3_"), in_channels=in_channels)
    return backbone, LiteFPN(backbone.out_channels, out_channels=96)


def assert_pyramid(maps: list[paddle.Tensor], channels: list[int], size: int) -> None:
    assert len(maps) == 3
    for feature, c, stride in zip(maps, channels, STRIDES):
        assert list(feature.shape) == [1, c, size // stride, size // stride]


@pytest.mark.parametrize(
    "arch, backbone_channels, neck_channels",
    [
        ("resnet18", [128, 256, 512], [64, 128, 256]),
        pytest.param("resnet34", [128, 256, 512], [64, 128, 256], marks=pytest.mark.slow),
        pytest.param("resnet50", [512, 1024, 2048], [64, 128, 256], marks=pytest.mark.slow),
        ("mobilenetv3_small", [24, 48, 96], [96, 96, 96]),
        ("mobilenetv3_large", [40, 112, 160], [96, 96, 96]),
    ],
)
def test_backbone_and_neck_strides_and_channels(arch, backbone_channels, neck_channels):
    backbone, neck = build(arch)
    backbone.eval()
    neck.eval()
    assert backbone.out_channels == backbone_channels
    assert neck.out_channels == neck_channels
    for size in (320, 256):
        feats = backbone(paddle.rand([1, 3, size, size]))
        assert_pyramid(feats, backbone_channels, size)
        assert_pyramid(neck(feats), neck_channels, size)


@pytest.mark.parametrize("arch", ["resnet18", "mobilenetv3_small"])
def test_six_channel_input_for_image_plus_template(arch):
    backbone, neck = build(arch, in_channels=6)
    backbone.eval()
    neck.eval()
    feats = backbone(paddle.rand([1, 6, 256, 256]))
    assert_pyramid(neck(feats), neck.out_channels, 256)
    with pytest.raises(ValueError):  # a 3-channel image must not silently pass through
        backbone(paddle.rand([1, 3, 256, 256]))


def test_mobilenetv3_width_multiplier_rounds_channels_to_multiples_of_8():
    backbone = MobileNetV3("small", width=0.75)
    assert backbone.out_channels == [24, 40, 72]  # 24*.75=18 -> 24, 48*.75=36 -> 40, 96*.75=72
    assert all(c % 8 == 0 for c in backbone.out_channels)
    backbone.eval()
    assert_pyramid(backbone(paddle.rand([1, 3, 256, 256])), [24, 40, 72], 256)


def test_make_divisible_follows_the_mobilenet_rule():
    assert make_divisible(16) == 16
    assert make_divisible(36) == 40  # nearest multiple of 8 (ties round up)
    assert make_divisible(18) == 24  # 16 would lose more than 10%
    assert make_divisible(10) == 16  # 8 would lose more than 10%
    assert make_divisible(3) == 8  # never below the divisor


def test_lite_fpn_without_bottom_up_path():
    neck = LiteFPN([24, 48, 96], out_channels=64, bottom_up=False)
    neck.eval()
    feats = [paddle.rand([1, c, 320 // s, 320 // s]) for c, s in zip([24, 48, 96], STRIDES)]
    assert_pyramid(neck(feats), [64, 64, 64], 320)
    assert not hasattr(neck, "downsamples")


def test_bad_configurations_are_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match="depth"):
        ResNetVd(101)
    with pytest.raises(ValueError, match="variant"):
        MobileNetV3("tiny")
    with pytest.raises(ValueError, match="3 input levels"):
        PPYOLOFPN([256, 512])
    with pytest.raises(ValueError, match="block_size"):
        DropBlock(block_size=4)


def test_resnet_convs_use_kaiming_init_and_residual_blocks_start_as_identity():
    backbone = ResNetVd(18)
    stem_weight = backbone.stem[0].conv.weight.numpy()
    expected_std = np.sqrt(2.0 / (3 * 3 * 3))  # fan-in of a 3x3 conv over 3 channels, ReLU gain
    assert abs(stem_weight.std() / expected_std - 1.0) < 0.2

    block = backbone.stages[0][1]  # 64 -> 64, stride 1: identity shortcut
    assert isinstance(block, BasicBlock)
    assert np.all(block.conv2.bn.weight.numpy() == 0.0)
    block.eval()
    x = F.relu(paddle.randn([1, 64, 16, 16]))
    np.testing.assert_allclose(block(x).numpy(), x.numpy(), atol=1e-6)


@pytest.mark.slow
def test_dcn_only_in_last_stage_starts_with_zero_offsets_and_trains():
    backbone = ResNetVd(18, dcn_last_stage=True)
    deformable = [
        (name, layer) for name, layer in backbone.named_sublayers() if isinstance(layer, DeformableConvBNAct)
    ]
    assert len(deformable) == 4  # 2 BasicBlocks x 2 3x3 convs
    assert all(name.startswith("stages.3.") for name, _ in deformable)

    dcn = deformable[0][1]  # first block: stride 2
    x = paddle.randn([1, 256, 20, 20])
    offsets, mask = dcn.offsets_and_mask(x)
    assert list(offsets.shape) == [1, 18, 10, 10]
    assert np.all(offsets.numpy() == 0.0)
    np.testing.assert_allclose(mask.numpy(), 0.5)
    # With zero offsets the deformable conv samples the regular grid: a plain conv times the mask.
    plain = F.conv2d(x, dcn.conv.weight, stride=2, padding=1)
    np.testing.assert_allclose(dcn.conv(x, offsets, mask).numpy(), 0.5 * plain.numpy(), rtol=1e-4, atol=1e-4)

    # The whole path runs forward and backward. At init the zero-gamma BN closing each residual
    # branch blocks the gradient to the branch, so only that gamma learns at first ...
    backbone.train()
    feats = backbone(paddle.randn([1, 3, 256, 256]))
    assert_pyramid(feats, [128, 256, 512], 256)
    sum((f * f).mean() for f in feats).backward()
    closing_bn = backbone.stages[3][0].conv2.bn
    assert float(closing_bn.weight.grad.abs().sum()) > 0.0
    # ... and once it has opened, the zero-initialised offset predictor receives gradient too.
    backbone.clear_gradients()
    paddle.assign(paddle.ones_like(closing_bn.weight), closing_bn.weight)
    feats = backbone(paddle.randn([1, 3, 256, 256]))
    sum((f * f).mean() for f in feats).backward()
    assert float(dcn.offset_mask.weight.grad.abs().sum()) > 0.0


def test_dropblock_is_identity_in_eval_and_drops_blocks_in_train():
    paddle.seed(0)
    drop = DropBlock(block_size=3, keep_prob=0.8)
    x = paddle.ones([2, 4, 48, 48])

    drop.eval()
    assert np.array_equal(drop(x).numpy(), x.numpy())

    drop.train()
    out = drop(x).numpy()
    zero = out == 0.0
    dropped_fraction = zero.mean()
    assert 0.1 < dropped_fraction < 0.3  # about 1 - keep_prob
    # Survivors are rescaled so the expected activation sum is unchanged.
    np.testing.assert_allclose(out.sum(), x.numpy().sum(), rtol=1e-4)
    # Dropped pixels come in blocks: none is isolated, and full 3x3 squares occur.
    padded = np.pad(zero, ((0, 0), (0, 0), (1, 1), (1, 1)))
    has_zero_neighbour = (
        padded[..., :-2, 1:-1] | padded[..., 2:, 1:-1] | padded[..., 1:-1, :-2] | padded[..., 1:-1, 2:]
    )
    assert not np.any(zero & ~has_zero_neighbour)
    full_squares = sum(zero[..., dy : dy + 46, dx : dx + 46] for dy in range(3) for dx in range(3)) == 9
    assert full_squares.any()


def test_ppyolo_fpn_dropblock_only_changes_training_outputs():
    paddle.seed(0)
    neck = PPYOLOFPN([128, 256, 512], out_channels=(64, 128, 256), keep_prob=0.5)
    feats = [paddle.rand([1, c, 256 // s, 256 // s]) for c, s in zip([128, 256, 512], STRIDES)]
    neck.eval()
    first, second = neck(feats), neck(feats)
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(first, second))
    neck.train()
    first, second = neck(feats), neck(feats)
    assert not np.allclose(first[2].numpy(), second[2].numpy())


def test_coordinate_channels_and_coordconv_input_width():
    x = paddle.zeros([2, 5, 4, 6])
    coords = coordinate_channels(x).numpy()
    assert coords.shape == (2, 2, 4, 6)
    expected_x = (np.arange(6) + 0.5) / 6 * 2 - 1
    expected_y = (np.arange(4) + 0.5) / 4 * 2 - 1
    np.testing.assert_allclose(coords[:, 0], np.broadcast_to(expected_x[None, None, :], (2, 4, 6)), atol=1e-6)
    np.testing.assert_allclose(coords[:, 1], np.broadcast_to(expected_y[None, :, None], (2, 4, 6)), atol=1e-6)

    layer = CoordConv(5, 8, kernel_size=1)
    assert list(layer.conv.conv.weight.shape) == [8, 7, 1, 1]  # 5 input + x + y
    layer.eval()
    assert list(layer(paddle.rand([1, 5, 10, 12])).shape) == [1, 8, 10, 12]


def test_spp_concatenates_input_and_three_pools():
    spp = SPP(16, 8)
    assert list(spp.fuse.conv.weight.shape) == [8, 64, 1, 1]  # input + pools 5, 9, 13
    spp.eval()
    assert list(spp(paddle.rand([1, 16, 10, 10])).shape) == [1, 8, 10, 10]


EXPORT_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    import paddle
    from inspector.models.backbones import MobileNetV3, ResNetVd
    from inspector.models.layers import exp, sigmoid
    from inspector.models.necks import LiteFPN, PPYOLOFPN

    class BackboneAndNeck(paddle.nn.Layer):
        def __init__(self, backbone, neck):
            super().__init__()
            self.backbone = backbone
            self.neck = neck

        def forward(self, images):
            return self.neck(self.backbone(images))

    class ExportSafeOps(paddle.nn.Layer):  # F.sigmoid / paddle.exp themselves fail in a legacy program
        def forward(self, images):
            return [sigmoid(images), exp(images)]

    out_dir = sys.argv[1]
    small = MobileNetV3("small", in_channels=6)
    teacher = ResNetVd(18, dcn_last_stage=True)
    models = {
        "student": (BackboneAndNeck(small, LiteFPN(small.out_channels)), 6),
        "teacher": (BackboneAndNeck(teacher, PPYOLOFPN(teacher.out_channels)), 3),
        "ops": (ExportSafeOps(), 3),
    }
    for name, (model, channels) in models.items():
        model.eval()
        spec = [paddle.static.InputSpec([None, channels, None, None], "float32", "images")]
        paddle.jit.save(paddle.jit.to_static(model, input_spec=spec, full_graph=True), os.path.join(out_dir, name))
        loaded = paddle.jit.load(os.path.join(out_dir, name))
        for size in (256, 320):  # one exported program, any multiple of 32
            images = paddle.rand([1, channels, size, size])
            for want, got in zip(model(images), loaded(images)):
                assert want.shape == got.shape, (name, size, want.shape, got.shape)
                assert float(want.std()) > 0
                np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)
    images = paddle.rand([2, 3, 32, 32]) * 8 - 4
    got_sigmoid, got_exp = paddle.jit.load(os.path.join(out_dir, "ops"))(images)
    np.testing.assert_allclose(got_sigmoid.numpy(), 1 / (1 + np.exp(-images.numpy())), rtol=1e-5)
    np.testing.assert_allclose(got_exp.numpy(), np.exp(images.numpy()), rtol=1e-5)
    print("exported", sorted(os.listdir(out_dir)))
    """
)


@pytest.mark.slow
def test_export_to_legacy_pdmodel(tmp_path):
    # FLAGS_enable_pir_api must be set before paddle is imported, hence a fresh interpreter.
    script = tmp_path / "export_backbones.py"  # to_static needs the model source in a real file
    script.write_text(EXPORT_SCRIPT)
    out_dir = tmp_path / "exported"
    out_dir.mkdir()
    env = {**os.environ, "FLAGS_enable_pir_api": "0", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(script), str(out_dir)], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    for name in ("student", "teacher", "ops"):
        assert (out_dir / f"{name}.pdmodel").stat().st_size > 0
    for name in ("student", "teacher"):
        assert (out_dir / f"{name}.pdiparams").stat().st_size > 0
