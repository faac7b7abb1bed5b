"""Evaluation: COCO AP against hand-computed values, and the DeepPCB IoU > 0.33 F-score protocol."""
from __future__ import annotations

import json

import numpy as np
import pytest

from inspector.evaluation import box_iou, evaluate, pr_curves
from inspector.evaluation.deeppcb import best_f1_threshold, counts_at, match_dataset, match_image

from eval_cases import CLASSES, SQUARE, det, gt, no_detections


def hand_interpolated_ap(ranked_hits: list[bool], num_gt: int) -> float:
    """COCO's 101-point AP written the textbook way: at each recall level r, the best precision
    reached at any rank whose recall is >= r (0 if r is never reached), averaged over the 101 levels."""
    true_positives = np.cumsum(ranked_hits)
    recall = true_positives / num_gt
    precision = true_positives / np.arange(1, len(ranked_hits) + 1)
    levels = [i / 100 for i in range(101)]
    return sum(max((p for p, r in zip(precision, recall) if r >= level), default=0.0) for level in levels) / 101


# --- COCO AP ------------------------------------------------------------------------------------


@pytest.fixture
def crafted_case():
    """2 images, 3 GT boxes of class 0, 4 detections ranked: hit, miss, hit, duplicate (miss).

    Every hit is exact (IoU 1), every miss overlaps nothing it could claim, so the ranking is the
    same at every IoU threshold from 0.5 to 0.95.
    """
    gts = [gt([[0, 0, 50, 50], [200, 200, 260, 260]], [0, 0]), gt([[10, 10, 40, 70]], [0])]
    dets = [
        det([[0, 0, 50, 50], [0, 0, 50, 50]], [0.9, 0.6], [0, 0]),  # rank 1 hit, rank 4 duplicate
        det([[300, 300, 330, 330], [10, 10, 40, 70]], [0.8, 0.7], [0, 0]),  # rank 2 background, rank 3 hit
    ]
    return gts, dets


def test_ap_equals_hand_computed_101_point_interpolation(crafted_case):
    gts, dets = crafted_case
    # Ranks: recall 1/3, 1/3, 2/3, 2/3 at precision 1, 1/2, 2/3, 1/2. Recall levels 0.00..0.33
    # (34 of them) reach precision 1, levels 0.34..0.66 (33) reach 2/3, levels 0.67..1.00 none.
    expected = (34 * 1.0 + 33 * 2 / 3) / 101
    assert hand_interpolated_ap([True, False, True, False], num_gt=3) == pytest.approx(expected, abs=1e-12)

    result = evaluate(gts, dets, CLASSES)
    assert result.map50 == pytest.approx(expected, abs=1e-6)
    assert result.map50_95 == pytest.approx(expected, abs=1e-6)
    assert result.per_class["open"].ap50 == pytest.approx(expected, abs=1e-6)
    # "short" has no ground truth: its AP is undefined and left out of the mean, as in COCO.
    assert result.per_class["short"].ap50 is None


def test_ap50_95_counts_only_the_iou_thresholds_a_match_clears():
    # IoU 0.62: a match at IoU thresholds 0.50, 0.55, 0.60; a miss at the other 7 of 10.
    gts = [gt([SQUARE], [0])]
    dets = [det([[0, 0, 100, 62]], [0.9], [0])]
    result = evaluate(gts, dets, CLASSES)
    assert box_iou(dets[0].boxes, gts[0].boxes)[0, 0] == pytest.approx(0.62)
    assert result.map50 == pytest.approx(1.0, abs=1e-6)
    assert result.map50_95 == pytest.approx(0.3, abs=1e-6)
    assert result.per_class["open"].ap50_95 == pytest.approx(0.3, abs=1e-6)


def test_perfect_detections_score_one_everywhere():
    gts = [gt([[0, 0, 30, 40], [100, 100, 150, 130]], [0, 1]), gt([[5, 5, 60, 25]], [1])]
    dets = [det(g.boxes, np.linspace(0.9, 0.5, len(g)), g.classes) for g in gts]
    result = evaluate(gts, dets, CLASSES)
    assert result.map50 == pytest.approx(1.0, abs=1e-6)
    assert result.map50_95 == pytest.approx(1.0, abs=1e-6)
    assert (result.precision, result.recall, result.f1_iou033) == (1.0, 1.0, 1.0)
    for name in CLASSES:
        assert result.per_class[name].ap50 == pytest.approx(1.0, abs=1e-6)
        assert result.per_class[name].recall == 1.0


