"""The GUI's plain logic: verdict rule, counters, defect log, evidence files, review -> VOC, settings."""
from __future__ import annotations

import json

import numpy as np
import pytest

from gui.evidence import EvidenceStore, atomic_write_bytes, read_records
from gui.review import ReviewState, write_voc_review
from gui.session import (
    NG,
    NOT_JUDGED,
    PASS,
    Inspection,
    InspectionSession,
    RateMeter,
    Thresholds,
    ThresholdError,
    judge,
)
from gui.settings import GuiSettings, load_settings, save_settings
from inspector.data import load_dataset, read_image
from inspector.data.bundled import BUNDLED_DEEPPCB
from inspector.runtime import Detections, Timing

CLASSES = ["open", "short", "mousebite", "spur", "copper", "pin-hole"]


def detections(rows: list[tuple[tuple[float, float, float, float], str, float]], size=(640, 640)) -> Detections:
    return Detections(
        boxes=np.array([r[0] for r in rows], np.float32).reshape(-1, 4),
        scores=np.array([r[2] for r in rows], np.float32),
        class_ids=np.array([CLASSES.index(r[1]) for r in rows], np.int64),
        class_names=[r[1] for r in rows],
        image_size=size,
        timing=Timing(1.0, 2.0, 0.5),
    )


def inspection(candidates: Detections | None, thresholds: Thresholds, frame_id: str = "f:1",
               image: np.ndarray | None = None) -> Inspection:
    image = np.full((640, 640, 3), 200, np.uint8) if image is None else image
    return Inspection.judged(frame_id=frame_id, source="test", captured_at=1_700_000_000.25, captured_monotonic=1.0,
                             image=image, template=None, candidates=candidates, thresholds=thresholds,
                             package_id="pkg", error="" if candidates is not None else "no template")


def test_verdict_is_ng_at_or_above_the_class_threshold_and_pass_below():
    found = detections([((10, 10, 30, 30), "short", 0.5), ((50, 50, 80, 90), "open", 0.3)])
    assert judge(found, Thresholds(0.6))[0] == PASS
    verdict, defects = judge(found, Thresholds(0.5))
    assert verdict == NG and defects.class_names == ["short"]  # exactly at the threshold counts
    verdict, defects = judge(found, Thresholds(0.9, {"open": 0.3}))  # per-class override
    assert verdict == NG and defects.class_names == ["open"]
    assert judge(detections([]), Thresholds(0.1))[0] == PASS
    assert judge(None, Thresholds(0.1)) == (NOT_JUDGED, None)


def test_thresholds_are_checked_and_set_the_candidate_floor():
    with pytest.raises(ThresholdError, match="threshold of class 'open'"):
        Thresholds(0.5, {"open": 1.5})
    with pytest.raises(ThresholdError, match="global"):
        Thresholds(0.0)
    assert Thresholds(0.5, {"short": 0.02}).candidate_floor() == pytest.approx(0.02)
    assert Thresholds(0.5).candidate_floor() == pytest.approx(0.05)


def test_counters_yield_and_log():
    session = InspectionSession(frames_in_memory=2)
    thresholds = Thresholds(0.5)
    ng = detections([((10, 10, 30, 30), "short", 0.9), ((40, 40, 60, 60), "short", 0.7),
                     ((100, 100, 120, 130), "open", 0.6)])
    assert session.counters.yield_percent is None
    for index, found in enumerate([ng, detections([]), ng, None, ng]):
        session.record(inspection(found, thresholds, frame_id=f"f:{index}"))
    counters = session.counters
    assert (counters.inspected, counters.ng, counters.not_judged) == (4, 3, 1)
    assert counters.yield_percent == pytest.approx(25.0)
    assert counters.per_class == {"short": 6, "open": 3}
    assert [entry.frame_id for entry in session.log] == ["f:0", "f:2", "f:4"]
    entry = session.log[-1]
    assert entry.defect_summary() == "short x2, open" and entry.max_score == pytest.approx(0.9)
    assert max(entry.thumbnail.shape[:2]) == 72
    # only the most recent frames stay in memory; older ones are read back from the evidence files
    assert session.log[0].image is None and session.log[1].image is not None
    session.reset_counters()
    assert session.counters.inspected == 0 and len(session.log) == 3


def test_rate_meter():
    meter = RateMeter(window_s=2.0)
    for i in range(11):
        meter.tick(100.0 + i * 0.1)
    assert meter.rate(101.0) == pytest.approx(10.0)
    assert meter.rate(200.0) == 0.0


