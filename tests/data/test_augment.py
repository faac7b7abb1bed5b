"""Pair augmentation: exact dihedral transforms, defect copy-paste, aug-off epochs, and their switches."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from inspector.data import load_dataset
from inspector.data.augment import (
    DIHEDRAL_NAMES,
    CopyPaste,
    DefectDonors,
    PairAugmentConfig,
    dihedral,
    dihedral_array,
    dihedral_boxes,
    find_place,
    _integral,
)
from inspector.data.layouts import INPUT_MODES, input_layout
from inspector.data.loader import BatchLoader
from inspector.data.synth import write_deeppcb
from inspector.training.config import TrainConfig

SAMPLE = Path(__file__).resolve().parents[2] / "inspector" / "assets" / "deeppcb_sample"


# --------------------------------------------------------------------------- dihedral


def test_the_eight_transforms_are_distinct_and_include_identity():
    image = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    results = [dihedral_array(image, element) for element in range(8)]
    assert np.array_equal(results[0], image)
    assert len({r.tobytes() for r in results}) == 8
    assert len(DIHEDRAL_NAMES) == 8
    # A non-square image: quarter turns and transposes swap the sides, the rest keep them.
    tall = image[:, :15]
    assert [dihedral_array(tall, e).shape[:2] for e in range(8)] == [(24, 15), (15, 24), (24, 15), (15, 24),
                                                                    (15, 24), (24, 15), (15, 24), (24, 15)]
    with pytest.raises(ValueError, match="0..7"):
        dihedral_array(image, 8)


@pytest.mark.parametrize("element", range(8))
def test_each_transform_moves_a_box_with_its_pixels(element):
    height, width = 30, 44  # not square, so a wrong width/height swap shows
    image = np.zeros((height, width, 3), np.uint8)
    boxes = np.array([[3, 5, 11, 9], [20, 12, 43, 30]], np.float32)
    rng = np.random.default_rng(element)
    patches = []
    for value, (x1, y1, x2, y2) in zip((200, 100), boxes.astype(int)):
        patch = rng.integers(1, 60, (y2 - y1, x2 - x1, 3), dtype=np.uint8) + np.uint8(value - 60)
        image[y1:y2, x1:x2] = patch
        patches.append(patch)
    moved, _, moved_boxes = dihedral(image, None, boxes, element)
    for value, patch, box in zip((200, 100), patches, moved_boxes):
        x1, y1, x2, y2 = box.astype(int)
        assert np.allclose(box, [x1, y1, x2, y2])  # integer boxes stay integer: no interpolation anywhere
        # The pixels under the moved box are the box's pixels, transformed; nothing of that box is outside it.
        assert np.array_equal(moved[y1:y2, x1:x2], dihedral_array(patch, element))
        inside = np.zeros(moved.shape[:2], bool)
        inside[y1:y2, x1:x2] = True
        assert not np.any((moved[:, :, 0] >= value - 59) & (moved[:, :, 0] < value) & ~inside)


def test_the_pair_stays_registered_under_every_transform():
    rng = np.random.default_rng(3)
    template = (rng.random((40, 56)) > 0.5).astype(np.uint8)[:, :, None].repeat(3, axis=2) * 255
    test = template.copy()
    boxes = np.array([[4, 6, 12, 14], [30, 20, 41, 33]], np.float32)
    for x1, y1, x2, y2 in boxes.astype(int):
        test[y1:y2, x1:x2] = 255 - test[y1:y2, x1:x2]
    for element in range(8):
        moved_test, moved_template, moved_boxes = dihedral(test, template, boxes, element)
        outside = np.ones(moved_test.shape[:2], bool)
        for x1, y1, x2, y2 in moved_boxes.astype(int):
            outside[y1:y2, x1:x2] = False
            assert np.all(moved_test[y1:y2, x1:x2] != moved_template[y1:y2, x1:x2])
        assert np.array_equal(moved_test[outside], moved_template[outside])


def test_dihedral_boxes_round_trip_through_the_inverse():
    boxes = np.array([[1.5, 2.0, 7.25, 9.0]], np.float32)
    inverse = {0: 0, 1: 3, 2: 2, 3: 1, 4: 4, 5: 5, 6: 6, 7: 7}  # turns invert; flips and transposes are involutions
    for element in range(8):
        moved = dihedral_boxes(boxes, element, 20, 12)
        side = (12, 20) if element in (1, 3, 4, 6) else (20, 12)
        assert np.allclose(dihedral_boxes(moved, inverse[element], *side), boxes)


# --------------------------------------------------------------------------- copy-paste on synthetic boards

SIDE = 96
TRACE_ROWS = (10, 34, 58, 82)  # 6 px copper traces; boards differ by a vertical offset of the pattern


def board(offset: int, defects: list[tuple[str, int, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A binarised pair: horizontal traces (and a pad, so places are not all alike) plus defects.

    Defects: ("open", x, trace index) cuts a 4 px gap in a trace; ("copper", x, y) drops a 5x5 blob on
    bare laminate. Boxes are the defect plus 2 px.
    """
    template = np.zeros((SIDE, SIDE), np.uint8)
    for row in TRACE_ROWS:
        template[row + offset : row + offset + 6, :] = 255
    template[40 + offset : 52 + offset, 70:86] = 255
    test = template.copy()
    boxes, classes = [], []
    for kind, x, where in defects:
        if kind == "open":
            y = TRACE_ROWS[where] + offset
            test[y : y + 6, x : x + 4] = 0
            boxes.append([x - 2, y - 2, x + 6, y + 8])
            classes.append(0)
        else:
            test[where : where + 5, x : x + 5] = 255
            boxes.append([x - 2, where - 2, x + 7, where + 7])
            classes.append(4)
    as_bgr = lambda plane: np.ascontiguousarray(plane[:, :, None].repeat(3, axis=2))  # noqa: E731
    return as_bgr(test), as_bgr(template), np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int64)


