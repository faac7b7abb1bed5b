"""Pre-processing (letterbox, to_input) and augmentation keep pixels and boxes consistent."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from inspector.data.transforms import (
    AugmentConfig,
    augment,
    gray_plane,
    letterbox,
    letterbox_boxes,
    letterbox_gray,
    random_crop,
    to_input,
    unletterbox_boxes,
)

# Saturated BGR colours, told apart by thresholding each channel at mid-grey even after
# brightness/contrast, noise and blur. Class id i is drawn in COLOURS[i] on the image and in
# COLOURS[i + 1] on the template, so a box paired with the wrong rectangle is caught.
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255), (255, 255, 255)]
# Every transform always on; photometric ranges mild enough that a fixed threshold still works.
ALL_ON = AugmentConfig(
    flip_horizontal=1,
    flip_vertical=1,
    rotate90=1,
    brightness_contrast=1,
    brightness_range=(-0.05, 0.05),
    contrast_range=(0.9, 1.1),
    noise=1,
    noise_sigma_range=(4.0, 8.0),
    blur=1,
    blur_sigma_range=(0.5, 0.9),
)


def draw_scene(height: int, width: int, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An image and a template, each with one solid rectangle per box on black."""
    image = np.zeros((height, width, 3), np.uint8)
    template = np.zeros((height, width, 3), np.uint8)
    for index, (x1, y1, x2, y2) in enumerate(boxes.astype(int)):
        image[y1:y2, x1:x2] = COLOURS[index]
        template[y1:y2, x1:x2] = COLOURS[index + 1]
    return image, template


def colour_bounds(image: np.ndarray, colour: tuple[int, int, int]) -> tuple[np.ndarray | None, int]:
    """Tight xyxy box around the pixels of ``colour`` (None when absent), and their count."""
    mask = np.all((image > 127) == (np.array(colour) > 127), axis=2)
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None, 0
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32), len(xs)


def scene_boxes() -> np.ndarray:
    # Non-overlapping, well apart, of different shapes (so a swapped width/height shows).
    return np.array([[10, 12, 40, 30], [70, 20, 90, 70], [120, 100, 200, 130], [20, 140, 50, 180]], np.float32)


# --------------------------------------------------------------------------- letterbox


