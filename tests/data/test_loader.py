"""BatchLoader: batch layout, order, reproducibility, cropping, caching, errors, shutdown."""
from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.data.loader import Batch, BatchLoader
from inspector.data.structures import DataError, Dataset, Sample
from inspector.data.transforms import AugmentConfig, letterbox, letterbox_boxes, to_input

# Image rectangles are drawn in COLOURS[class], template rectangles in COLOURS[class + 1].
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255), (255, 255, 255)]
# (height, width, boxes) per sample: mixed sizes and box counts, one board without defects.
BOARDS = [
    (160, 200, [[10, 10, 50, 40], [120, 90, 180, 150]]),
    (256, 256, [[30, 40, 70, 100]]),
    (200, 160, [[5, 100, 60, 140], [90, 10, 150, 50], [20, 20, 40, 60]]),
    (128, 128, []),
    (240, 320, [[200, 30, 300, 90], [40, 150, 120, 220]]),
    (256, 256, [[100, 100, 160, 130]]),
]


def make_dataset(root: Path, with_templates: bool = True) -> Dataset:
    """Boards written as PNG (lossless, so pixels can be checked exactly), with solid defect rectangles."""
    root.mkdir(parents=True, exist_ok=True)
    samples = []
    for index, (height, width, boxes) in enumerate(BOARDS):
        image = np.zeros((height, width, 3), np.uint8)
        template = np.zeros((height, width, 3), np.uint8)
        for class_id, (x1, y1, x2, y2) in enumerate(boxes):
            image[y1:y2, x1:x2] = COLOURS[class_id]
            template[y1:y2, x1:x2] = COLOURS[class_id + 1]
        image_path, template_path = root / f"board{index}_test.png", root / f"board{index}_temp.png"
        cv2.imwrite(str(image_path), image)
        cv2.imwrite(str(template_path), template)
        samples.append(
            Sample(
                image_path,
                np.array(boxes, np.float32).reshape(-1, 4),
                np.arange(len(boxes)),
                template_path if with_templates else None,
                source=f"board{index}.txt",
            )
        )
    return Dataset(samples, ["open", "short", "mousebite"], root, "deeppcb")


def batch_pixels(batch: Batch, row: int, channels: slice) -> np.ndarray:
    """One batch image back to BGR uint8 HWC, for pixel checks."""
    rgb = batch.images[row, channels].transpose(1, 2, 0)
    return np.rint(rgb[:, :, ::-1] * 255).astype(np.uint8)


