"""Small building blocks shared by the backbones and necks.

Everything here is a plain ``paddle.nn.Layer`` that works in dygraph and survives
``paddle.jit.to_static`` export: no Python branching on tensor values, and anything that depends on
the feature-map size (CoordConv's coordinates) is computed from the runtime shape.

Initialisation is chosen for training from scratch, because no pretrained weights exist here:
Kaiming-normal convolutions (fan-in, ReLU gain) and BatchNorm with gamma 1 / beta 0, except where a
block asks for a zero gamma so that a residual branch starts as the identity.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddle import ParamAttr
from paddle.base.layer_helper import LayerHelper
from paddle.framework import in_dynamic_or_pir_mode
from paddle.nn.initializer import Constant, KaimingNormal
from paddle.vision.ops import DeformConv2D

ACTIVATIONS = ("relu", "relu6", "leaky_relu", "hardswish", "none")


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to the nearest multiple of ``divisor``, never going below 90% of it.

    This is the rounding rule of the MobileNet papers; multiples of 8 keep ARM kernels efficient.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def make_activation(name: str) -> nn.Layer:
    """The activation layer called ``name`` (one of ``ACTIVATIONS``); ``"none"`` is the identity."""
    if name == "relu":
        return nn.ReLU()
    if name == "relu6":
        return nn.ReLU6()
    if name == "leaky_relu":
        return nn.LeakyReLU(0.1)  # slope 0.1 as in YOLOv3 / PP-YOLO
    if name == "hardswish":
        return nn.Hardswish()
    if name == "none":
        return nn.Identity()
    raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")


def _unary_op(op_type: str, x: paddle.Tensor) -> paddle.Tensor:
    """Append the legacy-program operator ``op_type`` (input ``X``, output ``Out``) for ``x``.

    Paddle 3.3's Python ``F.sigmoid``, ``paddle.exp`` (and ``tanh``, ``log``, ``sqrt``, ``abs``,
    ``maximum``, ``argmax``, ``floor``, ...) only accept dygraph tensors and PIR values; while
    exporting a legacy program (``FLAGS_enable_pir_api=0``, the ``.pdmodel`` Paddle Lite needs) they
    receive a ``Variable`` and raise. The operators themselves exist, so we append them directly.
    """
    helper = LayerHelper(op_type)
    out = helper.create_variable_for_type_inference(x.dtype)
    helper.append_op(type=op_type, inputs={"X": [x]}, outputs={"Out": [out]})
    return out


def sigmoid(x: paddle.Tensor) -> paddle.Tensor:
    """``F.sigmoid`` that also works while exporting a legacy program (see ``_unary_op``)."""
    return F.sigmoid(x) if in_dynamic_or_pir_mode() else _unary_op("sigmoid", x)


def exp(x: paddle.Tensor) -> paddle.Tensor:
    """``paddle.exp`` that also works while exporting a legacy program (see ``_unary_op``)."""
    return paddle.exp(x) if in_dynamic_or_pir_mode() else _unary_op("exp", x)


def sqrt(x: paddle.Tensor) -> paddle.Tensor:
    """``paddle.sqrt`` that also works while exporting a legacy program (see ``_unary_op``)."""
    return paddle.sqrt(x) if in_dynamic_or_pir_mode() else _unary_op("sqrt", x)


def kaiming_conv_attr() -> ParamAttr:
    """Weight attribute for a convolution trained from scratch (He et al. 2015, fan-in)."""
    return ParamAttr(initializer=KaimingNormal())


def batch_norm(channels: int, zero_gamma: bool = False) -> nn.BatchNorm2D:
    """BatchNorm2D; ``zero_gamma`` makes it output zeros at first (last BN of a residual branch)."""
    gamma = ParamAttr(initializer=Constant(0.0 if zero_gamma else 1.0))
    beta = ParamAttr(initializer=Constant(0.0))
    return nn.BatchNorm2D(channels, weight_attr=gamma, bias_attr=beta)


class ConvBNAct(nn.Layer):
    """Convolution (no bias) -> BatchNorm -> activation, with "same" padding for odd kernels."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        act: str = "relu",
        zero_gamma: bool = False,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2D(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            groups=groups,
            weight_attr=kaiming_conv_attr(),
            bias_attr=False,  # the BatchNorm's beta plays the role of the bias
        )
        self.bn = batch_norm(out_channels, zero_gamma)
        self.act = make_activation(act)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.act(self.bn(self.conv(x)))