@pytest.mark.parametrize("height, width", [(300, 500), (500, 300), (640, 640), (100, 150)])
def test_letterbox_keeps_aspect_and_maps_boxes(height: int, width: int) -> None:
    boxes = np.array([[20, 30, 80, 90], [width - 60, height - 50, width - 10, height - 5]], np.float32)
    image = np.zeros((height, width, 3), np.uint8)
    for x1, y1, x2, y2 in boxes.astype(int):
        image[y1:y2, x1:x2] = 255

    resized, scale, (pad_x, pad_y) = letterbox(image, 320)

    assert resized.shape == (320, 320, 3) and resized.dtype == np.uint8
    assert scale == pytest.approx(min(320 / width, 320 / height))
    # The content is centred and the rest is the zero border.
    content_w, content_h = round(width * scale), round(height * scale)
    assert (pad_x, pad_y) == ((320 - content_w) // 2, (320 - content_h) // 2)
    mapped = letterbox_boxes(boxes, scale, (pad_x, pad_y))
    for box in mapped:
        x1, y1, x2, y2 = np.round(box).astype(int)
        assert resized[y1 + 1 : y2 - 1, x1 + 1 : x2 - 1].min() > 200  # the rectangle is where its box says
    border = np.ones((320, 320), bool)
    border[pad_y : pad_y + content_h, pad_x : pad_x + content_w] = False
    assert resized[border].max(initial=0) == 0

    back = unletterbox_boxes(mapped, scale, (pad_x, pad_y), original_size=(width, height))
    np.testing.assert_allclose(back, boxes, atol=1e-3)


def test_unletterbox_clips_to_the_original_image() -> None:
    image = np.zeros((300, 500, 3), np.uint8)
    _, scale, pad = letterbox(image, 320)
    # A detection reaching into the top border and past the right edge.
    reaching_out = np.array([[300, 0, 330, 100]], np.float32)
    back = unletterbox_boxes(reaching_out, scale, pad, original_size=(500, 300))
    assert back[0, 1] == 0 and back[0, 2] == 500
    assert (back[:, [0, 2]] <= 500).all() and (back[:, [1, 3]] <= 300).all()


def test_letterbox_shrinking_keeps_one_pixel_traces() -> None:
    # A binarised scan has 1-2 px copper traces; shrinking 2x must not drop them (as nearest would).
    image = np.zeros((640, 640, 3), np.uint8)
    image[:, 301] = 255
    image[101] = 255
    resized, _, _ = letterbox(image, 320)
    assert resized[:, 150].min() >= 100
    assert resized[50].min() >= 100


def test_letterbox_accepts_grayscale() -> None:
    resized, scale, pad = letterbox(np.full((100, 200), 90, np.uint8), 100)
    assert resized.shape == (100, 100, 3) and scale == 0.5 and pad == (0, 25)
    assert resized[50, 50].tolist() == [90, 90, 90]


@pytest.mark.parametrize("height, width", [(320, 320), (640, 640), (300, 500), (700, 420)])
def test_the_grey_letterbox_is_the_grey_of_the_colour_letterbox(height: int, width: int) -> None:
    """The runtime fits grey layouts' frames as one plane; training fits BGR then greys: both must agree to the
    bit for the frames a grey model accepts, a grey camera's (H, W) frame and grey stored as BGR, resized or not.
    (A colour frame, which the runtime refuses, would differ by rounding: luma then resize is not resize then luma.)"""
    rng = np.random.default_rng(height)
    grey = ((rng.random((height, width)) > 0.5) * 255).astype(np.uint8)
    for frame in (grey, np.repeat(grey[..., None], 3, axis=2)):
        plane, scale, pad = letterbox_gray(frame, 320)
        expected, expected_scale, expected_pad = letterbox(frame, 320)
        assert plane.shape == (320, 320) and plane.dtype == np.uint8
        assert (scale, pad) == (expected_scale, expected_pad)
        np.testing.assert_array_equal(plane, gray_plane(expected))


# --------------------------------------------------------------------------- to_input


def test_to_input_is_rgb_chw_in_unit_range() -> None:
    image = np.zeros((4, 5, 3), np.uint8)
    image[:] = (10, 20, 30)  # BGR
    tensor = to_input(image)
    assert tensor.shape == (3, 4, 5) and tensor.dtype == np.float32 and tensor.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(tensor[:, 0, 0], np.array([30, 20, 10]) / 255, rtol=1e-6)


def test_to_input_stacks_image_then_template() -> None:
    image = np.zeros((4, 5, 3), np.uint8)
    image[:] = (10, 20, 30)
    template = np.zeros((4, 5, 3), np.uint8)
    template[:] = (200, 150, 100)
    tensor = to_input(image, template)
    assert tensor.shape == (6, 4, 5) and tensor.dtype == np.float32
    np.testing.assert_allclose(tensor[:, 2, 3], np.array([30, 20, 10, 100, 150, 200]) / 255, rtol=1e-6)
    with pytest.raises(ValueError, match="template shape"):
        to_input(image, template[:3])


def test_to_input_matches_the_plain_definition_pixel_for_pixel() -> None:
    """Every pixel in place (not only uniform colours): a non-square image, and strided views as a crop gives."""
    rng = np.random.default_rng(0)
    board = rng.integers(0, 256, (9, 14, 3), dtype=np.uint8)
    image, template = board[1:8, 2:13], board[::-1][1:8, 1:12]  # non-contiguous views, 7 x 11
    expected = np.concatenate([image[:, :, ::-1].transpose(2, 0, 1), template[:, :, ::-1].transpose(2, 0, 1)]) / 255
    tensor = to_input(image, template)
    assert tensor.shape == (6, 7, 11) and tensor.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(tensor, expected, rtol=1e-6)
    np.testing.assert_allclose(to_input(image), expected[:3], rtol=1e-6)


# --------------------------------------------------------------------------- augmentation


def assert_boxes_bound_their_rectangles(
    image: np.ndarray, template: np.ndarray, boxes: np.ndarray, classes: np.ndarray, tolerance: float = 1.0
) -> None:
    for box, class_id in zip(boxes, classes):
        for picture, colour in ((image, COLOURS[class_id]), (template, COLOURS[class_id + 1])):
            bounds, _ = colour_bounds(picture, colour)
            assert bounds is not None, f"class {class_id}: its rectangle vanished"
            np.testing.assert_allclose(bounds, box, atol=tolerance, err_msg=f"class {class_id}")


@pytest.mark.parametrize("seed", range(12))
def test_augment_keeps_boxes_on_their_pixels_in_image_and_template(seed: int) -> None:
    boxes = scene_boxes()
    classes = np.arange(len(boxes))
    image, template = draw_scene(192, 256, boxes)  # not square: catches width/height mix-ups
    before = (image.copy(), template.copy(), boxes.copy())

    out_image, out_template, out_boxes, out_classes = augment(
        image, template, boxes, classes, np.random.default_rng(seed), ALL_ON
    )

    assert out_boxes.dtype == np.float32 and out_classes.dtype == np.int64
    assert out_image.shape == out_template.shape and out_image.dtype == np.uint8
    assert sorted(out_classes.tolist()) == classes.tolist()
    assert_boxes_bound_their_rectangles(out_image, out_template, out_boxes, out_classes)
    # The inputs are left alone (the loader caches them across epochs).
    for original, now in zip(before, (image, template, boxes)):
        np.testing.assert_array_equal(original, now)


def test_augment_covers_every_orientation() -> None:
    boxes = scene_boxes()
    image, template = draw_scene(192, 256, boxes)
    geometric_only = AugmentConfig(brightness_contrast=0, noise=0, blur=0)
    outcomes = set()
    for seed in range(80):
        _, _, out_boxes, _ = augment(image, template, boxes, np.arange(4), np.random.default_rng(seed), geometric_only)
        outcomes.add(tuple(out_boxes[0].astype(int)))
    assert len(outcomes) == 8  # the dihedral group of the rectangle: 4 rotations x optional mirror


def test_augment_lights_image_and_template_alike_but_noises_them_apart() -> None:
    board = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    no_boxes, no_classes = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    lighting = dataclasses.replace(AugmentConfig.off(), brightness_contrast=1.0)
    image, template, _, _ = augment(board, board.copy(), no_boxes, no_classes, np.random.default_rng(0), lighting)
    assert not np.array_equal(image, board)
    np.testing.assert_array_equal(image, template)

    noise = dataclasses.replace(AugmentConfig.off(), noise=1.0)
    image, template, _, _ = augment(board, board.copy(), no_boxes, no_classes, np.random.default_rng(0), noise)
    assert not np.array_equal(image, template)


def test_augment_off_changes_nothing() -> None:
    boxes = scene_boxes()
    image, template = draw_scene(192, 256, boxes)
    out_image, out_template, out_boxes, _ = augment(
        image, template, boxes, np.arange(4), np.random.default_rng(0), AugmentConfig.off()
    )
    np.testing.assert_array_equal(out_image, image)
    np.testing.assert_array_equal(out_template, template)
    np.testing.assert_array_equal(out_boxes, boxes)


# --------------------------------------------------------------------------- random crop


@pytest.mark.parametrize("seed", range(12))
def test_random_crop_clips_and_drops_boxes_by_visible_area(seed: int) -> None:
    boxes = scene_boxes()
    classes = np.arange(len(boxes))
    image, template = draw_scene(192, 256, boxes)

    crop, crop_template, crop_boxes, crop_classes = random_crop(
        image, template, boxes, classes, 96, np.random.default_rng(seed)
    )

    assert crop.shape == crop_template.shape == (96, 96, 3)
    assert ((crop_boxes >= 0) & (crop_boxes <= 96)).all()
    assert len(crop_classes) >= 1  # anchored on a defect: never an empty crop when all boxes fit
    # Kept boxes are the clipped rectangles exactly (no photometric change here).
    assert_boxes_bound_their_rectangles(crop, crop_template, crop_boxes, crop_classes, tolerance=0)
    for class_id in range(len(boxes)):
        _, visible = colour_bounds(crop, COLOURS[class_id])
        x1, y1, x2, y2 = boxes[class_id]
        fraction = visible / ((x2 - x1) * (y2 - y1))
        assert (class_id in crop_classes) == (fraction >= 0.4), f"class {class_id}: {fraction:.2f} visible"


def test_random_crop_finds_a_lone_defect_in_a_corner() -> None:
    boxes = np.array([[2, 3, 30, 25]], np.float32)
    image, _ = draw_scene(320, 320, boxes)
    offsets = set()
    for seed in range(30):
        rng = np.random.default_rng(seed)
        crop, _, crop_boxes, crop_classes = random_crop(image, None, boxes, np.arange(1), 128, rng)
        assert crop_classes.tolist() == [0]
        offsets.add(tuple((boxes[0] - crop_boxes[0]).astype(int)))
    assert len(offsets) > 1  # but the window still moves


def test_random_crop_of_a_board_without_defects() -> None:
    image = np.random.default_rng(0).integers(0, 256, (100, 120, 3), dtype=np.uint8)
    crop, template, crop_boxes, crop_classes = random_crop(
        image, None, np.zeros((0, 4)), np.zeros(0), 64, np.random.default_rng(0)
    )
    assert crop.shape == (64, 64, 3) and template is None
    assert crop_boxes.shape == (0, 4) and crop_classes.shape == (0,)
    with pytest.raises(ValueError, match="larger than"):
        random_crop(image, None, np.zeros((0, 4)), np.zeros(0), 101, np.random.default_rng(0))


@pytest.mark.parametrize("seed", range(6))
def test_crop_then_augment_keeps_boxes_on_their_pixels(seed: int) -> None:
    # The loader's train path: crop from the letterboxed image, then augment everything.
    boxes = scene_boxes()
    image, template = draw_scene(192, 256, boxes)
    rng = np.random.default_rng(seed)
    crop, crop_template, crop_boxes, crop_classes = random_crop(image, template, boxes, np.arange(4), 128, rng)
    out_image, out_template, out_boxes, out_classes = augment(
        crop, crop_template, crop_boxes, crop_classes, rng, ALL_ON
    )
    assert_boxes_bound_their_rectangles(out_image, out_template, out_boxes, out_classes)