def test_evidence_is_written_whole_and_the_record_survives_a_cut_line(tmp_path):
    store = EvidenceStore(tmp_path)
    image = np.random.default_rng(0).integers(0, 255, (64, 80, 3), np.uint8)
    template = np.zeros_like(image)
    defects = detections([((1, 2, 30, 40), "spur", 0.8)], size=(80, 64))
    path = store.save_ng(frame_id="cam0:000007", captured_at=1_700_000_000.5, source="0", image=image,
                         template=template, defects=defects, thresholds={"global": 0.5}, package_id="pkg")
    assert np.array_equal(read_image(path), image)
    saved = json.loads(path.with_suffix(".json").read_text())
    assert saved["defects"][0]["class_name"] == "spur"
    assert np.array_equal(read_image(path.parent / saved["template"]), template)
    assert not list(tmp_path.rglob("*.part"))  # no temporary files left behind

    store.record({"captured_at": 1_700_000_000.5, "frame_id": "a", "verdict": "NG"}, durable=True)
    log_file = next(tmp_path.glob("inspections-*.jsonl"))
    with open(log_file, "a") as stream:  # what a crash in the middle of a write leaves
        stream.write('{"frame_id": "b", "verd')
    assert [r["frame_id"] for r in read_records(log_file)] == ["a"]


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "settings.json"
    target.write_text("old")

    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["settings.json"]


def test_review_round_trip_is_read_back_by_the_data_layer(tmp_path):
    sample = load_dataset(BUNDLED_DEEPPCB).samples[0]
    image, template = sample.load_image(), sample.load_template()
    found = detections([((10.4, 20.6, 40.2, 50.0), "short", 0.9), ((100, 100, 130, 120), "open", 0.7)])
    review = ReviewState.from_detections("demo:x/1:3", 1_700_000_000.0, image, template, found, CLASSES)
    review.toggle_false_call(review.box_at(120, 110))  # the "open" is not a defect
    review.add_missed((300, 310, 280, 330), "pin-hole")  # dragged right-to-left: ordered on the way in
    with pytest.raises(ValueError, match="expected one of"):
        review.add_missed((1, 1, 5, 5), "scratch")
    xml_path = write_voc_review(tmp_path / "reviews", review)

    dataset = load_dataset(tmp_path / "reviews")
    assert dataset.format == "voc" and not dataset.problems and len(dataset) == 1
    loaded = dataset.samples[0]
    assert [dataset.class_names[c] for c in loaded.classes] == ["short", "pin-hole"]
    np.testing.assert_array_equal(loaded.boxes, [[10, 20, 41, 50], [280, 310, 300, 330]])
    assert np.array_equal(loaded.load_image(), image)
    assert np.array_equal(loaded.load_template(), template)
    # saving the same frame again replaces its sample instead of adding another
    review.remove(len(review.boxes) - 1)
    assert write_voc_review(tmp_path / "reviews", review) == xml_path
    assert [len(s) for s in load_dataset(tmp_path / "reviews").samples] == [1]


def test_settings_persist_and_a_broken_file_is_kept_aside(tmp_path):
    path = tmp_path / "gui.json"
    settings = GuiSettings(source="rtsp://cam/1", global_threshold=0.4, per_class_thresholds={"short": 0.3})
    save_settings(path, settings)
    assert load_settings(path) == (settings, "")
    path.write_text('{"source": 3}')
    loaded, message = load_settings(path)
    assert loaded == GuiSettings() and "source: expected str" in message
    assert (tmp_path / "gui.json.unreadable").read_text() == '{"source": 3}'


def test_live_view_colours_match_the_saved_images():
    """The window draws with gui.palette; saved snapshots with inspector.runtime.draw: same colour per class."""
    from gui.palette import CLASS_RGB
    from inspector.runtime.draw import draw_detections

    for class_id in range(len(CLASS_RGB)):
        found = Detections(np.array([[10, 30, 60, 60]], np.float32), np.array([0.9], np.float32),
                           np.array([class_id], np.int64), ["x"], (80, 80), Timing(0, 0, 0))
        drawn = draw_detections(np.zeros((80, 80, 3), np.uint8), found)
        blue, green, red = drawn[45, 10]  # a pixel of the box's left edge
        assert (red, green, blue) == CLASS_RGB[class_id]
