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
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

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
class ModelConfig:
    """A detector's architecture, input and loss settings.

    ``anchors`` are (width, height) in input pixels, one list per stride; left empty they default to
    the DeepPCB set scaled to ``input_size`` (``anchors.default_anchors``).
    """

    arch: str = "ppyolo-r50"
    num_classes: int = 6
    input_size: int = 640
    input_mode: str = "image"  # one of inspector.data.layouts.INPUT_MODES (what the channels are)
    strides: tuple[int, ...] = (8, 16, 32)
    anchors: list[list[Anchor]] = field(default_factory=list)
    iou_aware: bool = True  # predict the IoU of each box and use it in the score (PP-YOLO)
    iou_aware_factor: float = 0.5  # score = obj^(1-a) * iou^a * cls
    scale_x_y: float = 1.05  # grid-sensitive decoding: centres can reach the cell borders
    # Loss settings (see loss.py for what each does).
    anchor_match_threshold: float = 0.5
    ignore_threshold: float = 0.7
    iou_loss_weight: float = 2.5
    iou_aware_loss_weight: float = 1.0
    # Head family; the gfl settings below are read only when head == "gfl" (see gfl_head.py, gfl_loss.py).
    head: str = "yolo"  # "yolo" (anchor-based) | "gfl" (anchor-free, quality score + box distribution)
    reg_max: int = 7  # each box side is a distribution over reg_max + 1 bins of 0..reg_max strides
    gfl_tower_depth: int = 1  # conv layers per level before the prediction conv (PicoDet-S: 2, 5x5)
    gfl_tower_kernel: int = 3  # their kernel: depthwise k x k (student) or k x k conv (teacher)
    gfl_cls_loss: str = "vfl"  # "vfl" (varifocal, PP-YOLOE) | "qfl" (quality focal, GFL / PicoDet)
    gfl_cls_weight: float = 1.0
    gfl_iou_weight: float = 2.0  # GIoU loss (PicoDet's weights and normalisation: 1.0 / 2.0 / 0.25)
    gfl_dfl_weight: float = 0.25  # distribution focal loss
    tal_topk: int = 13  # task-aligned assignment: positives per GT box at most
    tal_alpha: float = 1.0  # alignment = score^alpha * IoU^beta
    tal_beta: float = 6.0
    tal_center_radius: float = 2.5  # a box holding no point: candidates within this many strides of its centre

    def __post_init__(self) -> None:
        parse_arch(self.arch)  # raises with the accepted names
        input_layout(self.input_mode)  # raises with the known layouts
        if self.num_classes < 1:
            raise ValueError(f"num_classes: expected at least 1, got {self.num_classes}")
        self.strides = tuple(int(s) for s in self.strides)
        if self.input_size <= 0 or self.input_size % max(self.strides) != 0:
            raise ValueError(f"input_size: expected a positive multiple of {max(self.strides)}, got {self.input_size}")
        if not self.anchors:
            self.anchors = default_anchors(self.input_size)
        self.anchors = [[(float(w), float(h)) for w, h in level] for level in self.anchors]
        if len(self.anchors) != len(self.strides):
            raise ValueError(f"anchors: expected one list per stride {self.strides}, got {len(self.anchors)} lists")
        per_level = {len(level) for level in self.anchors}
        if len(per_level) != 1 or 0 in per_level:
            raise ValueError(f"anchors: every level needs the same, non-zero number of anchors, got {self.anchors}")
        if any(w <= 0 or h <= 0 for level in self.anchors for w, h in level):
            raise ValueError(f"anchors: widths and heights must be positive, got {self.anchors}")
        if not 0.0 <= self.iou_aware_factor <= 1.0:
            raise ValueError(f"iou_aware_factor: expected a value in [0, 1], got {self.iou_aware_factor}")
        if self.scale_x_y < 1.0:
            raise ValueError(f"scale_x_y: expected >= 1.0, got {self.scale_x_y}")
        self._check_head()

    def _check_head(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"head: expected one of {HEADS}, got {self.head!r}")
        if isinstance(self.reg_max, bool) or not isinstance(self.reg_max, int) or not 1 <= self.reg_max <= 32:
            raise ValueError(f"reg_max: expected an integer in [1, 32] (bins per box side minus one), "
                             f"got {self.reg_max!r}")
        if isinstance(self.gfl_tower_depth, bool) or self.gfl_tower_depth not in range(1, 5):
            raise ValueError(f"gfl_tower_depth: expected an integer in [1, 4], got {self.gfl_tower_depth!r}")
        if isinstance(self.gfl_tower_kernel, bool) or self.gfl_tower_kernel not in (1, 3, 5, 7):
            raise ValueError(f"gfl_tower_kernel: expected 1, 3, 5 or 7, got {self.gfl_tower_kernel!r}")
        if self.gfl_cls_loss not in GFL_CLS_LOSSES:
            raise ValueError(f"gfl_cls_loss: expected one of {GFL_CLS_LOSSES}, got {self.gfl_cls_loss!r}")
        for name in ("gfl_cls_weight", "gfl_iou_weight", "gfl_dfl_weight", "tal_alpha", "tal_beta",
                     "tal_center_radius"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name}: expected a number >= 0, got {value!r}")
        if isinstance(self.tal_topk, bool) or not isinstance(self.tal_topk, int) or self.tal_topk < 1:
            raise ValueError(f"tal_topk: expected an integer >= 1, got {self.tal_topk!r}")

    @property
    def layout(self) -> InputLayout:
        return input_layout(self.input_mode)

    @property
    def in_channels(self) -> int:
        """The input layout's channels: 3 for the image alone, 6 with the template, 12 for gray-diff-s2d."""
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
        data = asdict(self)
        data["strides"] = list(self.strides)
        data["anchors"] = [[[w, h] for w, h in level] for level in self.anchors]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model config") -> "ModelConfig":
        """Rebuild from ``to_dict`` output; ``source`` (e.g. the checkpoint path) prefixes errors."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown model config field(s) {unknown}; expected some of {sorted(known)}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{source}: {error}") from error