DONORS = [board(2, [("open", 30, 1), ("copper", 60, 20)]), board(5, [("open", 12, 2)])]
EXACT = dict(copy_paste=1.0, copy_paste_count=3, copy_paste_max_mismatch=1e-4, copy_paste_searches=12)


def paster(**overrides) -> CopyPaste:
    cfg = PairAugmentConfig(**{**EXACT, **overrides})
    return CopyPaste(DefectDonors([d[3] for d in DONORS], cfg.copy_paste_balance), lambda i, scale: DONORS[i], cfg)


def changed_regions(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return np.any(before != after, axis=2)


def test_paste_lands_where_the_pair_agreed_on_a_matching_template_and_is_boxed():
    test, template, boxes, classes = board(0, [("open", 50, 0), ("copper", 10, 45)])
    pasted = 0
    for seed in range(6):
        image, new_boxes, new_classes = paster()(test, template, boxes, classes, np.random.default_rng(seed))
        assert np.array_equal(new_boxes[: len(boxes)], boxes) and np.array_equal(new_classes[: len(classes)], classes)
        added, added_classes = new_boxes[len(boxes):], new_classes[len(boxes):]
        pasted += len(added)
        covered = np.zeros(test.shape[:2], bool)
        for box, class_id in zip(added, added_classes):
            x1, y1, x2, y2 = box.astype(int)
            covered[y1:y2, x1:x2] = True
            # Before the paste the pair agreed there; afterwards test and template differ inside the box exactly
            # as in a donor's defect of that class (the destination template matched the donor's).
            assert np.array_equal(test[y1:y2, x1:x2], template[y1:y2, x1:x2])
            difference = np.any(image[y1:y2, x1:x2] != template[y1:y2, x1:x2], axis=2)
            donor_differences = [dihedral_array(np.any(d_test[b1:b2, a1:a2] != d_tmpl[b1:b2, a1:a2], axis=2)
                                                .astype(np.uint8), e)
                                 for d_test, d_tmpl, d_boxes, d_classes in DONORS
                                 for (a1, b1, a2, b2), c in zip(d_boxes.astype(int), d_classes) if c == class_id
                                 for e in range(8)]
            assert any(np.array_equal(difference.astype(np.uint8), d) for d in donor_differences)
            assert difference.any()
        # Every pixel the paste changed in the test image is inside a new box; nothing else moved.
        assert not np.any(changed_regions(test, image) & ~covered)
        # Pastes never overlap the existing boxes or each other.
        everything = new_boxes
        for i in range(len(everything)):
            for j in range(i + 1, len(everything)):
                a, b = everything[i], everything[j]
                assert min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1]), (a, b)
    assert pasted >= 6  # the search does find places: not a test that passes by never pasting


