"""The torch twin's PP-YOLO loss (``tools/torch_twin/yolo_loss.py``) against Paddle's ``inspector.models.loss``.

The twin trains the YOLO-head detector on a machine without paddle; weights trained on a different loss would
not be the weights Paddle would have trained. So for the same random head maps and padded GT, the numpy targets,
the decoded boxes, every returned term and the gradients w.r.t. the maps must equal Paddle's. The Paddle side runs
here; the torch side in the interpreter named by ``TORCH_TWIN_PYTHON`` (a separate venv: the two frameworks are
never installed together), all cases in one subprocess.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest
from twin_harness import TORCH_CASE_LOOP, run_torch_cases, torch_python, write_case

RTOL, ATOL = 1e-4, 1e-6

# The torch side: for every case in the folder, the twin's targets, decoded boxes, losses and gradients.
TORCH_SIDE = TORCH_CASE_LOOP + r'''
from tools.torch_twin import yolo_loss as twin

for meta, data, cfg, save in cases():
    levels = len(cfg.strides)
    result = {}
    if meta["kind"] == "bad_class":
        try:
            twin.build_targets(data["gt_boxes"], data["gt_classes"], [(8, 8), (4, 4), (2, 2)], cfg)
        except ValueError as error:
            result["error"] = np.array([str(error)])
        save(result)
        continue
    outputs = [torch.tensor(data[f"out{i}"], requires_grad=True) for i in range(levels)]
    grid_sizes = [tuple(o.shape[2:]) for o in outputs]
    for level, targets in enumerate(twin.build_targets(data["gt_boxes"], data["gt_classes"], grid_sizes, cfg)):
        result.update({f"target{level}/{name}": value for name, value in vars(targets).items()})
    for level, (output, anchors, stride) in enumerate(zip(outputs, cfg.anchors, cfg.strides)):
        prediction = twin.split_level(output, cfg.num_anchors, cfg.num_classes, cfg.iou_aware)
        boxes = twin.decode_level_boxes(prediction, output, anchors, stride, cfg.scale_x_y)
        result[f"boxes{level}"] = boxes.detach().numpy()
    gt_boxes, gt_classes = data["gt_boxes"], data["gt_classes"]
    if meta["gt_as_tensors"]:
        gt_boxes, gt_classes = torch.as_tensor(gt_boxes), torch.as_tensor(gt_classes)
    losses = twin.yolo_loss(outputs, gt_boxes, gt_classes, cfg)
    losses["loss"].backward()
    result.update({f"loss/{key}": value.detach().numpy() for key, value in losses.items()})
    result.update({f"grad_out{i}": o.grad.numpy() for i, o in enumerate(outputs)})
    save(result)
'''


paddle = pytest.importorskip("paddle")
from inspector.models.config import ModelConfig  # noqa: E402
from inspector.models.head import channels_per_anchor, split_level  # noqa: E402
from inspector.models.loss import build_targets, yolo_loss  # noqa: E402
from inspector.models.postprocess import decode_level_boxes  # noqa: E402

BATCH = 2
# At input 64 the scaled DeepPCB anchors are 3-8 px. Image 0: large boxes (one best anchor each), a box at the
# image border (its cell is clipped into the grid), two small boxes sharing a cell that claim the same anchors
# (the better shape fit must win the slot), padding rows (-1 class, zero box; and a degenerate zero-width box of a
# real class, which is padding too); image 1: one defect and padding.
GT_BOXES_64 = np.array([[[4, 6, 30, 28], [30, 30, 60, 58], [10, 40, 22, 50], [56, 56, 64, 64],
                         [33, 33, 37, 37], [33.5, 32.5, 36.5, 37.5], [5, 5, 5, 9], [0, 0, 0, 0]],
                        [[12, 8, 44, 40], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0],
                         [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]], dtype=np.float32)
GT_CLASSES_64 = np.array([[0, 3, 5, 1, 2, 4, 2, -1], [2, -1, -1, -1, -1, -1, -1, -1]], dtype=np.int64)
GT_BOXES_96 = np.array([[[8, 10, 20, 40], [50, 60, 90, 70], [40, 40, 47, 46], [0, 0, 0, 0]],
                        [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]], dtype=np.float32)
GT_CLASSES_96 = np.array([[1, 0, 5, -1], [-1, -1, -1, -1]], dtype=np.int64)


def _cfg(input_size: int, **overrides) -> ModelConfig:
    return ModelConfig(arch="mbv3-small", input_size=input_size, head="yolo", input_mode="gray-diff-s2d",
                       num_classes=6, **overrides)


def _maps(rng: np.random.Generator, cfg: ModelConfig, scale: float = 1.5) -> list[np.ndarray]:
    channels = cfg.num_anchors * channels_per_anchor(cfg.num_classes, cfg.iou_aware)
    return [(rng.standard_normal((BATCH, channels, cfg.input_size // s, cfg.input_size // s)) * scale)
            .astype(np.float32) for s in cfg.strides]


def _paddle_losses(cfg: ModelConfig, maps: list[np.ndarray], gt_boxes, gt_classes):
    outputs = [paddle.to_tensor(m, stop_gradient=False) for m in maps]
    losses = yolo_loss(outputs, paddle.to_tensor(gt_boxes), gt_classes, cfg)
    return outputs, losses


def _case(name, folder, cfg, maps, gt_boxes, gt_classes, gt_as_tensors=False):
    write_case(folder, name, {"kind": "loss", "cfg": cfg.to_dict(), "gt_as_tensors": gt_as_tensors},
               gt_boxes=gt_boxes, gt_classes=gt_classes, **{f"out{i}": m for i, m in enumerate(maps)})
    outputs, losses = _paddle_losses(cfg, maps, gt_boxes, gt_classes)
    losses["loss"].backward()
    expected = {f"loss/{key}": value.numpy() for key, value in losses.items()}
    expected.update({f"grad_out{i}": o.grad.numpy() for i, o in enumerate(outputs)})
    grid_sizes = [tuple(m.shape[2:]) for m in maps]
    for level, targets in enumerate(build_targets(gt_boxes, gt_classes, grid_sizes, cfg)):
        expected.update({f"target{level}/{name}": value for name, value in vars(targets).items()})
    for level, (m, anchors, stride) in enumerate(zip(maps, cfg.anchors, cfg.strides)):
        output = paddle.to_tensor(m)
        prediction = split_level(output, cfg.num_anchors, cfg.num_classes, cfg.iou_aware)
        expected[f"boxes{level}"] = decode_level_boxes(prediction, output, anchors, stride, cfg.scale_x_y).numpy()
    return expected


def _logit(p: float) -> float:
    return float(np.log(p / (1.0 - p)))


def _maps_matching_gt(rng, cfg, gt_boxes, gt_classes) -> tuple[list[np.ndarray], int]:
    """Random maps in which, for every GT box, the anchors that are NOT assigned to it decode exactly to it in the
    cell holding its centre: good boxes that are not positives, which the ignore threshold must leave out of the
    objectness loss. Returns the maps and how many such predictions were planted."""
    maps = _maps(rng, cfg)
    targets = build_targets(gt_boxes, gt_classes, [tuple(m.shape[2:]) for m in maps], cfg)
    per_anchor = channels_per_anchor(cfg.num_classes, cfg.iou_aware)
    shift = (cfg.scale_x_y - 1.0) / 2.0
    planted = 0
    for level, (m, anchors, stride) in enumerate(zip(maps, cfg.anchors, cfg.strides)):
        width = m.shape[3]
        for image, box in zip(*np.nonzero(gt_classes >= 0)):
            x1, y1, x2, y2 = gt_boxes[image, box]
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            column, row = int(cx // stride), int(cy // stride)
            for a, (anchor_w, anchor_h) in enumerate(anchors):
                if targets[level].positive[image, a, row * width + column]:
                    continue
                base = a * per_anchor
                m[image, base + 0, row, column] = _logit((cx / stride - column + shift) / cfg.scale_x_y)
                m[image, base + 1, row, column] = _logit((cy / stride - row + shift) / cfg.scale_x_y)
                m[image, base + 2, row, column] = np.log((x2 - x1) / anchor_w)
                m[image, base + 3, row, column] = np.log((y2 - y1) / anchor_h)
                planted += 1
    return maps, planted


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """name -> (Paddle's values, the twin's values) for every case, the twin's from one torch subprocess."""
    python = torch_python()
    folder = tmp_path_factory.mktemp("twin_yolo_loss")
    rng = np.random.default_rng(11)
    cfg64, cfg96 = _cfg(64), _cfg(96)
    expected = {
        "gt_64": _case("gt_64", folder, cfg64, _maps(rng, cfg64), GT_BOXES_64, GT_CLASSES_64),
        "gt_as_tensors_64": _case("gt_as_tensors_64", folder, cfg64, _maps(rng, cfg64), GT_BOXES_64, GT_CLASSES_64,
                                  gt_as_tensors=True),
        "image_without_gt_96": _case("image_without_gt_96", folder, cfg96, _maps(rng, cfg96), GT_BOXES_96,
                                     GT_CLASSES_96),
        "batch_without_gt_96": _case("batch_without_gt_96", folder, cfg96, _maps(rng, cfg96),
                                     np.zeros_like(GT_BOXES_96), np.full_like(GT_CLASSES_96, -1)),
        "no_gt_rows_64": _case("no_gt_rows_64", folder, cfg64, _maps(rng, cfg64), np.zeros((BATCH, 0, 4), np.float32),
                               np.zeros((BATCH, 0), np.int64)),
    }
    cfg_plain = _cfg(96, iou_aware=False, scale_x_y=1.1, anchor_match_threshold=0.3, iou_loss_weight=1.5)
    expected["no_iou_aware_96"] = _case("no_iou_aware_96", folder, cfg_plain, _maps(rng, cfg_plain), GT_BOXES_96,
                                        GT_CLASSES_96)
    ignore_maps, planted = _maps_matching_gt(rng, cfg96, GT_BOXES_96, GT_CLASSES_96)
    expected["ignored_good_boxes_96"] = _case("ignored_good_boxes_96", folder, cfg96, ignore_maps, GT_BOXES_96,
                                              GT_CLASSES_96)
    expected["ignored_good_boxes_96"]["planted"] = planted
    _, never_ignoring = _paddle_losses(_cfg(96, ignore_threshold=1.0), ignore_maps, GT_BOXES_96, GT_CLASSES_96)
    expected["ignored_good_boxes_96"]["loss_obj_without_ignoring"] = never_ignoring["loss_obj"].numpy()

    bad_classes = GT_CLASSES_64.copy()
    bad_classes[1, 0] = 6
    write_case(folder, "bad_class", {"kind": "bad_class", "cfg": cfg64.to_dict()}, gt_boxes=GT_BOXES_64,
               gt_classes=bad_classes)
    with pytest.raises(ValueError) as paddle_error:
        build_targets(GT_BOXES_64, bad_classes, [(8, 8), (4, 4), (2, 2)], cfg64)
    expected["bad_class"] = {"error": np.array([str(paddle_error.value)])}

    twin = run_torch_cases(python, folder, TORCH_SIDE)
    return {name: (values, twin[name]) for name, values in expected.items()}


