"""The official DeepPCB metric (the dataset authors' script) on hand-built cases, and model selection by it."""
from __future__ import annotations

import json

import numpy as np
import pytest

from inspector.evaluation import ImageDetections, ImageGT, best_index, evaluate, improves, official_metric
from inspector.evaluation.deeppcb import box_iou
from inspector.evaluation.official import official_match_image
from inspector.evaluation.selection import selection_basis

from eval_cases import CLASSES, SQUARE, det, gt, no_detections

ELSEWHERE = [300, 300, 340, 340]


def script_match(g: ImageGT, d: ImageDetections, iou_threshold: float = 0.33) -> set[int]:
    """The authors' per-image matching written as plainly as their script: for each ground-truth box in
    order, scan the detections (sorted by score) and take the first free one with IoU > 0.33; the pair
    is correct when the classes agree. Returns the indices of the correct detections."""
    order = sorted(range(len(d)), key=lambda k: -d.scores[k])
    taken, good = set(), set()
    for n in range(len(g)):
        for k in order:
            if k not in taken and box_iou(g.boxes[n:n + 1], d.boxes[k:k + 1])[0, 0] > iou_threshold:
                taken.add(k)
                if d.classes[k] == g.classes[n]:
                    good.add(k)
                break
    return good


def script_reference(gts, dets):
    """Pooled non-interpolated AP, and the best F over every threshold t, each t re-matched from scratch
    with only the detections >= t, as if only those had been submitted to the script."""
    num_gt = sum(len(g) for g in gts)
    confidences, correct = [], []
    for g, d in zip(gts, dets):
        good = script_match(g, d)
        confidences += list(d.scores)
        correct += [k in good for k in range(len(d))]
    ranked = sorted(range(len(confidences)), key=lambda i: -confidences[i])
    hits, ap = 0, 0.0
    for position, i in enumerate(ranked):
        if correct[i]:
            hits += 1
            ap += hits / (position + 1)
    ap = ap / num_gt if num_gt else 0.0
    best_f = 0.0
    for threshold in set(confidences):
        kept = [det(d.boxes[d.scores >= threshold], d.scores[d.scores >= threshold],
                    d.classes[d.scores >= threshold]) for d in dets]
        tp = sum(len(script_match(g, d)) for g, d in zip(gts, kept))
        submitted = sum(len(d) for d in kept)
        precision = tp / submitted if submitted else 0.0
        recall = tp / num_gt if num_gt else 0.0
        f = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        best_f = max(best_f, f)
    return ap, best_f


def test_perfect_detections_score_one():
    gts = [gt([SQUARE, [200, 200, 250, 260]], [0, 1]), gt([[10, 10, 40, 70]], [1])]
    dets = [det([SQUARE, [200, 200, 250, 260]], [0.9, 0.8], [0, 1]), det([[10, 10, 40, 70]], [0.7], [1])]
    result = official_metric(gts, dets, len(CLASSES))
    assert result.ap == pytest.approx(1.0) and result.f == pytest.approx(1.0)
    assert result.precision == 1.0 and result.recall == 1.0
    assert result.threshold == pytest.approx(0.7)  # the lowest score: every detection is needed


def test_a_higher_ranked_wrong_class_detection_consumes_the_box():
    # Both detections cover the "open" box; the higher-ranked one says "short". It takes the box: the
    # box is missed and both detections are false positives, though the right class is also there.
    gts = [gt([SQUARE], [0])]
    dets = [det([SQUARE, SQUARE], [0.9, 0.8], [1, 0])]
    official = official_metric(gts, dets, len(CLASSES))
    assert official.ap == 0.0 and official.f == 0.0 and official.recall == 0.0
    # The class-aware protocol beside it lets the right class through: the two differ exactly here.
    result = evaluate(gts, dets, CLASSES)
    assert result.f1_iou033 > 0.6 and result.official_f == 0.0 and result.official_ap == 0.0