def test_no_detections_gives_zero_without_crashing():
    gts = [gt([SQUARE], [0]), gt([[10, 10, 20, 20]], [1])]
    result = evaluate(gts, [no_detections(), no_detections()], CLASSES)
    assert result.map50 == 0.0 and result.map50_95 == 0.0
    assert (result.precision, result.recall, result.f1_iou033) == (0.0, 0.0, 0.0)
    assert result.score_threshold is None  # nothing to choose a threshold from
    assert result.false_negatives == 2
    assert result.per_class["open"].ap50 == 0.0


def test_detection_of_the_wrong_class_scores_zero_for_the_true_class():
    gts = [gt([SQUARE, [200, 200, 240, 240]], [0, 1])]
    # The "open" defect is found but called "short"; the "short" defect is found correctly, with a
    # higher score so that the wrong-class detection ranks after every "short" hit.
    dets = [det([SQUARE, [200, 200, 240, 240]], [0.8, 0.9], [1, 1])]
    result = evaluate(gts, dets, CLASSES)
    assert result.per_class["open"].ap50 == 0.0
    assert result.per_class["short"].ap50 == pytest.approx(1.0, abs=1e-6)
    assert result.map50 == pytest.approx(0.5, abs=1e-6)


def test_more_than_twenty_defects_in_one_image_all_count():
    # DeepPCB has up to ~20 defects per image; pycocotools' usual maxDets of 10 would cap AP at 1/3.
    boxes = [[40 * i, 0, 40 * i + 30, 30] for i in range(30)]
    gts = [gt(boxes, [0] * 30)]
    dets = [det(boxes, np.linspace(0.99, 0.5, 30), [0] * 30)]
    assert evaluate(gts, dets, CLASSES).map50 == pytest.approx(1.0, abs=1e-6)


def test_pr_curves_follow_the_interpolated_precision(crafted_case):
    gts, dets = crafted_case
    curves = pr_curves(gts, dets, CLASSES)
    assert set(curves) == {"open"}  # no ground truth for "short", so no curve
    curve = curves["open"]
    assert curve.recall.shape == curve.precision.shape == (101,)
    np.testing.assert_allclose(curve.precision[:34], 1.0, atol=1e-6)
    np.testing.assert_allclose(curve.precision[34:67], 2 / 3, atol=1e-6)
    np.testing.assert_allclose(curve.precision[67:], 0.0)
    np.testing.assert_allclose(evaluate(gts, dets, CLASSES).pr_curves["open"].precision, curve.precision)


def test_pycocotools_output_is_silenced(crafted_case, capsys):
    gts, dets = crafted_case
    evaluate(gts, dets, CLASSES)
    assert capsys.readouterr().out == ""


def test_to_dict_is_json_ready_with_the_contract_keys(crafted_case):
    gts, dets = crafted_case
    report = json.loads(json.dumps(evaluate(gts, dets, CLASSES).to_dict()))
    for key in ("map50", "map50_95", "precision", "recall", "f1_iou033", "score_threshold", "per_class", "n_images",
                "official_ap", "official_f", "official_threshold"):
        assert key in report
    assert report["n_images"] == 2
    # Ranked: correct, background, correct, duplicate over 3 boxes: official AP (1 + 2/3) / 3.
    assert report["official_ap"] == pytest.approx((1 + 2 / 3) / 3)
    assert set(report["per_class"]["open"]) >= {"ap50", "ap50_95", "precision", "recall"}


# --- DeepPCB protocol ---------------------------------------------------------------------------


@pytest.mark.parametrize(("height", "is_hit"), [(32, False), (33, False), (34, True)])
def test_iou_must_exceed_one_third(height, is_hit):
    # Against a 100x100 box, a 100 x height box has IoU height/100; exactly 0.33 is not "> 0.33".
    hits = match_image(gt([SQUARE], [0]), det([[0, 0, 100, height]], [0.9], [0]))
    assert hits.tolist() == [is_hit]


def test_duplicate_detections_on_one_box_count_one_hit_and_one_false_positive():
    gts = [gt([SQUARE], [0])]
    dets = [det([[0, 0, 100, 90], [0, 0, 100, 100]], [0.7, 0.9], [0, 0])]
    # The higher-scored detection claims the box, even though the other one comes first in the input.
    assert match_image(gts[0], dets[0]).tolist() == [False, True]
    result = evaluate(gts, dets, CLASSES, score_threshold=0.5)
    assert (result.true_positives, result.false_positives, result.false_negatives) == (1, 1, 0)
    assert result.precision == 0.5 and result.recall == 1.0
    assert result.f1_iou033 == pytest.approx(2 / 3)