def _assert_same(expected: dict, actual: dict, case: str) -> None:
    compared = {key: value for key, value in expected.items()
                if key not in ("planted", "loss_obj_without_ignoring")}
    assert sorted(compared) == sorted(actual), f"{case}: keys differ"
    for key, value in compared.items():
        if key.startswith("target"):  # numpy on both sides, the same code: bit for bit
            np.testing.assert_array_equal(actual[key], value, err_msg=f"{case}: {key}")
        else:
            np.testing.assert_allclose(actual[key], value, rtol=RTOL, atol=ATOL, err_msg=f"{case}: {key}")


@pytest.mark.parametrize("case", ["gt_64", "gt_as_tensors_64", "image_without_gt_96", "no_iou_aware_96",
                                  "ignored_good_boxes_96"])
def test_yolo_loss_targets_terms_and_gradients_equal_paddle(cases, case):
    expected, actual = cases[case]
    _assert_same(expected, actual, case)
    # Every term is really exercised (a twin that ignored the boxes, or a branch, would fail above).
    for key in ("loss_xy", "loss_wh", "loss_iou", "loss_obj", "loss_cls"):
        assert expected[f"loss/{key}"] > 0, f"{case}: {key}"
    assert (expected["loss/loss_iou_aware"] > 0) == (case != "no_iou_aware_96")
    assert sum(expected[f"target{level}/positive"].sum() for level in range(3)) >= 2