def test_a_lower_ranked_wrong_class_detection_is_only_a_false_positive():
    gts = [gt([SQUARE], [0])]
    dets = [det([SQUARE, SQUARE], [0.9, 0.8], [0, 1])]
    result = official_metric(gts, dets, len(CLASSES))
    assert result.ap == pytest.approx(1.0)  # the correct detection is ranked first
    assert result.f == pytest.approx(1.0) and result.threshold == pytest.approx(0.9)


# Two boxes side by side; the top detection overlaps both (IoU 0.54 each), the second only the left one
# (IoU 1 with the left, 0.25 with the right).
LEFT, RIGHT = [0, 0, 100, 100], [60, 0, 160, 100]
MIDDLE = [30, 0, 130, 100]


def test_ground_truth_boxes_are_matched_greedily_in_their_order():
    dets = [det([MIDDLE, LEFT], [0.9, 0.8], [0, 0])]
    assert box_iou(np.array([MIDDLE], float), np.array([LEFT, RIGHT], float))[0] == pytest.approx([7 / 13, 7 / 13])
    assert box_iou(np.array([LEFT], float), np.array([RIGHT], float))[0, 0] == pytest.approx(0.25)
    # LEFT first: it takes the top detection, RIGHT finds nothing free above 0.33 and is missed, the
    # second detection is left over (a false positive), although a pairing with both right existed.
    left_first = official_metric([gt([LEFT, RIGHT], [0, 0])], dets, len(CLASSES))
    assert official_match_image(gt([LEFT, RIGHT], [0, 0]), dets[0]).tolist() == [True, False]
    assert left_first.ap == pytest.approx(0.5)  # precision 1 at rank 1, over 2 boxes
    # RIGHT first: it takes the top detection, LEFT the second; both boxes found.
    right_first = official_metric([gt([RIGHT, LEFT], [0, 0])], dets, len(CLASSES))
    assert right_first.ap == pytest.approx(1.0) and right_first.f == pytest.approx(1.0)


def test_a_box_takes_the_highest_ranked_detection_not_the_best_overlapping():
    # The lower-ranked detection overlaps exactly, the higher-ranked one only just above 0.33.
    gts = [gt([SQUARE], [0])]
    dets = [det([[0, 0, 100, 34], SQUARE], [0.9, 0.8], [1, 0])]
    assert official_match_image(gts[0], dets[0]).tolist() == [False, False]


def test_duplicates_are_false_positives():
    gts = [gt([SQUARE, [200, 200, 250, 250]], [0, 0])]
    dets = [det([SQUARE, SQUARE, [200, 200, 250, 250]], [0.9, 0.8, 0.7], [0, 0, 0])]
    result = official_metric(gts, dets, len(CLASSES))
    # Ranked: correct, duplicate, correct -> AP (1/1 + 2/3) / 2.
    assert result.ap == pytest.approx((1 + 2 / 3) / 2)
    # At 0.7: P 2/3, R 1, F 0.8; at 0.9: P 1, R 1/2, F 2/3. The duplicate costs precision.
    assert result.f == pytest.approx(0.8) and result.threshold == pytest.approx(0.7)
    assert result.precision == pytest.approx(2 / 3) and result.recall == 1.0


def test_ap_of_a_mixed_list_over_two_images_equals_the_hand_computed_value():
    a, b, c = [0, 0, 40, 40], [100, 100, 140, 130], [10, 50, 60, 90]
    gts = [gt([a, b], [0, 1]), gt([c], [0])]
    dets = [
        det([a, ELSEWHERE, b, b], [0.95, 0.9, 0.85, 0.7], [0, 0, 0, 1]),  # hit, background, wrong class, too late
        det([c, c], [0.8, 0.6], [0, 0]),  # hit, duplicate
    ]
    # Pooled ranking: 0.95 correct, 0.9 FP, 0.85 FP (wrong class takes b), 0.8 correct, 0.7 FP (b is
    # taken), 0.6 FP. AP = (1/1 + 2/4) / 3 boxes.
    result = evaluate(gts, dets, CLASSES)
    assert result.official_ap == pytest.approx(0.5)
    # Cut after rank 1: F = 2*1/(1+3) = 0.5; after rank 4: 2*2/(4+3) = 4/7; after rank 6: 4/9.
    assert result.official_f == pytest.approx(4 / 7) and result.official_threshold == pytest.approx(0.8)
    assert result.official_precision == pytest.approx(0.5) and result.official_recall == pytest.approx(2 / 3)
    assert script_reference(gts, dets) == pytest.approx((0.5, 4 / 7))


