"""``ModelConfig``: everything needed to rebuild a detector, saved with every checkpoint and package.

The architecture is named by one string, ``arch``:

- ``ppyolo-r18``, ``ppyolo-r34``, ``ppyolo-r50``, ``ppyolo-r50-dcn``: PP-YOLO style teacher,
  ResNet-vd backbone (the ``-dcn`` variant puts deformable convolutions in the last stage) with the
  PP-YOLO FPN and the full head.
- ``mbv3-small``, ``mbv3-large``, optionally with a width multiplier such as ``mbv3-small-x0.75``:
  the deployable student, MobileNetV3 backbone with a light FPN and the depthwise head.

The head is named by ``head``: ``yolo`` (anchor-based, PP-YOLO; the default, so every existing
checkpoint and package still loads) or ``gfl`` (anchor-free, PP-PicoDet / PP-YOLOE family: quality
scores, box distributions, task-aligned assignment; see ``gfl_head.py``), on either family.

numpy/stdlib only, so the runtime can read a package's config without paddle.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from inspector.config_base import ConfigBase, setting
from inspector.data.layouts import InputLayout, input_layout
from inspector.models.anchors import Anchor, default_anchors
ARCH_NAMES = ("ppyolo-r18", "ppyolo-r34", "ppyolo-r50", "ppyolo-r50-dcn", "mbv3-small", "mbv3-large")
HEADS = ("yolo", "gfl")
GFL_CLS_LOSSES = ("vfl", "qfl")


@dataclass(frozen=True)
class ArchSpec:
    """The parsed ``arch`` string: which backbone, neck and head ``build_model`` assembles."""

    family: Literal["ppyolo", "mbv3"]
    resnet_depth: int | None = None  # ppyolo only
    dcn: bool = False  # ppyolo only: deformable convs in the last backbone stage
    mobilenet_variant: Literal["small", "large"] | None = None  # mbv3 only
    width: float = 1.0  # mbv3 only: channel multiplier


_ARCH_PATTERN = re.compile(
    r"^(?:ppyolo-r(?P<depth>18|34|50)(?P<dcn>-dcn)?|mbv3-(?P<variant>small|large)(?:-x(?P<width>\d+(?:\.\d+)?))?)$"
)


def parse_arch(arch: str) -> ArchSpec:
    """Parse an architecture name (see the module docstring); ValueError names what is accepted."""
    match = _ARCH_PATTERN.match(arch)
    expected = f"one of {', '.join(ARCH_NAMES)} (mbv3 optionally with a width suffix such as mbv3-small-x0.75)"
    if match is None:
        raise ValueError(f"arch: unknown architecture {arch!r}; expected {expected}")
    if match["depth"] is not None:
        depth = int(match["depth"])
        if match["dcn"] and depth != 50:
            raise ValueError(f"arch: {arch!r}: deformable convolutions come with ResNet-50 only; expected {expected}")
        return ArchSpec(family="ppyolo", resnet_depth=depth, dcn=bool(match["dcn"]))
    width = float(match["width"]) if match["width"] else 1.0
    if not 0.25 <= width <= 2.0:
        raise ValueError(f"arch: {arch!r}: width multiplier must be within [0.25, 2.0], got {width}")
    return ArchSpec(family="mbv3", mobilenet_variant=match["variant"], width=width)  # type: ignore[arg-type]


@dataclass
class ModelConfig(ConfigBase):
    """A detector's architecture, input and loss settings.

    ``anchors`` are (width, height) in input pixels, one list per stride; left empty they default to
    the DeepPCB set scaled to ``input_size`` (``anchors.default_anchors``). Saved in every checkpoint and
    package: a new field's default must give the old behaviour (``from_dict`` fills a missing field with it).
    """

    KIND = "model config field"
    SOURCE = "model config"

    arch: str = "ppyolo-r50"
    num_classes: int = setting(6, at_least=1)
    input_size: int = 640
    input_mode: str = "image"  # one of inspector.data.layouts.INPUT_MODES (what the channels are)
    strides: tuple[int, ...] = (8, 16, 32)
    anchors: list[list[Anchor]] = field(default_factory=list)
    iou_aware: bool = True  # predict the IoU of each box and use it in the score (PP-YOLO)
    iou_aware_factor: float = setting(0.5, at_least=0.0, at_most=1.0)  # score = obj^(1-a) * iou^a * cls
    # grid-sensitive decoding: centres can reach the cell borders
    scale_x_y: float = setting(1.05, at_least=1.0)
    # Loss settings (see loss.py for what each does).
    anchor_match_threshold: float = 0.5
    ignore_threshold: float = 0.7
    iou_loss_weight: float = 2.5
    iou_aware_loss_weight: float = 1.0
    # Head family; the gfl settings below are read only when head == "gfl" (see gfl_head.py, gfl_loss.py).
    # "yolo" (anchor-based) | "gfl" (anchor-free, quality score + box distribution)
    head: str = setting("yolo", choices=HEADS)
    # each box side is a distribution over reg_max + 1 bins of 0..reg_max strides
    reg_max: int = setting(7, at_least=1, at_most=32, note="bins per box side minus one")
    # conv layers per level before the prediction conv (PicoDet-S: 2, 5x5)
    gfl_tower_depth: int = setting(1, at_least=1, at_most=4)
    # their kernel: depthwise k x k (student) or k x k conv (teacher)
    gfl_tower_kernel: int = setting(3, choices=(1, 3, 5, 7))
    # "vfl" (varifocal, PP-YOLOE) | "qfl" (quality focal, GFL / PicoDet)
    gfl_cls_loss: str = setting("vfl", choices=GFL_CLS_LOSSES)
    gfl_cls_weight: float = setting(1.0, at_least=0.0)
    # GIoU loss (PicoDet's weights and normalisation: 1.0 / 2.0 / 0.25)
    gfl_iou_weight: float = setting(2.0, at_least=0.0)
    gfl_dfl_weight: float = setting(0.25, at_least=0.0)  # distribution focal loss
    tal_topk: int = setting(13, at_least=1)  # task-aligned assignment: positives per GT box at most
    tal_alpha: float = setting(1.0, at_least=0.0)  # alignment = score^alpha * IoU^beta
    tal_beta: float = setting(6.0, at_least=0.0)
    # a box holding no point: candidates within this many strides of its centre
    tal_center_radius: float = setting(2.5, at_least=0.0)

    def _prepare(self) -> None:
        if isinstance(self.strides, (list, tuple)):
            self.strides = tuple(self.strides)
        if isinstance(self.anchors, (list, tuple)):
            self.anchors = [[tuple(anchor) if isinstance(anchor, list) else anchor for anchor in level]
                            if isinstance(level, (list, tuple)) else level for level in self.anchors]

    def _check(self) -> None:
        try:
            parse_arch(self.arch)
        except ValueError as error:  # names what is accepted
            raise self._invalid("arch", str(error).removeprefix("arch: ")) from error
        input_layout(self.input_mode)  # raises with the known layouts
        if not self.strides or min(self.strides) < 1:
            raise self._invalid("strides", f"expected positive strides, got {list(self.strides)}")
        if self.input_size <= 0 or self.input_size % max(self.strides) != 0:
            raise self._invalid("input_size", f"expected a positive multiple of {max(self.strides)}, "
                                f"got {self.input_size}")
        if not self.anchors:
            self.anchors = default_anchors(self.input_size)
        self.anchors = [[(float(w), float(h)) for w, h in level] for level in self.anchors]
        if len(self.anchors) != len(self.strides):
            raise self._invalid("anchors", f"expected one list per stride {self.strides}, "
                                f"got {len(self.anchors)} lists")
        per_level = {len(level) for level in self.anchors}
        if len(per_level) != 1 or 0 in per_level:
            raise self._invalid("anchors", f"every level needs the same, non-zero number of anchors, "
                                f"got {self.anchors}")
        if any(w <= 0 or h <= 0 for level in self.anchors for w, h in level):
            raise self._invalid("anchors", f"widths and heights must be positive, got {self.anchors}")

    @property
    def layout(self) -> InputLayout:
        return input_layout(self.input_mode)

    @property
    def in_channels(self) -> int:
        """The input layout's channels: 3 for the image alone, 6 with the template, 12 for gray-diff-s2d (8 for
        gray-frame-diff-s2d and gray-frame-template-s2d)."""
        return self.layout.channels

    @property
    def num_anchors(self) -> int:
        """Anchors per level (the same on every level)."""
        return len(self.anchors[0])

    @property
    def arch_spec(self) -> ArchSpec:
        return parse_arch(self.arch)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (lists instead of tuples); ``from_dict`` reverses it exactly."""
        data = super().to_dict()
        data["strides"] = list(self.strides)
        data["anchors"] = [[[w, h] for w, h in level] for level in self.anchors]
        return data
