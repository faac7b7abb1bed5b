"""Head layout, decoding, target assignment, the PP-YOLO loss, NMS, anchors and ModelConfig."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import paddle
import pytest

from inspector.models.anchors import DEEPPCB_ANCHORS_640, default_anchors, kmeans_anchors, mean_best_iou
from inspector.models.config import ModelConfig, parse_arch
from inspector.models.head import OBJ, TW, TX, YOLOHead, channels_per_anchor, split_level
from inspector.models.loss import LOSS_KEYS, build_targets, yolo_loss
from inspector.models.nms import box_iou_numpy, matrix_nms_numpy, nms_numpy, select_detections
from inspector.models.postprocess import decode_outputs, postprocess

# Small, distinct anchors: a box shaped exactly like one anchor matches only that one.
TEST_ANCHORS = [
    [(8.0, 8.0), (16.0, 4.0), (4.0, 16.0)],
    [(16.0, 16.0), (32.0, 8.0), (8.0, 32.0)],
    [(32.0, 32.0), (64.0, 16.0), (16.0, 64.0)],
]
STRIDES = (8, 16, 32)


def make_cfg(**overrides) -> ModelConfig:
    values = dict(arch="mbv3-small", num_classes=3, input_size=64, anchors=TEST_ANCHORS)
    values.update(overrides)
    return ModelConfig(**values)


def grid_sizes(cfg: ModelConfig) -> list[tuple[int, int]]:
    return [(cfg.input_size // s, cfg.input_size // s) for s in cfg.strides]


def zero_outputs(cfg: ModelConfig, batch: int = 1) -> list[np.ndarray]:
    k = channels_per_anchor(cfg.num_classes, cfg.iou_aware)
    return [np.zeros((batch, cfg.num_anchors * k, h, w), np.float32) for h, w in grid_sizes(cfg)]


def level_offset(cfg: ModelConfig, level: int) -> int:
    """Index of a level's first box in the decoded (B, K, ...) arrays."""
    return sum(cfg.num_anchors * h * w for h, w in grid_sizes(cfg)[:level])


def to_tensors(arrays: list[np.ndarray]) -> list[paddle.Tensor]:
    return [paddle.to_tensor(a) for a in arrays]


