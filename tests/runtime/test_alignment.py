"""Golden-template alignment: recovers a known motion of a synthetic board, refuses what does not match."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from inspector.data.synth import generate_pair
from inspector.runtime.alignment import AlignmentError, align_to_template

SIZE = 320


def moved(image: np.ndarray, angle_deg: float, shift: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """``image`` turned by ``angle_deg`` about its centre and shifted, as a camera would see it; and the
    2x3 map from the original's pixels to the frame's."""
    matrix = cv2.getRotationMatrix2D((SIZE / 2, SIZE / 2), angle_deg, 1.0)
    matrix[:, 2] += shift
    frame = cv2.warpAffine(image, matrix, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderValue=(255, 255, 255))
    return frame, matrix


@pytest.mark.parametrize("seed, angle, shift", [(0, 2.0, (6.5, -4.25)), (1, -1.2, (-3.0, 5.5)), (2, 0.0, (9.0, 2.0))])
def test_recovers_a_known_shift_and_rotation(seed, angle, shift):
    pair = generate_pair(np.random.default_rng(seed), size=SIZE)
    frame, truth = moved(pair.tested, angle, shift)  # the defective board, moved; the template stays put

    result = align_to_template(frame, pair.template)

    assert abs(result.rotation_deg - angle) < 0.2, (result.rotation_deg, angle)
    corners = np.array([[0, 0, 1], [SIZE, 0, 1], [0, SIZE, 1], [SIZE, SIZE, 1]], np.float64)
    corner_error = np.abs(corners @ result.template_to_frame.T - corners @ truth.T).max()
    assert corner_error < 1.0, corner_error
    assert result.correlation > 0.9 and result.overlap > 0.9
    # Back on the template's grid, the frame is the tested board again (defects and all).
    inner = (slice(20, SIZE - 20), slice(20, SIZE - 20))
    difference = np.abs(result.aligned[inner].astype(int) - pair.tested[inner].astype(int))
    assert difference.mean() < 6, difference.mean()


def test_boxes_go_back_to_where_the_defects_are_in_the_frame():
    pair = generate_pair(np.random.default_rng(4), size=SIZE)
    frame, _ = moved(pair.tested, 0.0, (7.0, -3.0))
    result = align_to_template(frame, pair.template, motion="translation")
    np.testing.assert_allclose(result.boxes_to_frame(pair.boxes), pair.boxes + [7, -3, 7, -3], atol=0.3)


def test_refuses_an_unrelated_board():
    template = generate_pair(np.random.default_rng(5), size=SIZE).template
    other = generate_pair(np.random.default_rng(6), size=SIZE).tested
    with pytest.raises(AlignmentError, match="wrong board"):
        align_to_template(other, template)


def test_refuses_an_empty_frame():
    template = generate_pair(np.random.default_rng(7), size=SIZE).template
    with pytest.raises(AlignmentError):
        align_to_template(np.full_like(template, 255), template)


def test_refuses_a_frame_that_shows_too_little_of_the_board():
    pair = generate_pair(np.random.default_rng(8), size=SIZE)
    frame, _ = moved(pair.tested, 0.0, (60.0, 0.0))  # a fifth of the board slid out of view
    with pytest.raises(AlignmentError, match="covers only") as caught:
        align_to_template(frame, pair.template)
    assert 0.7 < caught.value.overlap < 0.9
