"""The synthetic board generator: deterministic, labels on real changes, DeepPCB layout on disk."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.data.structures import DEEPPCB_CLASSES
from inspector.data.synth import COPPER, MOUSEBITE, OPEN, PIN_HOLE, SHORT, SPUR, generate_pair, write_deeppcb

N_PAIRS = 40  # enough for every class to show up several times; about a second to generate


@pytest.fixture(scope="module")
def pairs():
    return [generate_pair(np.random.default_rng(seed)) for seed in range(N_PAIRS)]


def _copper(image: np.ndarray) -> np.ndarray:
    """DeepPCB polarity: copper is black."""
    return image[..., 0] < 128


def _components(mask: np.ndarray) -> int:
    return cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1


def test_same_seed_same_pair_other_seed_other_pair():
    a = generate_pair(np.random.default_rng(123))
    b = generate_pair(np.random.default_rng(123))
    c = generate_pair(np.random.default_rng(124))
    assert np.array_equal(a.template, b.template) and np.array_equal(a.tested, b.tested)
    assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.classes, b.classes)
    assert not np.array_equal(a.template, c.template)


def test_arrays_follow_the_contract(pairs):
    for pair in pairs:
        assert pair.template.shape == pair.tested.shape == (640, 640, 3)
        assert pair.template.dtype == pair.tested.dtype == np.uint8
        assert pair.boxes.dtype == np.float32 and pair.boxes.shape == (len(pair.classes), 4)
        assert pair.classes.dtype == np.int64
        assert 2 <= len(pair.classes) <= 8  # the default n_defects
        assert set(pair.classes.tolist()) <= set(range(len(DEEPPCB_CLASSES)))
        assert np.array_equal(pair.boxes, np.round(pair.boxes))  # whole pixels survive the text files
        assert np.all(pair.boxes[:, :2] >= 0) and np.all(pair.boxes[:, 2:] <= 640)
        # Boards are drawn, not blank: both copper and bare board are present.
        assert 0.02 < _copper(pair.template).mean() < 0.95


def test_every_box_sits_on_a_change_and_nothing_changes_outside_the_boxes(pairs):
    for pair in pairs:
        changed = _copper(pair.template) != _copper(pair.tested)
        labelled = np.zeros_like(changed)
        for x1, y1, x2, y2 in pair.boxes.astype(int):
            assert changed[y1:y2, x1:x2].sum() >= 8, "a box with (almost) no changed pixels in it"
            labelled[y1:y2, x1:x2] = True
        assert not np.any(changed & ~labelled), "changed pixels outside every box"
        # Pixel values are pure black or white: the images are binarised like DeepPCB's.
        assert set(np.unique(pair.tested).tolist()) <= {0, 255}


def test_each_defect_type_changes_the_board_the_way_its_name_says(pairs):
    """Opens cut copper apart, shorts join it, spurious copper is a new island, a pin-hole a new hole..."""
    for pair in pairs:
        template, tested = _copper(pair.template), _copper(pair.tested)
        for (x1, y1, x2, y2), class_id in zip(pair.boxes.astype(int), pair.classes):
            before, after = template[y1:y2, x1:x2], tested[y1:y2, x1:x2]
            removes_copper = class_id in (OPEN, MOUSEBITE, PIN_HOLE)
            if removes_copper:
                assert not np.any(after & ~before), f"{DEEPPCB_CLASSES[class_id]} added copper"
            else:
                assert not np.any(before & ~after), f"{DEEPPCB_CLASSES[class_id]} removed copper"
            copper_parts = _components(after) - _components(before)
            board_parts = _components(~after) - _components(~before)
            if class_id == OPEN:
                assert copper_parts > 0
            elif class_id == SHORT:
                assert copper_parts < 0
            elif class_id == COPPER:
                assert copper_parts == 1
            elif class_id == PIN_HOLE:
                assert copper_parts == 0 and board_parts == 1
            else:  # mousebite and spur change an edge without cutting or joining anything
                assert class_id in (MOUSEBITE, SPUR) and copper_parts == 0


def test_all_classes_appear_across_a_few_dozen_pairs(pairs):
    pairs_with_class = [sum(int(np.any(pair.classes == c)) for pair in pairs) for c in range(len(DEEPPCB_CLASSES))]
    assert min(pairs_with_class) >= 8, dict(zip(DEEPPCB_CLASSES, pairs_with_class))


def test_boxes_are_deeppcb_sized_and_apart(pairs):
    boxes = np.concatenate([pair.boxes for pair in pairs])
    sides = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)
    assert sides.min() >= 18 and sides.max() <= 80
    assert 24 <= np.median(sides.min(axis=1)) <= 40  # DeepPCB: shorter side 31 px median
    for pair in pairs:
        for i in range(len(pair.boxes)):
            for j in range(i + 1, len(pair.boxes)):
                a, b = pair.boxes[i], pair.boxes[j]
                overlap_w = min(a[2], b[2]) - max(a[0], b[0])
                overlap_h = min(a[3], b[3]) - max(a[1], b[1])
                assert overlap_w <= 0 or overlap_h <= 0, "two defect boxes overlap"


def test_defect_sizes_scale_with_the_image():
    pairs = [generate_pair(np.random.default_rng(seed), size=320) for seed in range(10)]
    boxes = np.concatenate([pair.boxes for pair in pairs])
    assert pairs[0].template.shape == (320, 320, 3)
    sides = np.concatenate([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]])
    assert sides.min() >= 9 and sides.max() <= 40


def test_defect_count_follows_the_requested_range():
    none = generate_pair(np.random.default_rng(5), n_defects=(0, 0))
    assert len(none.boxes) == 0 and np.array_equal(none.template, none.tested)
    assert len(generate_pair(np.random.default_rng(5), n_defects=(6, 6)).boxes) == 6


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="n_defects"):
        generate_pair(np.random.default_rng(0), n_defects=(5, 2))
    with pytest.raises(ValueError, match="size"):
        generate_pair(np.random.default_rng(0), size=64)
    with pytest.raises(ValueError, match="n must be"):
        write_deeppcb(tmp_path, n=0, seed=0)


def _read_list(path: Path) -> list[tuple[str, str]]:
    return [tuple(line.split()) for line in path.read_text().splitlines() if line.strip()]


def test_write_deeppcb_layout_round_trip(tmp_path):
    n, seed, size = 6, 11, 320
    root = write_deeppcb(tmp_path / "synth", n=n, seed=seed, size=size, test_fraction=0.5)
    trainval, test = _read_list(root / "trainval.txt"), _read_list(root / "test.txt")
    assert len(trainval) == len(test) == 3 and not set(trainval) & set(test)

    # write_deeppcb draws its pairs in order from one generator seeded with `seed`.
    rng = np.random.default_rng(seed)
    expected = [generate_pair(rng, size) for _ in range(n)]
    listed = sorted(trainval + test)
    assert len(listed) == n
    for (image_name, label_name), pair in zip(listed, expected):
        group, folder, image_file = image_name.split("/")
        stem = image_file[: -len(".jpg")]
        assert group == f"group{folder}" and stem.startswith(folder) and len(stem) == 8
        assert label_name == f"{group}/{folder}_not/{stem}.txt"

        tested = cv2.imread(str(root / group / folder / f"{stem}_test.jpg"))
        template = cv2.imread(str(root / group / folder / f"{stem}_temp.jpg"))
        assert tested.shape == template.shape == (size, size, 3)
        # JPEG keeps the binarised drawing: after thresholding, (nearly) every pixel is as drawn.
        assert np.mean(_copper(tested) != _copper(pair.tested)) < 1e-3
        assert np.mean(_copper(template) != _copper(pair.template)) < 1e-3

        lines = (root / label_name).read_text().splitlines()
        labels = np.array([[int(v) for v in line.split()] for line in lines]).reshape(-1, 5)
        assert np.array_equal(labels[:, :4], pair.boxes.astype(int))
        assert np.array_equal(labels[:, 4], pair.classes + 1)  # DeepPCB types are 1..6


def test_written_data_reads_back_with_load_dataset(tmp_path):
    from inspector.data.readers import load_dataset

    root = write_deeppcb(tmp_path, n=5, seed=3, size=320)
    dataset = load_dataset(root)
    assert dataset.format == "deeppcb" and len(dataset) == 5 and dataset.has_templates
    assert not [p for p in dataset.problems if p.severity == "error"], [str(p) for p in dataset.problems]
    written = sum(len((root / label).read_text().splitlines())
                  for name in ("trainval.txt", "test.txt") for _, label in _read_list(root / name))
    assert dataset.num_boxes == written > 0
    assert list(dataset.class_names) == list(DEEPPCB_CLASSES)