def test_iou_must_exceed_one_third():
    gts = [gt([SQUARE], [0])]
    at_limit = [det([[0, 0, 100, 33]], [0.9], [0])]  # IoU exactly 0.33
    above = [det([[0, 0, 100, 34]], [0.9], [0])]
    assert official_metric(gts, at_limit, 2).ap == 0.0
    assert official_metric(gts, above, 2).ap == pytest.approx(1.0)


def test_no_detections_scores_zero_without_a_threshold():
    result = evaluate([gt([SQUARE], [0]), gt([], [])], [no_detections(), no_detections()], CLASSES)
    assert result.official_ap == 0.0 and result.official_f == 0.0 and result.official_threshold is None
    assert result.official_recall == 0.0


def test_no_ground_truth_scores_zero_as_the_script_does():
    result = evaluate([gt([], [])], [det([SQUARE], [0.9], [0])], CLASSES)
    assert result.official_ap == 0.0 and result.official_f == 0.0 and result.official_precision == 0.0
    empty = evaluate([gt([], [])], [no_detections()], CLASSES)
    assert empty.official_ap == 0.0 and empty.official_threshold is None


def test_equal_scores_are_kept_or_dropped_together():
    # Two detections at 0.8, one correct, one background: no threshold can keep only the correct one.
    gts = [gt([SQUARE], [0])]
    dets = [det([ELSEWHERE, SQUARE], [0.8, 0.8], [0, 0])]
    result = official_metric(gts, dets, len(CLASSES))
    assert result.threshold == pytest.approx(0.8) and result.precision == pytest.approx(0.5)


def test_random_scenes_agree_with_the_plain_script_reference():
    rng = np.random.default_rng(7)
    for _ in range(40):
        gts, dets = [], []
        for _ in range(rng.integers(1, 4)):
            n = int(rng.integers(0, 5))
            corners = rng.uniform(0, 200, (n, 2))
            boxes = np.hstack([corners, corners + rng.uniform(10, 60, (n, 2))])
            gts.append(gt(boxes, rng.integers(0, 2, n)))
            # Detections: jittered copies of the boxes (some twice, some of the wrong class) and strays.
            source = boxes[rng.integers(0, n, int(rng.integers(0, 2 * n + 1)))] if n else np.zeros((0, 4))
            jittered = source + rng.normal(0, 8, source.shape)
            jittered[:, 2:] = np.maximum(jittered[:, 2:], jittered[:, :2] + 1)
            strays = int(rng.integers(0, 3))
            corners = rng.uniform(0, 200, (strays, 2))
            all_boxes = np.vstack([jittered, np.hstack([corners, corners + 20])])
            k = len(all_boxes)
            # Scores on a coarse grid, so equal scores occur.
            dets.append(det(all_boxes, rng.integers(1, 10, k) / 10, rng.integers(0, 2, k)))
        result = official_metric(gts, dets, len(CLASSES))
        ap, f = script_reference(gts, dets)
        assert result.ap == pytest.approx(ap, abs=1e-12)
        assert result.f == pytest.approx(f, abs=1e-12)


def test_to_dict_carries_the_official_keys_json_ready():
    gts = [gt([SQUARE], [0])]
    payload = json.loads(json.dumps(evaluate(gts, [det([SQUARE], [0.9], [0])], CLASSES).to_dict()))
    assert payload["official_ap"] == 1.0 and payload["official_f"] == 1.0
    assert payload["official_threshold"] == pytest.approx(0.9)
    for key in ("map50", "map50_95", "f1_iou033", "official_precision", "official_recall"):
        assert key in payload


# --- choosing a model ------------------------------------------------------------------------------