def test_a_detection_claims_the_free_box_it_overlaps_most():
    gts = [gt([[0, 0, 100, 100], [0, 50, 100, 150]], [0, 0])]
    dets = [det([[0, 45, 100, 145], [0, 0, 100, 90]], [0.9, 0.8], [0, 0])]
    # The first detection overlaps box 1 more (IoU 0.90 vs 0.38), leaving box 0 to the second, which
    # could not have taken box 1 (IoU 0.27). Taking the first box above 0.33 would lose a hit.
    assert match_image(gts[0], dets[0]).tolist() == [True, True]


def test_class_mismatch_is_a_miss_and_a_false_positive():
    result = evaluate([gt([SQUARE], [0])], [det([SQUARE], [0.9], [1])], CLASSES, score_threshold=0.5)
    assert (result.true_positives, result.false_positives, result.false_negatives) == (0, 1, 1)
    assert result.f1_iou033 == 0.0
    assert result.per_class["short"].precision == 0.0
    assert result.per_class["short"].recall is None  # no "short" ground truth


def _ranked_case():
    """3 GT boxes over 2 images; detections by score: hit, hit, FP, hit, FP, FP."""
    gts = [gt([[0, 0, 50, 50], [100, 100, 150, 150]], [0, 1]), gt([[0, 0, 40, 40]], [0])]
    dets = [
        det([[0, 0, 50, 50], [300, 300, 340, 340], [100, 100, 150, 150]], [0.9, 0.7, 0.6], [0, 0, 1]),
        det([[0, 0, 40, 40], [200, 200, 240, 240], [0, 0, 40, 40]], [0.8, 0.5, 0.4], [0, 1, 0]),
    ]
    return gts, dets


def test_the_f_maximising_threshold_is_chosen_and_reported():
    gts, dets = _ranked_case()
    # F = 2TP / (kept + 3): 2/4, 4/5, 4/6, 6/7, 6/8, 6/9 at thresholds 0.9 .. 0.4, best at 0.6.
    result = evaluate(gts, dets, CLASSES)
    assert result.score_threshold == 0.6
    assert result.f1_iou033 == pytest.approx(6 / 7)
    assert (result.precision, result.recall) == (0.75, 1.0)
    assert result.per_class["open"].precision == pytest.approx(2 / 3)
    assert result.per_class["short"].precision == 1.0


def test_a_given_threshold_is_used_as_is():
    gts, dets = _ranked_case()
    result = evaluate(gts, dets, CLASSES, score_threshold=0.8)
    assert result.score_threshold == 0.8
    assert (result.precision, result.recall) == (1.0, pytest.approx(2 / 3))
    assert result.f1_iou033 == pytest.approx(0.8)


def test_threshold_search_never_splits_equal_scores():
    # Sorted: a hit and three false positives all at 0.5, then a hit at 0.3; 2 GT boxes.
    # Cutting after the first 0.5 would look best (F 2/3) but no threshold keeps only it.
    gts = [gt([SQUARE, [200, 200, 300, 300]], [0, 0])]
    dets = [det([SQUARE, [400, 0, 450, 50], [400, 100, 450, 150], [400, 200, 450, 250], [200, 200, 300, 300]],
                [0.5, 0.5, 0.5, 0.5, 0.3], [0, 0, 0, 0, 0])]
    result = evaluate(gts, dets, CLASSES)
    assert result.score_threshold == 0.3
    assert result.f1_iou033 == pytest.approx(4 / 7)


def _random_case(rng: np.random.Generator, num_images: int):
    gts, dets = [], []
    for _ in range(num_images):
        n, k = rng.integers(0, 6), rng.integers(0, 9)
        corners = rng.uniform(0, 200, size=(n, 2))
        gt_boxes = np.hstack([corners, corners + rng.uniform(10, 40, size=(n, 2))])
        # Detections: jittered copies of GT boxes (some duplicated) plus random boxes, random classes.
        num_jittered = int(rng.integers(0, k + 1)) if n else 0
        source = gt_boxes[rng.integers(0, n, size=num_jittered)] if n else np.zeros((0, 4))
        jittered = source + rng.normal(0, 6, size=source.shape)
        noise_corners = rng.uniform(0, 200, size=(k - len(jittered), 2))
        noise = np.hstack([noise_corners, noise_corners + 25])
        boxes = np.vstack([jittered, noise])
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
        # Scores rounded to 1 decimal so that equal scores occur.
        gts.append(gt(gt_boxes, rng.integers(0, 2, size=n)))
        dets.append(det(boxes, np.round(rng.uniform(0, 1, size=k), 1), rng.integers(0, 2, size=k)))
    return gts, dets