class DepthwiseSeparableConv(nn.Layer):
    """Depthwise k x k ConvBNAct followed by a pointwise 1x1 ConvBNAct: the cheap 3x3 of mobile nets."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, act: str = "hardswish"
    ) -> None:
        super().__init__()
        self.depthwise = ConvBNAct(in_channels, in_channels, kernel_size, stride, groups=in_channels, act=act)
        self.pointwise = ConvBNAct(in_channels, out_channels, 1, act=act)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.pointwise(self.depthwise(x))


class DeformableConvBNAct(nn.Layer):
    """Modulated deformable convolution (DCNv2, Zhu et al. 2019) -> BatchNorm -> activation.

    A plain convolution predicts, for every output position, an (x, y) offset and a modulation mask
    for each of the k*k kernel taps. That predictor starts at zero, so the offsets start at zero and
    the mask at sigmoid(0) = 0.5 everywhere: the layer begins as a regular convolution scaled by a
    constant 0.5, which the following BatchNorm normalises away, and learns to deform from there.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        act: str = "relu",
        zero_gamma: bool = False,
    ) -> None:
        super().__init__()
        self.taps = kernel_size * kernel_size
        zero = ParamAttr(initializer=Constant(0.0))
        self.offset_mask = nn.Conv2D(
            in_channels,
            3 * self.taps,  # 2 offsets (y, x) + 1 mask value per tap
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            weight_attr=zero,
            bias_attr=ParamAttr(initializer=Constant(0.0)),
        )
        self.conv = DeformConv2D(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            weight_attr=kaiming_conv_attr(),
            bias_attr=False,
        )
        self.bn = batch_norm(out_channels, zero_gamma)
        self.act = make_activation(act)

    def offsets_and_mask(self, x: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        """The sampling offsets (B, 2*k*k, H', W') and modulation mask (B, k*k, H', W') for ``x``."""
        predicted = self.offset_mask(x)
        offsets = predicted[:, : 2 * self.taps]
        mask = sigmoid(predicted[:, 2 * self.taps :])
        return offsets, mask

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        offsets, mask = self.offsets_and_mask(x)
        return self.act(self.bn(self.conv(x, offsets, mask)))


def coordinate_channels(x: paddle.Tensor) -> paddle.Tensor:
    """Two channels (x then y) holding each pixel centre's normalised position in (-1, 1).

    Built from the runtime shape of ``x`` with broadcasting, so one exported program serves any
    input size. Pixel centres ((i + 0.5) / n * 2 - 1) keep a 1-pixel-wide map well defined.
    """
    shape = paddle.shape(x)
    height, width = shape[2], shape[3]
    xs = (paddle.arange(width, dtype="float32") + 0.5) / paddle.cast(width, "float32") * 2.0 - 1.0
    ys = (paddle.arange(height, dtype="float32") + 0.5) / paddle.cast(height, "float32") * 2.0 - 1.0
    zeros = paddle.zeros_like(x[:, :1, :, :])  # (B, 1, H, W) to broadcast against
    grid_x = zeros + xs.reshape([1, 1, 1, -1])
    grid_y = zeros + ys.reshape([1, 1, -1, 1])
    return paddle.concat([grid_x, grid_y], axis=1)


class CoordConv(nn.Layer):
    """ConvBNAct over the input plus two coordinate channels (Liu et al. 2018, "CoordConv").

    Convolutions are translation invariant; giving them the pixel position lets the detector learn
    position-dependent behaviour (PP-YOLO uses it in the FPN) for the price of two input channels.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, act: str = "leaky_relu"
    ) -> None:
        super().__init__()
        self.conv = ConvBNAct(in_channels + 2, out_channels, kernel_size, stride, act=act)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.conv(paddle.concat([x, coordinate_channels(x)], axis=1))


class DropBlock(nn.Layer):
    """DropBlock (Ghiasi et al. 2018): during training, zero out square blocks of a feature map.

    Dropping contiguous regions regularises convolutional features far better than dropout's single
    pixels, which neighbouring pixels simply fill back in. ``keep_prob`` is the expected fraction of
    activations kept; the survivors are rescaled so the expected sum is unchanged. In eval mode (and
    therefore in every exported model) the layer is the identity.
    """

    def __init__(self, block_size: int = 3, keep_prob: float = 0.9) -> None:
        super().__init__()
        if block_size < 1 or block_size % 2 == 0:
            raise ValueError(f"DropBlock block_size must be a positive odd number, got {block_size}")
        if not 0.0 < keep_prob <= 1.0:
            raise ValueError(f"DropBlock keep_prob must be in (0, 1], got {keep_prob}")
        self.block_size = block_size
        self.keep_prob = keep_prob

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if not self.training or self.keep_prob == 1.0:
            return x
        height, width = x.shape[2], x.shape[3]
        # Rate of block *centres* so that about (1 - keep_prob) of the positions end up dropped
        # (the paper's gamma), counting only centres whose block fits inside the map.
        valid_h = max(height - self.block_size + 1, 1)
        valid_w = max(width - self.block_size + 1, 1)
        gamma = (1.0 - self.keep_prob) / self.block_size**2 * (height * width) / (valid_h * valid_w)
        centres = paddle.bernoulli(paddle.full_like(x, min(gamma, 1.0)))
        # Growing each centre into a block_size square is a stride-1 max-pool of the centre map.
        dropped = F.max_pool2d(centres, self.block_size, stride=1, padding=self.block_size // 2)
        keep = 1.0 - dropped
        scale = keep.numel().astype("float32") / paddle.clip(keep.sum(), min=1.0)
        return x * keep * scale


class SPP(nn.Layer):
    """Spatial pyramid pooling as in YOLOv3-SPP: stride-1 max-pools of several sizes, concatenated
    with the input and fused by a 1x1 ConvBNAct. It widens the receptive field of the deepest level
    at almost no parameter cost."""

    def __init__(
        self, in_channels: int, out_channels: int, pool_sizes: tuple[int, ...] = (5, 9, 13), act: str = "leaky_relu"
    ) -> None:
        super().__init__()
        self.pool_sizes = tuple(pool_sizes)
        self.fuse = ConvBNAct(in_channels * (len(self.pool_sizes) + 1), out_channels, 1, act=act)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        pooled = [F.max_pool2d(x, size, stride=1, padding=size // 2) for size in self.pool_sizes]
        return self.fuse(paddle.concat([x, *pooled], axis=1))


class SqueezeExcite(nn.Layer):
    """Squeeze-and-excitation (Hu et al. 2018) with MobileNetV3's hard-sigmoid gate: global average
    pool -> 1x1 reduce + ReLU -> 1x1 expand -> hard-sigmoid, multiplied back onto the channels."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        squeezed = make_divisible(channels / reduction, 8)
        self.reduce = nn.Conv2D(channels, squeezed, 1, weight_attr=kaiming_conv_attr())
        self.expand = nn.Conv2D(squeezed, channels, 1, weight_attr=kaiming_conv_attr())

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        gate = F.adaptive_avg_pool2d(x, 1)
        gate = F.relu(self.reduce(gate))
        gate = F.hardsigmoid(self.expand(gate))  # relu6(x + 3) / 6, Paddle's default slope/offset
        return x * gate
