"""``YOLODetector`` (backbone -> neck -> YOLO head) and ``build_model``, which assembles one from a
``ModelConfig``.

Two families, named by ``cfg.arch`` (see ``config.parse_arch``):

| arch            | backbone                      | neck                          | head                        |
|-----------------|-------------------------------|-------------------------------|-----------------------------|
| ``ppyolo-r*``   | ResNet-vd 18/34/50 (+DCN)     | PP-YOLO FPN (SPP, CoordConv)  | 1x1 conv on the FPN's tips  |
| ``mbv3-*``      | MobileNetV3 small/large       | LiteFPN, 96 channels (PAN)    | depthwise 3x3 + 1x1 conv    |

Both produce the same head layout (see ``head.py``), so the large model can teach the small one.
``cfg.head == "gfl"`` puts the anchor-free GFL head (``gfl_head.py``) on either family instead: the
student's tower is depthwise-separable, the teacher's plain 3x3 convs; loss and decoding follow the head.
"""
from __future__ import annotations

import numpy as np
import paddle
import paddle.nn as nn

from inspector.models.backbones import MobileNetV3, ResNetVd
from inspector.models.config import ModelConfig
from inspector.models.gfl_head import GFLHead, GFLLevelConstants, decode_gfl_outputs, gfl_constant_arrays
from inspector.models.gfl_loss import gfl_loss
from inspector.models.head import YOLOHead
from inspector.models.loss import yolo_loss
from inspector.models.necks import LiteFPN, PPYOLOFPN
from inspector.models.nms import NmsMethod, select_detections
from inspector.models.postprocess import LevelConstants, decode_outputs, level_constant_arrays, postprocess

# PP-YOLO FPN output widths (stride 8, 16, 32). PP-YOLO itself uses 256/512/1024 on ResNet-50; half
# that keeps the from-scratch teacher trainable on a 1,000-image data set and a CPU.
PPYOLO_FPN_WIDTHS = {18: (64, 128, 256), 34: (64, 128, 256), 50: (128, 256, 512)}
LITE_FPN_WIDTH = 96