def test_better_fitting_box_wins_a_shared_slot(cases):
    """Boxes 4 (4x4) and 5 (3x5) of image 0 have their centre in the same cell of every level and both claim
    several of the same anchors; each such slot must go to the box whose shape fits that anchor better (box 4 on
    some anchors, box 5 on others), on both sides (the equality above then covers the twin)."""
    from inspector.models.anchors import shape_iou

    cfg = _cfg(64)
    expected, actual = cases["gt_64"]
    pair = GT_BOXES_64[0, 4:6]
    fits = shape_iou(pair[:, 2:] - pair[:, :2], np.array([a for level in cfg.anchors for a in level]))
    winners = set()
    for flat_anchor in np.nonzero((fits > cfg.anchor_match_threshold).all(axis=0))[0]:
        level, anchor = divmod(int(flat_anchor), cfg.num_anchors)
        size = cfg.input_size // cfg.strides[level]
        cell = int(35 // cfg.strides[level]) * size + int(35 // cfg.strides[level])
        winner = int(fits[:, flat_anchor].argmax())
        winners.add(winner)
        for values in (expected, actual):
            assert values[f"target{level}/positive"][0, anchor, cell] == 1
            np.testing.assert_array_equal(values[f"target{level}/boxes"][0, anchor, cell], pair[winner])
    assert winners == {0, 1}


def test_image_and_batch_without_gt(cases):
    """An image without GT contributes objectness (all background) only; a batch without GT, whether as padding
    rows or with no rows at all, gives zero box and class terms and the same gradients as Paddle."""
    expected, _ = cases["image_without_gt_96"]
    assert not expected["target0/positive"][1].any() and not expected["target2/positive"][1].any()
    for case in ("batch_without_gt_96", "no_gt_rows_64"):
        expected, actual = cases[case]
        _assert_same(expected, actual, case)
        for key in ("loss_xy", "loss_wh", "loss_iou", "loss_iou_aware", "loss_cls"):
            assert expected[f"loss/{key}"] == 0 and actual[f"loss/{key}"] == 0, f"{case}: {key}"
        assert expected["loss/loss_obj"] > 0


def test_ignore_threshold_is_exercised(cases):
    """The planted good-but-unassigned boxes are left out of the objectness loss (Paddle's value changes with the
    threshold), and the twin's loss equals Paddle's in that case (checked above)."""
    expected, actual = cases["ignored_good_boxes_96"]
    assert expected["planted"] > 0
    assert expected["loss_obj_without_ignoring"] > expected["loss/loss_obj"]
    np.testing.assert_allclose(actual["loss/loss_obj"], expected["loss/loss_obj"], rtol=RTOL)


def test_out_of_range_class_raises_the_same_error(cases):
    expected, actual = cases["bad_class"]
    assert "num_classes=6" in str(expected["error"][0])
    assert list(actual["error"]) == list(expected["error"])


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