def logit(p):
    p = np.asarray(p, dtype=np.float64)
    return np.log(p / (1.0 - p)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Head layout and decoding


def test_split_level_reads_each_anchor_field_from_its_channel():
    cfg = make_cfg()
    k = channels_per_anchor(cfg.num_classes, True)
    out = np.zeros((2, 3 * k, 4, 5), np.float32)
    out[1, 2 * k + OBJ, 3, 1] = 7.0  # anchor 2, objectness, row 3, column 1
    out[0, 1 * k + TW, 0, 4] = -2.0  # anchor 1, tw, row 0, column 4
    out[0, 0 * k + 6 + 2, 2, 2] = 5.0  # anchor 0, class 2
    p = split_level(paddle.to_tensor(out), 3, cfg.num_classes, iou_aware=True)
    assert p.obj.shape == [2, 3, 20] and p.cls.shape == [2, 3, 20, 3]
    assert p.obj.numpy()[1, 2, 3 * 5 + 1] == 7.0 and p.obj.numpy().sum() == 7.0
    assert p.tw.numpy()[0, 1, 4] == -2.0 and p.tw.numpy().sum() == -2.0
    assert p.cls.numpy()[0, 0, 2 * 5 + 2, 2] == 5.0 and p.cls.numpy().sum() == 5.0


def test_head_output_channels_and_objectness_prior():
    head = YOLOHead([16, 24, 32], num_anchors=3, num_classes=6, block="depthwise", act="hardswish")
    features = [paddle.rand([2, c, s, s]) for c, s in zip([16, 24, 32], [8, 4, 2])]
    outputs = head(features)
    assert [o.shape for o in outputs] == [[2, 3 * 12, 8, 8], [2, 36, 4, 4], [2, 36, 2, 2]]
    obj = split_level(outputs[0], 3, 6, True).obj.numpy()
    # Fresh head: every cell says "background" with probability ~0.99.
    assert np.allclose(1 / (1 + np.exp(-obj)), 0.01, atol=0.01)


def test_decode_zero_logits_gives_anchor_boxes_at_cell_centres():
    cfg = make_cfg()
    boxes, scores = decode_outputs(to_tensors(zero_outputs(cfg, batch=2)), cfg)
    boxes, scores = boxes.numpy(), scores.numpy()
    total = sum(cfg.num_anchors * h * w for h, w in grid_sizes(cfg))
    assert boxes.shape == (2, total, 4) and scores.shape == (2, total, cfg.num_classes)
    expected = []
    for (h, w), stride, anchors in zip(grid_sizes(cfg), cfg.strides, cfg.anchors):
        for aw, ah in anchors:
            for row in range(h):
                for col in range(w):
                    cx, cy = (col + 0.5) * stride, (row + 0.5) * stride
                    expected.append([cx - aw / 2, cy - ah / 2, cx + aw / 2, cy + ah / 2])
    np.testing.assert_allclose(boxes[0], np.array(expected), atol=1e-4)
    np.testing.assert_allclose(boxes[1], boxes[0])
    # obj^0.5 * iou^0.5 * cls = 0.5^0.5 * 0.5^0.5 * 0.5
    np.testing.assert_allclose(scores, 0.25, atol=1e-6)


def test_decode_grid_sensitive_offsets_scales_and_iou_aware_score():
    cfg = make_cfg()
    outputs = zero_outputs(cfg)
    k = channels_per_anchor(cfg.num_classes, True)
    level, anchor, row, col = 2, 1, 0, 1  # stride 32, anchor (64, 16), cell (x=1, y=0)
    base = anchor * k
    outputs[level][0, base + TX, row, col] = 30.0  # sigmoid -> 1: offset 1.05 - 0.025 = 1.025
    outputs[level][0, base + TX + 1, row, col] = -30.0  # sigmoid -> 0: offset -0.025
    outputs[level][0, base + TW, row, col] = math.log(2.0)
    outputs[level][0, base + TW + 1, row, col] = math.log(0.5)
    outputs[level][0, base + OBJ, row, col] = logit(0.64)
    outputs[level][0, base + OBJ + 1, row, col] = logit(0.25)  # the iou channel
    outputs[level][0, base + 6 + 1, row, col] = logit(0.8)  # class 1
    boxes, scores = decode_outputs(to_tensors(outputs), cfg)
    index = level_offset(cfg, level) + anchor * 4 + row * 2 + col
    cx, cy = (1.025 + 1) * 32, (-0.025 + 0) * 32
    np.testing.assert_allclose(boxes.numpy()[0, index], [cx - 64, cy - 4, cx + 64, cy + 4], atol=1e-3)
    # 0.64^0.5 * 0.25^0.5 = 0.4, times the class probabilities (0.5 for classes 0 and 2)
    np.testing.assert_allclose(scores.numpy()[0, index], [0.2, 0.32, 0.2], atol=1e-5)


def test_decode_without_iou_channel_scores_obj_times_cls():
    cfg = make_cfg(iou_aware=False)
    outputs = zero_outputs(cfg)
    assert outputs[0].shape[1] == 3 * (5 + 3)
    outputs[0][0, OBJ, 0, 0] = logit(0.9)  # anchor 0, cell (0, 0), first box overall
    outputs[0][0, 5 + 0, 0, 0] = logit(0.5)
    _, scores = decode_outputs(to_tensors(outputs), cfg)
    np.testing.assert_allclose(scores.numpy()[0, 0], [0.45, 0.45, 0.45], atol=1e-6)
    np.testing.assert_allclose(scores.numpy()[0, 1], [0.25, 0.25, 0.25], atol=1e-6)


def test_postprocess_reports_the_one_confident_box():
    cfg = make_cfg()
    outputs = zero_outputs(cfg, batch=2)
    k = channels_per_anchor(cfg.num_classes, True)
    for channel in range(k):  # everything very unlikely ...
        for out in outputs:
            if channel in (OBJ, OBJ + 1) or channel >= 6:
                out[:, channel::k] = -10.0
    # ... except anchor 0 at cell (x=2, y=5) of stride 8 in image 1, class 2
    outputs[0][1, OBJ, 5, 2] = 6.0
    outputs[0][1, OBJ + 1, 5, 2] = 6.0
    outputs[0][1, 6 + 2, 5, 2] = 6.0
    detections = postprocess(to_tensors(outputs), cfg, score_threshold=0.5)
    assert len(detections) == 2 and len(detections[0][0]) == 0
    boxes, scores, classes = detections[1]
    np.testing.assert_allclose(boxes, [[16, 40, 24, 48]], atol=1e-3)
    assert classes.tolist() == [2] and scores[0] > 0.9


# ---------------------------------------------------------------------------------------------
# Target assignment


def test_box_shaped_like_an_anchor_goes_to_that_anchor_level_and_cell():
    cfg = make_cfg()
    gt_boxes = np.array([[[20, 16, 52, 24], [0, 0, 0, 0]]], np.float32)  # 32 x 8 centred at (36, 20)
    gt_classes = np.array([[2, -1]])
    targets = build_targets(gt_boxes, gt_classes, grid_sizes(cfg), cfg)
    assert [t.positive.sum() for t in targets] == [0, 1, 0]
    t = targets[1]  # stride 16, grid 4 x 4: centre (2.25, 1.25) -> cell x=2, y=1
    b, a, cell = (int(i[0]) for i in np.nonzero(t.positive))
    assert (b, a, cell) == (0, 1, 1 * 4 + 2)
    assert t.offset_x[b, a, cell] == pytest.approx(0.25) and t.offset_y[b, a, cell] == pytest.approx(0.25)
    assert t.log_w[b, a, cell] == pytest.approx(0.0) and t.log_h[b, a, cell] == pytest.approx(0.0)
    assert t.scale[b, a, cell] == pytest.approx(2 - 32 * 8 / 64**2)
    assert t.classes[b, a, cell].tolist() == [0, 0, 1]
    assert t.boxes[b, a, cell].tolist() == [20, 16, 52, 24]


def test_box_between_anchors_also_matches_anchors_above_the_threshold():
    box = np.array([[[2, 2, 14, 14]]], np.float32)  # 12 x 12: shape IoU 0.44 with 8x8, 0.56 with 16x16
    loose = build_targets(box, np.array([[0]]), grid_sizes(make_cfg()), make_cfg(anchor_match_threshold=0.4))
    strict = build_targets(box, np.array([[0]]), grid_sizes(make_cfg()), make_cfg(anchor_match_threshold=0.5))
    assert [t.positive.sum() for t in strict] == [0, 1, 0]
    assert [t.positive.sum() for t in loose] == [1, 1, 0]
    assert loose[0].positive[0, 0, 1 * 8 + 1] == 1  # stride 8, centre (8, 8) -> cell x=1, y=1 of 8 x 8
    assert loose[0].log_w[0, 0, 9] == pytest.approx(math.log(12 / 8))
    assert loose[1].positive[0, 0, 0] == 1  # stride 16, 16 x 16 anchor, cell x=0, y=0


def test_two_boxes_on_one_anchor_cell_the_better_fit_wins():
    cfg = make_cfg()
    good = [20, 16, 52, 24]  # exactly the 32 x 8 anchor
    worse = [21, 16, 51, 24]  # 30 x 8, same centre, same best anchor
    targets = build_targets(np.array([[good, worse]], np.float32), np.array([[0, 1]]), grid_sizes(cfg), cfg)
    t = targets[1]
    assert t.positive.sum() == 1
    assert t.boxes[0, 1, 6].tolist() == good and t.classes[0, 1, 6].tolist() == [1, 0, 0]
    # Order must not matter.
    swapped = build_targets(np.array([[worse, good]], np.float32), np.array([[1, 0]]), grid_sizes(cfg), cfg)
    assert swapped[1].boxes[0, 1, 6].tolist() == good


def test_padding_and_degenerate_boxes_are_not_targets_and_bad_class_ids_are_refused():
    cfg = make_cfg()
    boxes = np.array([[[20, 16, 52, 24], [5, 5, 5, 9]], [[0, 0, 10, 10], [0, 0, 0, 0]]], np.float32)
    classes = np.array([[-1, 0], [-1, -1]])
    assert sum(t.positive.sum() for t in build_targets(boxes, classes, grid_sizes(cfg), cfg)) == 0
    with pytest.raises(ValueError, match="class id 3 out of range"):
        build_targets(boxes[:1, :1], np.array([[3]]), grid_sizes(cfg), cfg)


# ---------------------------------------------------------------------------------------------
# Loss


def perfect_outputs(cfg: ModelConfig, gt_boxes: np.ndarray, gt_classes: np.ndarray) -> list[np.ndarray]:
    """Raw maps that decode exactly to the assigned targets, with confident obj / class logits."""
    k = channels_per_anchor(cfg.num_classes, cfg.iou_aware)
    shift = (cfg.scale_x_y - 1) / 2
    outputs = []
    for t, (h, w) in zip(build_targets(gt_boxes, gt_classes, grid_sizes(cfg), cfg), grid_sizes(cfg)):
        batch, anchors, cells = t.positive.shape
        fields = np.zeros((batch, anchors, k, cells), np.float32)
        fields[:, :, 0] = logit((t.offset_x + shift) / cfg.scale_x_y)
        fields[:, :, 1] = logit((t.offset_y + shift) / cfg.scale_x_y)
        fields[:, :, 2], fields[:, :, 3] = t.log_w, t.log_h
        fields[:, :, OBJ] = np.where(t.positive > 0, 20.0, -20.0)
        fields[:, :, OBJ + 1] = 20.0  # predicted IoU ~1, and the decoded boxes are exact
        fields[:, :, 6:] = np.where(t.classes > 0, 20.0, -20.0).transpose(0, 1, 3, 2)
        outputs.append(fields.reshape(batch, anchors * k, h, w))
    return outputs


GT_BOXES = np.array(
    [[[20, 16, 52, 24], [2, 2, 14, 14], [40, 30, 56, 62]], [[8, 8, 40, 40], [0, 0, 0, 0], [0, 0, 0, 0]]], np.float32
)
GT_CLASSES = np.array([[0, 1, 2], [1, -1, -1]])


def test_loss_of_a_perfect_prediction_is_near_zero_in_every_component():
    cfg = make_cfg()
    losses = yolo_loss(to_tensors(perfect_outputs(cfg, GT_BOXES, GT_CLASSES)), GT_BOXES, GT_CLASSES, cfg)
    assert set(losses) == {"loss", *LOSS_KEYS}
    for key, value in losses.items():
        assert abs(float(value)) < 1e-3, (key, float(value))


def test_loss_components_grow_with_the_matching_error_and_are_normalised_per_image():
    cfg = make_cfg()
    perfect = perfect_outputs(cfg, GT_BOXES, GT_CLASSES)
    targets = build_targets(GT_BOXES, GT_CLASSES, grid_sizes(cfg), cfg)
    k = channels_per_anchor(cfg.num_classes, True)
    wider = [o.copy() for o in perfect]
    for o in wider:
        o[:, TW::k] += 0.5  # every tw off by 0.5
    losses = yolo_loss(to_tensors(wider), GT_BOXES, GT_CLASSES, cfg)
    expected_wh = 0.5 * sum((t.scale * t.positive).sum() for t in targets) / len(GT_BOXES)
    assert float(losses["loss_wh"]) == pytest.approx(expected_wh, rel=1e-4)
    assert float(losses["loss_iou"]) > 0.1 and float(losses["loss_iou_aware"]) > 0.1  # IoU < 1 now
    assert float(losses["loss_xy"]) < 1e-3 and float(losses["loss_cls"]) < 1e-3

    wrong_class = [o.copy() for o in perfect]
    for o in wrong_class:
        o[:, 6::k] *= -1.0
    assert float(yolo_loss(to_tensors(wrong_class), GT_BOXES, GT_CLASSES, cfg)["loss_cls"]) > 10


def test_objectness_is_not_pushed_down_on_good_unassigned_boxes():
    cfg = make_cfg()
    boxes, classes = GT_BOXES[:1, :1], GT_CLASSES[:1, :1]  # 32 x 8 box, assigned to stride 16 anchor 1
    outputs = perfect_outputs(cfg, boxes, classes)
    k = channels_per_anchor(cfg.num_classes, True)
    # Anchor 1 of stride 8 (16 x 4) in the box's cell predicts the box exactly and says "object".
    cell_x, cell_y = 36 // 8, 20 // 8
    level0 = outputs[0]
    level0[0, k + 0, cell_y, cell_x] = logit((36 / 8 - cell_x + 0.025) / 1.05)
    level0[0, k + 1, cell_y, cell_x] = logit((20 / 8 - cell_y + 0.025) / 1.05)
    level0[0, k + 2, cell_y, cell_x] = math.log(32 / 16)
    level0[0, k + 3, cell_y, cell_x] = math.log(8 / 4)
    level0[0, k + OBJ, cell_y, cell_x] = 5.0
    ignored = yolo_loss(to_tensors(outputs), boxes, classes, cfg)["loss_obj"]
    never_ignore = yolo_loss(to_tensors(outputs), boxes, classes, make_cfg(ignore_threshold=1.0))["loss_obj"]
    assert float(ignored) < 1e-3
    assert float(never_ignore) == pytest.approx(5.0, abs=0.01)  # BCE(5, target 0) ~ 5.0067


def test_loss_without_boxes_is_finite_objectness_only_and_gradients_flow():
    cfg = make_cfg()
    outputs = [paddle.to_tensor(o, stop_gradient=False) for o in zero_outputs(cfg, batch=2)]
    losses = yolo_loss(outputs, np.zeros((2, 0, 4), np.float32), np.zeros((2, 0), np.int64), cfg)
    cells = sum(3 * h * w for h, w in grid_sizes(cfg))
    assert float(losses["loss_obj"]) == pytest.approx(cells * math.log(2), rel=1e-5)  # BCE(0, 0) per cell
    assert float(losses["loss"]) == pytest.approx(float(losses["loss_obj"]))

    outputs = [paddle.to_tensor(o, stop_gradient=False) for o in zero_outputs(cfg, batch=2)]
    losses = yolo_loss(outputs, paddle.to_tensor(GT_BOXES), paddle.to_tensor(GT_CLASSES), cfg)
    losses["loss"].backward()
    for o in outputs:
        assert o.grad is not None and np.isfinite(o.grad.numpy()).all()
    assert np.abs(outputs[1].grad.numpy()).sum() > 0


# ---------------------------------------------------------------------------------------------
# NMS


def test_nms_numpy_suppresses_overlaps_within_a_class_only():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    classes = np.array([0, 0, 1, 0])
    assert box_iou_numpy(boxes[:1], boxes[1:2])[0, 0] == pytest.approx(81 / 119)
    assert nms_numpy(boxes, scores, classes, 0.5, 100).tolist() == [0, 2, 3]
    assert nms_numpy(boxes, scores, classes, 0.7, 100).tolist() == [0, 1, 2, 3]
    assert nms_numpy(boxes, scores, classes, 0.5, 2).tolist() == [0, 2]
    assert nms_numpy(boxes[:0], scores[:0], classes[:0]).tolist() == []
    with pytest.raises(ValueError, match="4 boxes, 3 scores"):
        nms_numpy(boxes, scores[:3], classes)


def test_select_detections_reports_a_box_for_every_class_above_threshold():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [30, 30, 40, 40]], np.float32)
    scores = np.array([[0.9, 0.6], [0.8, 0.01], [0.02, 0.03]], np.float32)
    out_boxes, out_scores, out_classes = select_detections(boxes, scores, score_threshold=0.05, nms_threshold=0.5)
    assert out_classes.tolist() == [0, 1] and out_scores.tolist() == pytest.approx([0.9, 0.6])
    np.testing.assert_array_equal(out_boxes, boxes[[0, 0]])
    assert out_boxes.dtype == np.float32 and out_classes.dtype == np.int64