def test_the_template_is_never_changed_and_inputs_are_not_modified():
    test, template, boxes, classes = board(0, [("open", 50, 0)])
    copies = [a.copy() for a in (test, template, boxes, classes)]
    cfg = PairAugmentConfig(**EXACT)
    from inspector.data.augment import PairAugmenter

    augmenter = PairAugmenter(cfg, DefectDonors([d[3] for d in DONORS]), lambda i, scale: DONORS[i])
    image, out_template, out_boxes, _ = augmenter.paste(test, template, boxes, classes, np.random.default_rng(1))
    assert out_template is template and len(out_boxes) > len(boxes)
    for original, copy in zip((test, template, boxes, classes), copies):
        assert np.array_equal(original, copy)


def test_copy_paste_is_deterministic_for_a_seed():
    test, template, boxes, classes = board(0, [("open", 50, 0)])
    runs = [paster()(test, template, boxes, classes, np.random.default_rng(7)) for _ in range(2)]
    assert all(np.array_equal(a, b) for a, b in zip(*runs))
    others = [paster()(test, template, boxes, classes, np.random.default_rng(seed))[1] for seed in range(8, 12)]
    assert any(not np.array_equal(runs[0][1], other) for other in others)


def test_paste_is_skipped_where_no_place_matches():
    test, template, boxes, classes = board(0, [])
    # A blank board: no trace for an open to sit on; only the copper blob may land (bare laminate matches).
    blank = np.zeros_like(template)
    _, new_boxes, new_classes = paster(copy_paste_count=4)(blank, blank, boxes, classes, np.random.default_rng(0))
    assert set(new_classes.tolist()) <= {4}
    # Test and template disagree everywhere (say, a misregistered pair): nowhere is defect-free, nothing pasted.
    image, new_boxes, _ = paster()(255 - template, template, boxes, classes, np.random.default_rng(0))
    assert len(new_boxes) == 0 and np.array_equal(image, 255 - template)
    # Every place is already boxed, or outside the allowed region: nothing pasted either.
    full = np.array([[0, 0, SIDE, SIDE]], np.float32)
    image, new_boxes, _ = paster()(test, template, full, np.array([1]), np.random.default_rng(0))
    assert len(new_boxes) == 1 and np.array_equal(image, test)
    image, new_boxes, _ = paster()(test, template, boxes, classes, np.random.default_rng(0), region=(0, 0, 8, 8))
    assert len(new_boxes) == 0 and image is test


def test_a_donor_patch_carrying_another_defect_is_not_used():
    crowded = board(0, [("open", 40, 1), ("open", 47, 1)])  # neighbouring boxes: each patch holds part of the other
    donors = DefectDonors([crowded[3]])
    cfg = PairAugmentConfig(**EXACT)
    test, template, boxes, classes = board(3, [])
    _, new_boxes, _ = CopyPaste(donors, lambda i, scale: crowded, cfg)(test, template, boxes, classes,
                                                                         np.random.default_rng(0))
    assert len(new_boxes) == 0


def test_a_board_is_not_its_own_donor_and_unusable_donors_are_skipped():
    test, template, boxes, classes = DONORS[0]
    cp = CopyPaste(DefectDonors([DONORS[0][3]]), lambda i, scale: DONORS[i], PairAugmentConfig(**EXACT))
    assert len(cp(test, template, boxes, classes, np.random.default_rng(0), exclude=0)[1]) == len(boxes)
    refusing = CopyPaste(DefectDonors([d[3] for d in DONORS]), lambda i, scale: None, PairAugmentConfig(**EXACT))
    assert len(refusing(*board(0, []), np.random.default_rng(0))[1]) == 0


def test_coarse_to_fine_search_finds_the_same_unique_place_as_the_exact_one():
    rng = np.random.default_rng(5)
    # A board with one place that matches (random texture), searched both ways.
    gray = (rng.random((128, 160)) > 0.5).astype(np.float32) * 255
    gray = cv2.GaussianBlur(gray, (3, 3), 0.8)
    patch = gray[37:37 + 22, 91:91 + 26].copy()
    free = np.zeros(gray.shape, np.uint8)
    sums = _integral(free)
    half = cv2.resize(gray, (80, 64), interpolation=cv2.INTER_AREA)
    exact = find_place(gray, sums, sums, patch, np.random.default_rng(0), 1e-4, 0.0)
    coarse = find_place(gray, sums, sums, patch, np.random.default_rng(0), 1e-4, 0.0, template_half=half)
    assert exact == coarse == (91, 37)
    blocked = free.copy()
    blocked[40:45, 100:105] = 1  # the only match is now blocked
    blocked_sums = _integral(blocked)
    assert find_place(gray, blocked_sums, sums, patch, np.random.default_rng(0), 1e-4, 0.0) is None
    assert find_place(gray, blocked_sums, sums, patch, np.random.default_rng(0), 1e-4, 0.0, template_half=half) is None


