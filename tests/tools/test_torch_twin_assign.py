"""The torch twin's task-aligned assignment (``tools/torch_twin/assign.py``) against ``inspector.models.assign``.

The assignment decides which points learn which box; a twin that assigned otherwise would train another loss. For
random predictions and boxes, including the ties of early training (candidates whose predicted boxes miss the GT:
alignment 0), boxes drawn twice (a point claimed by two boxes of equal IoU), padding and a batch without boxes,
the torch assignment on the CPU must be the numpy one: the same points, the same boxes, the same soft scores.
Runs in the interpreter of ``TORCH_TWIN_PYTHON`` (the numpy assignment needs no paddle).
"""
from __future__ import annotations

from twin_harness import run_torch_side, torch_python

TORCH_SIDE = r'''
import numpy as np
import torch

from inspector.models.assign import task_aligned_assign as numpy_assign
from inspector.models.head_layout import anchor_points
from tools.torch_twin.assign import task_aligned_assign as torch_assign

points, strides = anchor_points([(12, 12), (6, 6), (3, 3)], [8, 16, 32])
rng = np.random.default_rng(0)
cases = 0
for case in range(40):
    batch, boxes_per_image, classes = int(rng.integers(1, 5)), int(rng.integers(1, 9)), int(rng.integers(1, 7))
    scores = rng.random((batch, len(points), classes)).astype(np.float32)
    if case % 4 == 0:
        scores = np.round(scores, 1)  # equal scores: equal alignments among candidates
    centres = rng.random((batch, len(points), 2)) * 96
    sides = rng.random((batch, len(points), 2)) * (4 if case % 3 == 0 else 30)  # tiny boxes: most IoUs 0
    predicted = np.concatenate([centres - sides / 2, centres + sides / 2], -1).astype(np.float32)
    corner = rng.random((batch, boxes_per_image, 2)) * 80
    gt = np.concatenate([corner, corner + 3 + rng.random((batch, boxes_per_image, 2)) * 30], -1).astype(np.float32)
    gt_classes = rng.integers(0, classes, (batch, boxes_per_image))
    if boxes_per_image > 2:
        gt[:, 1] = gt[:, 0]  # the same box twice, maybe of another class
        gt_classes[:, -1] = -1  # padding
    if case == 7:
        gt_classes[:] = -1  # no box in the batch
    expected = numpy_assign(scores, predicted, points, strides, gt, gt_classes, topk=9)
    got = torch_assign(torch.as_tensor(scores), torch.as_tensor(predicted), points, strides, gt, gt_classes, topk=9)
    np.testing.assert_array_equal(got.gt_index, expected.gt_index, err_msg=f"case {case}")
    np.testing.assert_array_equal(got.boxes, expected.boxes, err_msg=f"case {case}")
    np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-6, atol=1e-7, err_msg=f"case {case}")
    assert got.gt_index.dtype == np.int64 and got.boxes.dtype == got.scores.dtype == np.float32
    cases += expected.positive.any()
assert cases >= 30, cases  # most cases assign something

try:
    torch_assign(torch.rand(1, len(points), 2), torch.rand(1, len(points), 4), points, strides,
                 np.float32([[[0, 0, 10, 10]]]), np.int64([[5]]))
except ValueError as error:
    assert "class id 5" in str(error), error
else:
    raise AssertionError("a class id beyond num_classes was accepted")
print("ok")
'''


def test_torch_assignment_is_the_numpy_one_ties_included():
    run_torch_side(torch_python(), ["-c", TORCH_SIDE])