def test_models_are_chosen_by_official_ap_then_coco_map():
    candidates = [{"official_ap": 0.90, "map50_95": 0.60}, {"official_ap": 0.92, "map50_95": 0.50},
                  {"official_ap": 0.92, "map50_95": 0.55}]
    assert best_index(candidates) == 2  # highest official AP; its tie broken by mAP@0.5:0.95
    assert improves(candidates[1], candidates[0]) and not improves(candidates[0], candidates[1])
    assert not improves(candidates[2], dict(candidates[2]))  # only a strict improvement replaces best/
    assert improves(candidates[0], None)
    assert selection_basis(candidates).startswith("official AP")


def test_a_missing_official_ap_falls_back_to_coco_map_for_every_candidate():
    old = {"map50_95": 0.50}  # recorded before the official metric existed
    new = {"official_ap": 0.99, "map50_95": 0.45}
    assert best_index([old, new]) == 0  # compared by mAP@0.5:0.95, not a number against a missing one
    assert not improves(new, old) and improves({"official_ap": 0.5, "map50_95": 0.51}, old)
    assert selection_basis([old, new]).startswith("mAP@0.5:0.95")
    with pytest.raises(ValueError, match="no candidate"):
        best_index([])


def _scripted_result(official_ap: float, map50_95: float):
    """A validation result with the two numbers best/ is chosen by (the rest is irrelevant here)."""
    from inspector.evaluation import EvalResult

    return EvalResult(map50=map50_95, map50_95=map50_95, precision=0.0, recall=0.0, f1_iou033=0.0,
                      score_threshold=None, true_positives=0, false_positives=0, false_negatives=0, per_class={},
                      n_images=1, official_ap=official_ap, official_f=official_ap, official_threshold=0.5,
                      official_precision=0.0, official_recall=0.0)


@pytest.mark.slow  # it trains (three one-step epochs)
def test_the_training_run_keeps_the_epoch_with_the_best_official_ap_as_best(tmp_path, monkeypatch):
    import paddle

    from inspector.data.synth import write_deeppcb
    from inspector.training import trainer as trainer_module
    from inspector.training.checkpoint import STATE_FILE, load_checkpoint
    from inspector.training.config import TrainConfig

    # Scripted validation, epoch by epoch: official AP peaks at epoch 2, mAP@0.5:0.95 at epoch 3.
    scripted = {1: _scripted_result(0.5, 0.6), 2: _scripted_result(0.7, 0.3), 3: _scripted_result(0.1, 0.9)}
    epochs_validated: list[int] = []

    def scripted_scores(samples, detections, class_names, **kwargs):  # the scoring of the epoch's detections
        epochs_validated.append(len(epochs_validated) + 1)
        return scripted[epochs_validated[-1]]

    monkeypatch.setattr(trainer_module, "evaluate_samples", scripted_scores)
    data = write_deeppcb(tmp_path / "boards", n=10, seed=1, size=160)
    cfg = TrainConfig(arch="mbv3-small", data=str(data), out=str(tmp_path / "run"), epochs=3, batch_size=2,
                      input_size=64, crop_size=None, input_mode="image+template", warmup_epochs=0.0,
                      val_fraction=0.2, workers=0, seed=1, max_steps_per_epoch=1)
    run = trainer_module.train(cfg)
    assert load_checkpoint(run / "best").info["epoch"] == 2
    history = json.loads((run / "metrics.json").read_text())
    assert [row["official_ap"] for row in history] == [0.5, 0.7, 0.1]
    assert "official_f" in (run / "metrics.csv").read_text().splitlines()[0].split(",")

    # A run saved before the official metric: its state knows its best only as best_map (mAP@0.5:0.95,
    # here 0.95). Resumed, that best is compared by mAP@0.5:0.95, not taken as missing: epoch 3 (0.9)
    # does not replace it.
    state_file = run / "last" / STATE_FILE
    state = paddle.load(str(state_file))
    del state["best_metrics"]
    state["epoch"], state["history"], state["best_map"] = 2, state["history"][:2], 0.95
    paddle.save(state, str(state_file))
    epochs_validated[:] = [1, 2]
    trainer_module.train(cfg, resume=True)
    assert load_checkpoint(run / "best").info["epoch"] == 2
    assert epochs_validated == [1, 2, 3]