def test_agnostic_select_detections_reports_one_class_per_place():
    # Box 0 scores "short" 0.9 and "spur" 0.6; box 1 (IoU 0.4 with box 0) is a "spur" 0.7; box 2 lies apart.
    boxes = np.array([[0, 0, 10, 10], [0, 4, 10, 14], [30, 30, 40, 40]], np.float32)
    scores = np.array([[0.9, 0.6], [0.01, 0.7], [0.5, 0.01]], np.float32)
    assert box_iou_numpy(boxes[:1], boxes[1:2])[0, 0] == pytest.approx(60 / 140)
    per_class = select_detections(boxes, scores, 0.05, 0.33, method="hard")
    assert per_class[2].tolist() == [0, 1, 0] and per_class[1].tolist() == pytest.approx([0.9, 0.7, 0.5])
    # Across classes the second class of box 0 and the overlapping box 1 are one defect's duplicates.
    out_boxes, out_scores, out_classes = select_detections(boxes, scores, 0.05, 0.33, method="agnostic")
    assert out_classes.tolist() == [0, 0] and out_scores.tolist() == pytest.approx([0.9, 0.5])
    np.testing.assert_array_equal(out_boxes, boxes[[0, 2]])
    # The threshold decides what counts as the same place: above the pair's IoU both boxes stay.
    assert select_detections(boxes, scores, 0.05, 0.5, method="agnostic")[1].tolist() == pytest.approx([0.9, 0.7, 0.5])
    with pytest.raises(ValueError, match="method must be one of"):
        select_detections(boxes, scores, method="soft")