def test_balanced_donors_favour_rare_classes():
    donors = DefectDonors([np.zeros(99, np.int64), np.ones(1, np.int64)], balance=False)
    balanced = DefectDonors([np.zeros(99, np.int64), np.ones(1, np.int64)], balance=True)
    rng = np.random.default_rng(0)
    by_frequency = np.mean([donors.draw_class(rng) for _ in range(2000)])
    uniform = np.mean([balanced.draw_class(rng) for _ in range(2000)])
    assert by_frequency < 0.03 and 0.45 < uniform < 0.55
    assert balanced.draw(rng, 1) == (1, 0)


def test_config_refuses_bad_values_naming_the_field():
    for field, value in (("copy_paste", 1.5), ("copy_paste_count", 0), ("copy_paste_max_mismatch", -0.1)):
        with pytest.raises(ValueError, match=field):
            PairAugmentConfig(**{field: value})
    with pytest.raises(ValueError, match="aug_off_epochs"):
        TrainConfig(arch="mbv3-small", data="d", out="o", aug_off_epochs=-1).plain_from_epoch()


# --------------------------------------------------------------------------- the loader, on real DeepPCB pairs


@pytest.fixture(scope="module")
def sample_set():
    return load_dataset(SAMPLE)


ALL_ON = PairAugmentConfig(dihedral=True, copy_paste=1.0, copy_paste_count=3)


@pytest.mark.parametrize("mode", [m for m in INPUT_MODES if input_layout(m).needs_template])
def test_loader_with_everything_on_yields_valid_batches_on_real_pairs(sample_set, mode):
    loader = BatchLoader(sample_set, 4, 320, mode, train=True, crop_size=192, workers=0, pairs=ALL_ON)
    plain = BatchLoader(sample_set, 4, 320, mode, train=True, crop_size=192, workers=0)
    channels = input_layout(mode).channels
    pasted = 0
    for epoch in range(2):
        loader.set_epoch(epoch)
        plain.set_epoch(epoch)
        for batch, reference in zip(loader, plain):
            assert batch.images.shape == (4, channels, 192, 192) and batch.images.dtype == np.float32
            assert np.all((batch.images >= 0) & (batch.images <= 1))
            valid = batch.classes >= 0
            assert np.all(batch.boxes[valid][:, 2:] > batch.boxes[valid][:, :2])
            assert np.all((batch.boxes[valid] >= 0) & (batch.boxes[valid] <= 192))
            assert np.all(batch.classes[valid] < len(sample_set.class_names))
            pasted += int(valid.sum()) - int((reference.classes >= 0).sum())
    assert pasted > 0  # real pairs do receive pastes (crops may still drop some defects either way)


def test_switches_off_by_default_keep_todays_batches(sample_set):
    today = BatchLoader(sample_set, 4, 320, "image+template", train=True, crop_size=192, workers=0)
    switched_off = BatchLoader(sample_set, 4, 320, "image+template", train=True, crop_size=192, workers=0,
                               pairs=PairAugmentConfig(), plain_from_epoch=None)
    for a, b in zip(today, switched_off):
        assert np.array_equal(a.images, b.images) and np.array_equal(a.boxes, b.boxes)


def test_aug_off_epochs_give_unaugmented_whole_images(sample_set):
    loader = BatchLoader(sample_set, 4, 320, "image+template", train=True, crop_size=192, workers=0, pairs=ALL_ON,
                         plain_from_epoch=1)
    evaluation = BatchLoader(sample_set, 4, 320, "image+template", train=False, workers=0)
    expected = {key: (batch.images[row], batch.boxes[row], batch.classes[row])
                for batch in evaluation for row, key in enumerate(batch.keys)}
    first = list(loader)  # epoch 0: augmented crops
    assert all(batch.images.shape[-1] == 192 for batch in first)
    seen = 0
    for batch in loader:  # epoch 1: plain
        assert batch.images.shape[-1] == 320
        for row, key in enumerate(batch.keys):
            images, boxes, classes = expected[key]
            count = int((batch.classes[row] >= 0).sum())
            assert np.array_equal(batch.images[row], images)
            assert np.array_equal(batch.boxes[row][:count], boxes[: (classes >= 0).sum()])
            assert count == int((classes >= 0).sum())
            seen += 1
    assert seen == len(sample_set)