class YOLODetector(nn.Layer):
    """A single-stage detector, anchor-based (``cfg.head == "yolo"``) or anchor-free (``"gfl"``); see
    ARCHITECTURE.md ("models") for the contract, which is the same for both heads."""

    def __init__(self, backbone: nn.Layer, neck: nn.Layer, head: YOLOHead | GFLHead, cfg: ModelConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.head = head  # calling ``model.head(features)`` runs it: the contract's head(features)
        self.cfg = cfg

    def features(self, images: paddle.Tensor) -> list[paddle.Tensor]:
        """Neck outputs, one per stride (what feature distillation compares)."""
        return self.neck(self.backbone(images))

    def forward(self, images: paddle.Tensor) -> list[paddle.Tensor]:
        """Raw head maps, one per stride: (B, A*K, H, W) (``head.py``) or (B, C + 4(R+1), H, W) (``gfl_head.py``)."""
        return self.head(self.features(images))

    def loss(
        self, outputs: list[paddle.Tensor], gt_boxes: paddle.Tensor | np.ndarray, gt_classes: paddle.Tensor | np.ndarray
    ) -> dict[str, paddle.Tensor]:
        """The head's loss against GT (B, M, 4) input-pixel xyxy and classes (B, M) padded with -1."""
        if self.cfg.head == "gfl":
            return gfl_loss(outputs, gt_boxes, gt_classes, self.cfg)
        return yolo_loss(outputs, gt_boxes, gt_classes, self.cfg)

    def decode(self, outputs: list[paddle.Tensor]) -> tuple[paddle.Tensor, paddle.Tensor]:
        """``(boxes (B, K, 4) input-pixel xyxy, scores (B, K, C))``; in-graph and exportable."""
        if self.cfg.head == "gfl":
            return decode_gfl_outputs(outputs, self.cfg)
        return decode_outputs(outputs, self.cfg)

    def postprocess(
        self,
        outputs: list[paddle.Tensor],
        score_threshold: float = 0.05,
        nms_threshold: float = 0.5,
        max_detections: int = 100,
        method: NmsMethod = "hard",
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per image numpy ``(boxes (N, 4), scores (N,), classes (N,))`` after NMS, in input pixels."""
        if self.cfg.head == "gfl":
            boxes, scores = self.decode(outputs)
            return [select_detections(b, s, score_threshold, nms_threshold, max_detections, method)
                    for b, s in zip(boxes.numpy(), scores.numpy())]
        return postprocess(outputs, self.cfg, score_threshold, nms_threshold, max_detections, method)


class DecodedDetector(nn.Layer):
    """``images -> (boxes, scores)``: the detector plus decoding, the graph an export saves.

    It decodes maps of the configured input size (``cfg.input_size``, what an export fixes): the
    decode constants are buffers, saved as weights, so the graph does not rebuild them per frame.
    NMS stays outside the graph (numpy, ``nms.select_detections``) so every runtime runs the same one.
    """

    def __init__(self, detector: YOLODetector) -> None:
        super().__init__()
        self.detector = detector
        cfg = detector.cfg
        if cfg.head == "gfl":
            for level, stride in enumerate(cfg.strides):
                cells = cfg.input_size // stride
                points, projection = gfl_constant_arrays(cells, cells, stride, cfg.reg_max)
                self.register_buffer(f"points_{level}", paddle.to_tensor(points))
                self.register_buffer(f"projection_{level}", paddle.to_tensor(projection))
            return
        for level, (anchors, stride) in enumerate(zip(cfg.anchors, cfg.strides)):
            cells = cfg.input_size // stride
            offsets, half_anchors = level_constant_arrays(cells, cells, anchors, stride, cfg.scale_x_y)
            self.register_buffer(f"offsets_{level}", paddle.to_tensor(offsets))
            self.register_buffer(f"half_anchors_{level}", paddle.to_tensor(half_anchors))

    def forward(self, images: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        if self.detector.cfg.head == "gfl":
            gfl_constants = [GFLLevelConstants(getattr(self, f"points_{level}"), getattr(self, f"projection_{level}"))
                             for level in range(len(self.detector.cfg.strides))]
            return decode_gfl_outputs(self.detector(images), self.detector.cfg, gfl_constants)
        constants = [LevelConstants(getattr(self, f"offsets_{level}"), getattr(self, f"half_anchors_{level}"))
                     for level in range(len(self.detector.cfg.strides))]
        return decode_outputs(self.detector(images), self.detector.cfg, constants)


def build_model(cfg: ModelConfig) -> YOLODetector:
    """Assemble the detector named by ``cfg.arch`` for ``cfg.in_channels`` input channels."""
    spec = cfg.arch_spec
    if spec.family == "ppyolo":
        backbone = ResNetVd(spec.resnet_depth, in_channels=cfg.in_channels, dcn_last_stage=spec.dcn)
        neck = PPYOLOFPN(backbone.out_channels, out_channels=PPYOLO_FPN_WIDTHS[spec.resnet_depth])
    else:
        backbone = MobileNetV3(spec.mobilenet_variant, width=spec.width, in_channels=cfg.in_channels)
        neck = LiteFPN(backbone.out_channels, out_channels=LITE_FPN_WIDTH)
    if cfg.head == "gfl":
        if spec.family == "ppyolo":
            head = GFLHead(neck.out_channels, cfg.num_classes, cfg.reg_max, block="conv", act="leaky_relu",
                           depth=cfg.gfl_tower_depth, kernel=cfg.gfl_tower_kernel)
        else:
            head = GFLHead(neck.out_channels, cfg.num_classes, cfg.reg_max, block="depthwise", act="hardswish",
                           depth=cfg.gfl_tower_depth, kernel=cfg.gfl_tower_kernel)
        return YOLODetector(backbone, neck, head, cfg)
    if spec.family == "ppyolo":
        head = YOLOHead(neck.out_channels, cfg.num_anchors, cfg.num_classes, cfg.iou_aware, block="none")
    else:
        head = YOLOHead(
            neck.out_channels, cfg.num_anchors, cfg.num_classes, cfg.iou_aware, block="depthwise", act="hardswish"
        )
    return YOLODetector(backbone, neck, head, cfg)


def count_parameters(model: nn.Layer, trainable_only: bool = False) -> int:
    """Number of parameter values (BatchNorm running statistics are buffers and not counted)."""
    return sum(
        int(np.prod(p.shape)) for p in model.parameters() if not (trainable_only and p.stop_gradient)
    )