def test_single_pass_threshold_search_matches_rematching_at_every_threshold():
    """The one-pass search must agree with the slow definition: drop detections below t, match again."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        gts, dets = _random_case(rng, num_images=4)
        matched = match_dataset(gts, dets, num_classes=2)
        best_threshold = best_f1_threshold(matched)
        best_f1 = -1.0
        for threshold in sorted({s for d in dets for s in d.scores.tolist()}, reverse=True):
            kept = [det(d.boxes[d.scores >= threshold], d.scores[d.scores >= threshold],
                        d.classes[d.scores >= threshold]) for d in dets]
            true_positives = sum(int(match_image(g, d).sum()) for g, d in zip(gts, kept))
            num_kept, num_gt = sum(len(d) for d in kept), sum(len(g) for g in gts)
            f1 = 2 * true_positives / (num_kept + num_gt) if num_kept + num_gt else 0.0
            assert counts_at(matched, threshold).f1 == pytest.approx(f1)
            if f1 > best_f1 + 1e-12:
                best_f1, slow_threshold = f1, threshold
        if best_threshold is not None:
            assert best_threshold == slow_threshold
            assert counts_at(matched, best_threshold).f1 == pytest.approx(best_f1)


# --- input checks -------------------------------------------------------------------------------


def test_mismatched_image_counts_are_rejected():
    with pytest.raises(ValueError, match="2 ground-truth images but 1 detection images"):
        evaluate([gt([SQUARE], [0]), gt([SQUARE], [0])], [no_detections()], CLASSES)


def test_a_class_id_outside_the_class_names_names_the_image():
    with pytest.raises(ValueError, match=r"image 1: detections: box 0 has class 2, expected 0..1"):
        evaluate([gt([SQUARE], [0]), gt([SQUARE], [0])], [no_detections(), det([SQUARE], [0.9], [2])], CLASSES)


def test_scores_must_match_the_boxes():
    with pytest.raises(ValueError, match=r"image 0: detections: scores have shape \(2,\), expected \(1,\)"):
        evaluate([gt([SQUARE], [0])], [det([SQUARE], [0.9, 0.8], [0])], CLASSES)


def test_inverted_boxes_are_rejected():
    with pytest.raises(ValueError, match="image 0: ground truth: box 0 .* expected xyxy"):
        evaluate([gt([[50, 0, 10, 40]], [0])], [no_detections()], CLASSES)


# --- the protocol every evaluation runs (training validation, quantization, the runtime) ---------


def test_predictions_are_mapped_back_from_each_letterbox_and_paired_with_labels_by_key():
    """``predict_batches`` undoes each image's own letterbox (scale and padding), so a detector that finds
    the letterboxed box exactly scores 1 against the label in original pixels; keys, not batch order,
    pair detections with samples."""
    from types import SimpleNamespace

    from inspector.evaluation import evaluate_samples, predict_batches

    samples = [SimpleNamespace(key="a", boxes=np.array([[10.0, 20.0, 50.0, 60.0]]), classes=np.array([0])),
               SimpleNamespace(key="b", boxes=np.array([[100.0, 0.0, 200.0, 80.0]]), classes=np.array([1]))]
    letterbox = {"a": (0.5, (0.0, 16.0)), "b": (0.25, (8.0, 0.0))}

    def at_input(sample):
        scale, (pad_x, pad_y) = letterbox[sample.key]
        x0, y0, x1, y1 = sample.boxes[0]
        return np.array([[x0 * scale + pad_x, y0 * scale + pad_y, x1 * scale + pad_x, y1 * scale + pad_y]])

    batch = SimpleNamespace(images=np.zeros((2, 3, 8, 8), np.float32), keys=["b", "a"],  # not in sample order
                            scales=np.array([0.25, 0.5]), pads=np.array([[8.0, 0.0], [0.0, 16.0]]))

    def predict(images):
        assert len(images) == 2
        return [(at_input(samples[1]), np.array([0.9]), np.array([1])),
                (at_input(samples[0]), np.array([0.8]), np.array([0]))]

    detections = predict_batches([batch], predict, progress=False)
    np.testing.assert_allclose(detections["a"].boxes, samples[0].boxes, atol=1e-3)
    np.testing.assert_allclose(detections["b"].boxes, samples[1].boxes, atol=1e-3)
    result = evaluate_samples(samples, detections, CLASSES)
    assert result.map50_95 == pytest.approx(1.0)
    in_order = evaluate_samples(samples, [detections["a"], detections["b"]], CLASSES)
    assert in_order.to_dict() == result.to_dict()
    with pytest.raises(ValueError, match="1 detections for 2 samples"):
        evaluate_samples(samples, [detections["a"]], CLASSES)
