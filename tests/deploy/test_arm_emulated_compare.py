"""The box-by-box comparison of deploy/arm/emulated_compare.py (ARM under qemu vs the x86 package).

Its verdicts ("boards identical", "only x86", the largest box and score differences) are what
deploy/arm/README.md reports, so the matching they rest on is checked here on hand-made boxes:
same class only, best IoU first, each box used once, nothing below the IoU bar.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "arm" / "emulated_compare.py"


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("emulated_compare", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def found(compare, rows):
    """rows: (x1, y1, x2, y2, score, class)."""
    rows = np.array(rows, np.float64).reshape(-1, 6)
    return compare.Found(rows[:, :4], rows[:, 4], rows[:, 5].astype(np.int64))


def test_boxes_pair_by_class_and_best_iou(compare):
    x86 = found(compare, [(0, 0, 10, 10, 0.9, 0), (100, 100, 120, 120, 0.8, 1), (50, 50, 60, 60, 0.7, 2)])
    arm = found(compare, [(101, 100, 121, 120, 0.82, 1),   # x86 #1, same class
                          (0, 0, 10, 10, 0.88, 3),          # on x86 #0 but another class: no pair
                          (0, 1, 10, 11, 0.91, 0),          # x86 #0
                          (50, 50, 56, 56, 0.7, 2)])        # IoU 0.36 with x86 #2: below the bar
    pairs, only_x86, only_arm = compare.match(x86, arm)
    assert sorted((i, j) for i, j, _ in pairs) == [(0, 2), (1, 0)]
    assert only_x86 == [2]
    assert only_arm == [1, 3]


def test_each_box_is_used_once_best_iou_first(compare):
    x86 = found(compare, [(0, 0, 10, 10, 0.9, 0), (1, 0, 11, 10, 0.8, 0)])
    arm = found(compare, [(1, 0, 11, 10, 0.85, 0)])  # IoU 1 with x86 #1, 0.82 with x86 #0
    pairs, only_x86, only_arm = compare.match(x86, arm)
    assert [(i, j) for i, j, _ in pairs] == [(1, 0)]
    assert only_x86 == [0] and only_arm == []


def test_board_totals(compare, capsys):
    same = found(compare, [(0, 0, 10, 10, 0.9, 0)])
    moved = found(compare, [(0.5, 0, 10.5, 10, 0.95, 0)])
    extra = found(compare, [(0, 0, 10, 10, 0.9, 0), (30, 30, 40, 40, 0.6, 4)])
    total = compare.compare_boards(["a", "b"], [same, same], [moved, extra], ["c0", "c1", "c2", "c3", "c4"],
                                   list_all=False)
    assert (total["x86"], total["arm"], total["matched"]) == (2, 3, 2)
    assert total["boards_identical"] == 1
    assert total["only_x86"] == [] and total["only_arm"] == ["b: c4 0.600 [30.0, 30.0, 40.0, 40.0]"]
    assert total["max_box_px"] == pytest.approx(0.5)
    assert total["max_score"] == pytest.approx(0.05)
    assert capsys.readouterr().out == ""
