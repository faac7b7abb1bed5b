"""Bootstrap intervals of the official AP over boards (inspector.evaluation.bootstrap) on hand-built boards."""
from __future__ import annotations

import numpy as np
import pytest

from inspector.evaluation import (
    evaluate,
    load_detections,
    official_ap_difference_interval,
    official_ap_interval,
    official_metric,
    save_detections,
)
from inspector.evaluation.bootstrap import official_ap_resamples

from eval_cases import CLASSES, SQUARE, det, gt

ELSEWHERE = [300, 300, 340, 340]


def board(kind: int):
    """Four kinds of board: found; found below a false alarm; found with the wrong class (the box is consumed, the
    right-class detection below it is a false positive); missed."""
    truth = gt([SQUARE], [0])
    if kind == 0:
        return truth, det([SQUARE], [0.9], [0])
    if kind == 1:
        return truth, det([ELSEWHERE, SQUARE], [0.95, 0.6], [0, 0])
    if kind == 2:
        return truth, det([SQUARE, SQUARE], [0.8, 0.7], [1, 0])
    return truth, det([ELSEWHERE], [0.5], [1])


def boards(kinds):
    pairs = [board(kind) for kind in kinds]
    return [pair[0] for pair in pairs], [pair[1] for pair in pairs]


def test_one_board_is_drawn_whole_every_time_so_the_interval_is_the_official_ap():
    gts, dets = boards([1])
    interval = official_ap_interval(gts, dets, resamples=50)
    assert interval.low == interval.high == pytest.approx(official_metric(gts, dets, len(CLASSES)).ap) == 0.5


def test_the_resamples_score_draws_of_whole_boards_by_the_official_rule():
    gts, dets = boards([0, 1, 2, 3])
    values = official_ap_resamples(gts, [dets], resamples=400, seed=3)[0]
    # Every draw of 4 boards from these: the distinct values it can take are few; the official AP of the data set
    # itself is one of them (a draw of each board once), and a draw with no found board scores 0.
    # Pooled: alarm .95, hit .9 (precision 1/2), wrong class .8, consumed .7, hit .6 (2/5), alarm .5.
    assert official_metric(gts, dets, len(CLASSES)).ap == pytest.approx(0.225)  # (1/2 + 2/5) / 4
    assert np.isclose(values, 0.225).any() and np.isclose(values, 0.0).any() and values.max() <= 1.0
    assert np.isclose(values, 0.75).any()  # e.g. board 0 three times and board 2: 3 hits first, 1 box missed


def test_a_model_compared_with_itself_differs_by_nothing_on_every_draw():
    gts, dets = boards([0, 1, 2, 3, 0, 1])
    interval = official_ap_difference_interval(gts, dets, dets, resamples=200)
    assert interval.low == interval.high == 0.0


def test_the_paired_interval_of_a_difference_is_tighter_than_either_model_s_own():
    rng = np.random.default_rng(0)
    kinds = rng.integers(0, 4, size=60)
    gts, dets_a = boards(kinds)
    # b: a with one top-scoring false alarm on board 0 only. Every draw without board 0 scores both the same,
    # every draw with it scores b lower: the difference is never negative.
    dets_b = list(dets_a)
    d0 = dets_a[0]
    dets_b[0] = det(np.vstack([d0.boxes, [ELSEWHERE]]), np.append(d0.scores, 0.99), np.append(d0.classes, 0))
    difference = official_ap_difference_interval(gts, dets_a, dets_b, resamples=500)
    own = official_ap_interval(gts, dets_a, resamples=500)
    point = official_metric(gts, dets_a, len(CLASSES)).ap - official_metric(gts, dets_b, len(CLASSES)).ap
    assert difference.low >= 0.0 and difference.high >= point > 0.0
    assert difference.high - difference.low < (own.high - own.low) / 3
    assert own.low <= official_metric(gts, dets_a, len(CLASSES)).ap <= own.high


def test_four_times_the_boards_halve_the_interval():
    rng = np.random.default_rng(1)
    kinds = rng.integers(0, 4, size=50)
    few = official_ap_interval(*boards(kinds), resamples=1000, seed=5)
    many = official_ap_interval(*boards(np.tile(kinds, 4)), resamples=1000, seed=5)
    ratio = (many.high - many.low) / (few.high - few.low)
    assert 0.35 < ratio < 0.65  # 1 / sqrt(4), within the resampling's own noise


def test_evaluate_reports_the_interval_only_when_asked_for_and_names_bad_settings():
    gts, dets = boards([0, 1, 2, 3])
    plain = evaluate(gts, dets, CLASSES)
    assert plain.official_ap_interval is None and "official_ap_interval" not in plain.to_dict()
    summary = evaluate(gts, dets, CLASSES, interval=True).to_dict()["official_ap_interval"]
    assert set(summary) == {"low", "high", "confidence", "resamples"} and summary["confidence"] == 0.95
    assert 0.0 <= summary["low"] <= 0.225 <= summary["high"] <= 1.0
    with pytest.raises(ValueError, match="resamples must be at least 1, got 0"):
        official_ap_resamples(gts, [dets], resamples=0)
    with pytest.raises(ValueError, match="3 detection sets for 4 ground-truth sets"):
        official_ap_resamples(gts, [dets[:3]])


def test_saved_detections_come_back_image_by_image_and_a_damaged_file_is_named(tmp_path):
    _, dets = boards([0, 1, 2, 3])
    dets.insert(2, det(np.zeros((0, 4)), [], []))  # an image without detections keeps its place
    save_detections(tmp_path / "row.npz", dets)
    loaded = load_detections(tmp_path / "row.npz")
    assert len(loaded) == 5 and len(loaded[2]) == 0
    for before, after in zip(dets, loaded):
        np.testing.assert_array_equal(before.boxes, after.boxes)
        np.testing.assert_array_equal(before.scores, after.scores)
        np.testing.assert_array_equal(before.classes, after.classes)
    with np.load(tmp_path / "row.npz") as saved:
        parts = dict(saved)
    np.savez(tmp_path / "damaged.npz", **{**parts, "counts": parts["counts"] + 1})
    with pytest.raises(ValueError, match="damaged.npz: 11 detections counted, 6 stored"):
        load_detections(tmp_path / "damaged.npz")