@pytest.mark.parametrize("use_gaussian", [False, True])
def test_matrix_nms_numpy_matches_paddle_matrix_nms(use_gaussian):
    rng = np.random.default_rng(3)
    centres = rng.uniform(20, 80, size=(12, 2))
    boxes = []
    for c in centres:  # clusters of overlapping boxes, as a detector produces
        for _ in range(4):
            size = rng.uniform(10, 20, size=2)
            jitter = rng.normal(0, 2, size=2)
            boxes.append(np.r_[c + jitter - size / 2, c + jitter + size / 2])
    boxes = np.array(boxes, np.float32)
    scores = rng.uniform(0, 1, size=(len(boxes), 3)).astype(np.float32)
    threshold = 0.3
    result = paddle.vision.ops.matrix_nms(
        paddle.to_tensor(boxes[None]),
        paddle.to_tensor(scores.T[None].copy()),
        score_threshold=threshold,
        post_threshold=threshold,
        nms_top_k=-1,
        keep_top_k=100,
        use_gaussian=use_gaussian,
        gaussian_sigma=2.0,
        background_label=-1,
        normalized=True,
    )
    expected = result[0].numpy()  # rows: label, score, x1, y1, x2, y2
    candidates = np.nonzero(scores > threshold)
    kept, decayed = matrix_nms_numpy(
        boxes[candidates[0]],
        scores[candidates],
        candidates[1],
        post_threshold=threshold,
        max_det=100,
        kernel="gaussian" if use_gaussian else "linear",
    )
    ours = np.c_[candidates[1][kept], decayed, boxes[candidates[0]][kept]]
    assert 10 < len(ours) < len(candidates[0])  # some were decayed away, many survive
    order_ours = np.lexsort((ours[:, 1], ours[:, 0]))
    order_expected = np.lexsort((expected[:, 1], expected[:, 0]))
    np.testing.assert_allclose(ours[order_ours], expected[order_expected], atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Anchors and ModelConfig


def test_kmeans_anchors_recovers_clustered_shapes_sorted_by_area():
    rng = np.random.default_rng(0)
    true = np.array([[10, 10], [20, 8], [8, 20], [24, 24], [40, 16], [16, 40], [48, 48], [80, 30], [30, 80]], float)
    wh = np.concatenate([c * rng.uniform(0.95, 1.05, size=(200, 2)) for c in true])
    anchors = kmeans_anchors(wh, n=9, seed=0)
    assert [len(level) for level in anchors] == [3, 3, 3]
    flat = np.array([a for level in anchors for a in level])
    areas = flat[:, 0] * flat[:, 1]
    assert np.all(np.diff(areas) >= 0)
    for centre in true:
        assert np.min(np.abs(flat - centre).max(axis=1) / centre.max()) < 0.05, centre
    assert mean_best_iou(wh, anchors) > 0.9
    assert kmeans_anchors(wh, n=9, seed=0) == anchors  # deterministic for a seed
    with pytest.raises(ValueError, match="cannot be split evenly"):
        kmeans_anchors(wh, n=8)
    with pytest.raises(ValueError, match="at least 9 distinct"):
        kmeans_anchors(wh[:5], n=9)


def test_default_anchors_are_the_deeppcb_set_scaled_to_the_input():
    assert default_anchors(640) == DEEPPCB_ANCHORS_640
    assert default_anchors(320)[2][2] == (DEEPPCB_ANCHORS_640[2][2][0] / 2, DEEPPCB_ANCHORS_640[2][2][1] / 2)
    assert ModelConfig(input_size=320).anchors == default_anchors(320)


def test_model_config_round_trips_through_json():
    cfg = ModelConfig(arch="mbv3-small-x0.75", num_classes=4, input_size=320, input_mode="image+template",
                      iou_aware=False, anchors=TEST_ANCHORS, ignore_threshold=0.6)
    restored = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert restored == cfg
    assert restored.in_channels == 6 and ModelConfig().in_channels == 3
    assert restored.anchors[1][2] == (8.0, 32.0) and restored.strides == (8, 16, 32)


def test_model_config_rejects_bad_values_naming_the_field():
    with pytest.raises(ValueError, match="arch: unknown architecture 'yolov8'"):
        ModelConfig(arch="yolov8")
    with pytest.raises(ValueError, match="input_mode"):
        ModelConfig(input_mode="template")
    with pytest.raises(ValueError, match="input_size: expected a positive multiple of 32"):
        ModelConfig(input_size=100)
    with pytest.raises(ValueError, match="anchors: expected one list per stride"):
        ModelConfig(anchors=TEST_ANCHORS[:2])
    with pytest.raises(ValueError, match="ckpt.pdparams: unknown model config field"):
        ModelConfig.from_dict({"arch": "ppyolo-r18", "depth": 3}, source="ckpt.pdparams")


def test_parse_arch_names():
    assert parse_arch("ppyolo-r50-dcn").dcn and parse_arch("ppyolo-r50-dcn").resnet_depth == 50
    assert parse_arch("ppyolo-r34").resnet_depth == 34 and not parse_arch("ppyolo-r34").dcn
    spec = parse_arch("mbv3-large-x0.5")
    assert (spec.family, spec.mobilenet_variant, spec.width) == ("mbv3", "large", 0.5)
    assert parse_arch("mbv3-small").width == 1.0
    for bad in ("ppyolo-r18-dcn", "ppyolo-r101", "mbv3-small-x3", "mbv3-tiny"):
        with pytest.raises(ValueError, match="arch"):
            parse_arch(bad)


def test_config_and_numpy_nms_import_without_paddle():
    # head_layout, yolo_targets and assign too: the torch twin (tools/torch_twin/) runs them where paddle is absent.
    code = (
        "import sys\n"
        "from inspector.models import ModelConfig, nms_numpy, select_detections, kmeans_anchors\n"
        "import inspector.models.nms, inspector.models.config, inspector.models.anchors\n"
        "import inspector.models.head_layout, inspector.models.yolo_targets, inspector.models.assign\n"
        "assert 'paddle' not in sys.modules, 'paddle was imported'\n"
        "ModelConfig(arch='mbv3-small')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