def test_copy_paste_needs_templates(sample_set):
    with pytest.raises(ValueError, match="template"):
        BatchLoader(sample_set, 4, 320, "image", train=True, workers=0, pairs=PairAugmentConfig(copy_paste=0.5))


# --------------------------------------------------------------------------- switches: config, CLI, resume


def test_train_config_keeps_the_switches_and_old_configs_mean_off(tmp_path):
    cfg = TrainConfig(arch="mbv3-small", data="d", out="o", epochs=10, dihedral=True, copy_paste=0.3,
                      copy_paste_count=1, copy_paste_balance=True, aug_off_epochs=2)
    cfg.save(tmp_path / "train_config.json")
    loaded = TrainConfig.load(tmp_path / "train_config.json")
    assert loaded == cfg and loaded.plain_from_epoch() == 8
    assert loaded.pair_augment() == PairAugmentConfig(dihedral=True, copy_paste=0.3, copy_paste_count=1,
                                                      copy_paste_balance=True)
    old = {k: v for k, v in cfg.to_dict().items()
           if k not in ("dihedral", "copy_paste", "copy_paste_count", "copy_paste_balance", "aug_off_epochs")}
    legacy = TrainConfig.from_dict(old)
    assert not legacy.pair_augment().active and legacy.plain_from_epoch() is None


@pytest.mark.slow
def test_cli_train_saves_the_switches_and_resume_keeps_them(tmp_path):
    from inspector.cli import app

    data = write_deeppcb(tmp_path / "boards", n=8, seed=4, size=160)
    run = tmp_path / "run"
    common = ["train", "--arch", "mbv3-small", "--data", str(data), "--out", str(run), "--batch", "2",
              "--input-size", "64", "--crop-size", "0", "--val-fraction", "0.25"]
    result = CliRunner().invoke(app, common + ["--epochs", "1", "--dihedral", "--copy-paste", "0.5",
                                               "--copy-paste-count", "3", "--copy-paste-balance",
                                               "--aug-off-epochs", "1"])
    assert result.exit_code == 0, result.output
    saved = json.loads((run / "train_config.json").read_text())
    assert (saved["dihedral"], saved["copy_paste"], saved["copy_paste_count"], saved["copy_paste_balance"],
            saved["aug_off_epochs"]) == (True, 0.5, 3, True, 1)
    result = CliRunner().invoke(app, common + ["--epochs", "2", "--resume"])
    assert result.exit_code == 0, result.output
    resumed = json.loads((run / "train_config.json").read_text())
    assert resumed["epochs"] == 2 and resumed["copy_paste"] == 0.5 and resumed["dihedral"] is True
    bad = CliRunner().invoke(app, common + ["--out", str(tmp_path / "bad"), "--copy-paste", "1.5"])
    assert bad.exit_code != 0 and "--copy-paste" in bad.output


def test_pipeline_passes_the_switches_to_every_training_stage(tmp_path):
    from inspector.pipeline.config import PipelineConfig, PipelineError, differences
    from inspector.pipeline.run import SCHEDULE_FIELDS, _train_config

    cfg = PipelineConfig(data="d", out=str(tmp_path), dihedral=True, copy_paste=0.4, copy_paste_count=3,
                         copy_paste_balance=True, aug_off_epochs=2)
    train_cfg = _train_config(cfg, tmp_path, "student", cfg.student_arch, cfg.epochs, cfg.crop_size, cfg.lr)
    assert (train_cfg.dihedral, train_cfg.copy_paste, train_cfg.copy_paste_count, train_cfg.copy_paste_balance,
            train_cfg.aug_off_epochs) == (True, 0.4, 3, True, 2)
    switches = {"dihedral", "copy_paste", "copy_paste_count", "copy_paste_balance", "aug_off_epochs"}
    assert switches <= set(SCHEDULE_FIELDS)
    for field, value in (("copy_paste", -0.1), ("copy_paste_count", 0), ("aug_off_epochs", -1)):
        with pytest.raises(PipelineError, match=field):
            PipelineConfig(data="d", out="o", **{field: value})
    # A pipeline directory saved before these options existed continues with them off, and only with them off.
    saved = {k: v for k, v in PipelineConfig(data="d", out="o").to_dict().items()
             if k not in ("dihedral", "copy_paste", "copy_paste_count", "copy_paste_balance", "aug_off_epochs")}
    assert differences(saved, PipelineConfig(data="d", out="o").to_dict()) == []
    assert differences(saved, cfg.to_dict() | {"out": "o", "data": "d"}) != []