def colour_bounds(image: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray | None:
    mask = np.all((image > 127) == (np.array(colour) > 127), axis=2)
    ys, xs = np.nonzero(mask)
    return None if len(xs) == 0 else np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def assert_same_batches(first: list[Batch], second: list[Batch]) -> None:
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert a.keys == b.keys
        for name in ("images", "boxes", "classes", "scales", "pads"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def no_loader_threads() -> bool:
    return not any(t.name.startswith("batch-loader") for t in threading.enumerate())


# --------------------------------------------------------------------------- eval mode


@pytest.mark.parametrize("input_mode, channels", [("image", 3), ("image+template", 6)])
def test_eval_batches_layout_and_order(tmp_path: Path, input_mode: str, channels: int) -> None:
    dataset = make_dataset(tmp_path)
    loader = BatchLoader(dataset, batch_size=4, input_size=96, input_mode=input_mode, train=False)
    batches = list(loader)

    assert len(loader) == len(batches) == 2
    assert [len(b) for b in batches] == [4, 2]  # eval keeps the partial last batch
    assert [k for b in batches for k in b.keys] == [s.key for s in dataset.samples]

    first = batches[0]
    most_boxes = 3  # board 2 has the most boxes of the first four
    assert first.images.shape == (4, channels, 96, 96) and first.images.dtype == np.float32
    assert first.boxes.shape == (4, most_boxes, 4) and first.boxes.dtype == np.float32
    assert first.classes.shape == (4, most_boxes) and first.classes.dtype == np.int64
    assert first.scales.shape == (4,) and first.scales.dtype == np.float32
    assert first.pads.shape == (4, 2) and first.pads.dtype == np.float32

    for batch in batches:
        for row, key in enumerate(batch.keys):
            sample = next(s for s in dataset.samples if s.key == key)
            expected_image, scale, pad = letterbox(cv2.imread(str(sample.image_path)), 96)
            count = len(sample)
            # Eval images are exactly the shared pre-processing (what the runtime will see).
            expected_template = (
                letterbox(cv2.imread(str(sample.template_path)), 96)[0] if input_mode == "image+template" else None
            )
            np.testing.assert_array_equal(batch.images[row], to_input(expected_image, expected_template))
            np.testing.assert_allclose(batch.boxes[row, :count], letterbox_boxes(sample.boxes, scale, pad), atol=1e-5)
            assert (batch.boxes[row, count:] == 0).all()
            assert batch.classes[row, :count].tolist() == sample.classes.tolist()
            assert (batch.classes[row, count:] == -1).all()
            assert batch.scales[row] == pytest.approx(scale)
            assert batch.pads[row].tolist() == list(pad)


def test_eval_batch_without_any_defect_still_has_a_box_slot(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path)
    empty_board = Dataset([dataset.samples[3]], dataset.class_names, dataset.root, dataset.format)
    (batch,) = list(BatchLoader(empty_board, batch_size=2, input_size=64, workers=0))
    assert batch.boxes.shape == (1, 1, 4) and batch.classes.tolist() == [[-1]]


def test_eval_ignores_augment_and_crop(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path)
    plain = list(BatchLoader(dataset, 3, 96, workers=0))
    augmenting = AugmentConfig(noise=1, flip_horizontal=1)
    asked = list(BatchLoader(dataset, 3, 96, crop_size=48, augment=augmenting, workers=0))
    assert_same_batches(plain, asked)


# --------------------------------------------------------------------------- train mode


def test_train_drops_the_partial_batch_and_shuffles_per_epoch(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path)
    loader = BatchLoader(dataset, batch_size=4, input_size=64, train=True, seed=1)
    assert len(loader) == 1

    orders = []
    for epoch in range(4):
        assert loader.epoch == epoch  # a complete pass advances the epoch
        batches = list(loader)
        assert len(batches) == 1 and len(batches[0]) == 4
        orders.append(tuple(batches[0].keys))
    assert len(set(orders)) > 1


def test_train_epoch_is_reproducible_for_resume(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path)

    def epoch_batches(workers: int, cache: bool, warm_up: bool) -> list[Batch]:
        loader = BatchLoader(dataset, 2, 96, "image+template", train=True, seed=7, workers=workers, cache=cache)
        if warm_up:
            list(loader)  # a previous epoch ran in this process
        loader.set_epoch(3)
        return list(loader)

    reference = epoch_batches(workers=2, cache=True, warm_up=True)
    # A resumed run (fresh process, no cache, other thread count) sees exactly the same epoch.
    assert_same_batches(reference, epoch_batches(workers=0, cache=False, warm_up=False))

    loader = BatchLoader(dataset, 2, 96, "image+template", train=True, seed=7)
    loader.set_epoch(4)
    assert [b.keys for b in list(loader)] != [b.keys for b in reference]


def test_train_crops_keep_boxes_on_their_pixels(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path)
    geometric = AugmentConfig(brightness_contrast=0, noise=0, blur=0)  # flips and turns at their defaults
    loader = BatchLoader(
        dataset, 3, 128, "image+template", train=True, seed=2, crop_size=64, augment=geometric, workers=2
    )
    assert loader.output_size == 64
    checked = 0
    for epoch in range(4):
        loader.set_epoch(epoch)
        for batch in loader:
            assert batch.images.shape == (3, 6, 64, 64)
            for row in range(len(batch)):
                valid = batch.classes[row] >= 0
                assert ((batch.boxes[row][valid] >= 0) & (batch.boxes[row][valid] <= 64)).all()
                image, template = batch_pixels(batch, row, slice(0, 3)), batch_pixels(batch, row, slice(3, 6))
                for box, class_id in zip(batch.boxes[row][valid], batch.classes[row][valid]):
                    # Letterbox resampling blurs rectangle edges by up to a pixel.
                    np.testing.assert_allclose(colour_bounds(image, COLOURS[class_id]), box, atol=1.5)
                    np.testing.assert_allclose(colour_bounds(template, COLOURS[class_id + 1]), box, atol=1.5)
                    checked += 1
    assert checked >= 10


def test_training_set_smaller_than_a_batch_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fewer than one batch"):
        BatchLoader(make_dataset(tmp_path), batch_size=8, input_size=64, train=True)


# --------------------------------------------------------------------------- cache, errors, shutdown


def test_cache_decodes_each_image_once(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path)
    cached = BatchLoader(dataset, 3, 64, "image+template")
    uncached = BatchLoader(dataset, 3, 64, "image+template", cache=False)
    first = list(cached)
    list(uncached)
    for sample in dataset.samples:
        sample.image_path.unlink()
        sample.template_path.unlink()

    assert_same_batches(first, list(cached))  # served from memory
    with pytest.raises(DataError, match="image file not found"):
        list(uncached)


def test_unreadable_image_raises_naming_the_file(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path)
    broken = dataset.samples[4].image_path
    broken.write_bytes(b"not a png at all")
    with pytest.raises(DataError) as error:
        list(BatchLoader(dataset, 2, 64))
    assert str(broken) in str(error.value)
    assert no_loader_threads()


def test_template_mode_needs_templates(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="board0.txt: no template image"):
        BatchLoader(make_dataset(tmp_path, with_templates=False), 2, 64, "image+template")


def test_misaligned_template_size_is_an_error(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path)
    cv2.imwrite(str(dataset.samples[0].template_path), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(DataError, match="must be aligned") as error:
        list(BatchLoader(dataset, 2, 64, "image+template"))
    assert str(dataset.samples[0].template_path) in str(error.value)


def test_abandoned_iteration_shuts_the_threads_down(tmp_path: Path) -> None:
    loader = BatchLoader(make_dataset(tmp_path), 1, 64, workers=2)
    for _ in loader:
        break
    assert no_loader_threads()
    assert loader.epoch == 0  # an unfinished pass does not count as an epoch


def test_bad_arguments(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path)
    with pytest.raises(ValueError, match="input_mode"):
        BatchLoader(dataset, 2, 64, "template")
    with pytest.raises(ValueError, match="crop_size"):
        BatchLoader(dataset, 2, 64, train=True, crop_size=96)
