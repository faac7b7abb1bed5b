"""Unknown-change flags in the operator window: computed in the inference process when asked, drawn dashed
yellow on the frame, written into the inspection record."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from gui.frame_view import UNKNOWN_CHANGE_COLOUR, FrameView, Shown
from gui.inference_process import detect
from gui.session import Inspection, Thresholds
from inspector.data import load_dataset
from inspector.runtime import Detector, resolve_package_path

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def board_with_object():
    try:
        resolve_package_path(None)
    except Exception as error:  # noqa: BLE001 - no shipped model in this checkout
        pytest.skip(f"no shipped model: {error}")
    detector = Detector.load(None, threads=1)
    sample = load_dataset(ROOT / "inspector/assets/deeppcb_demo").samples[1]
    image, template = sample.load_image(), sample.load_template()
    board = image.copy()
    value = 255 - int(np.median(image[300:330, 20:50]))
    cv2.rectangle(board, (20, 300), (49, 329), (value,) * 3, -1)  # a foreign 30 px object
    return detector, board, template


def test_inference_flags_unknown_changes_only_when_asked(board_with_object):
    detector, board, template = board_with_object
    plain = detect(detector, board, template, align=False, score_floor=0.3, overlay=False)
    assert plain.candidates.unknown_changes is None
    flagged = detect(detector, board, template, align=False, score_floor=0.3, overlay=False, unknown_changes=True)
    changes = flagged.candidates.unknown_changes
    on_object = [c for c in changes if c.box[0] < 50 and c.box[2] > 20 and c.box[1] < 330 and c.box[3] > 300]
    explained = any(b[0] < 50 and b[2] > 20 and b[1] < 330 and b[3] > 300 for b in flagged.candidates.boxes)
    assert bool(on_object) != explained  # flagged unless the model itself boxed it
    inspection = Inspection.judged(frame_id="f:1", source="test", captured_at=0.0, captured_monotonic=0.0,
                                   image=board, template=template, candidates=flagged.candidates,
                                   thresholds=Thresholds(0.5), package_id="p")
    assert inspection.record()["unknown_changes"] == [c.to_dict() for c in changes]


def test_frame_view_draws_unknown_changes_dashed_yellow(qtbot, board_with_object):
    _, board, template = board_with_object
    from inspector.runtime.changes import find_unknown_changes

    changes = find_unknown_changes(board, template)
    assert changes
    view = FrameView()
    qtbot.addWidget(view)
    view.resize(640, 640)
    view.show()
    with qtbot.waitSignal(view.painted, timeout=5000):
        view.show_frame(Shown(board, None, [], changes=changes, token="t"))
    picture = view.grab().toImage()
    box = view.widget_box(changes[0].box)
    yellow = UNKNOWN_CHANGE_COLOUR.rgb()
    edge = [picture.pixel(int(box.left() + dx), int(box.top())) for dx in range(0, max(2, int(box.width())))]
    assert yellow in edge
    with qtbot.waitSignal(view.painted, timeout=5000):
        view.show_frame(Shown(board, None, [], token="u"))  # no changes: no yellow anywhere on that edge
    picture = view.grab().toImage()
    assert yellow not in [picture.pixel(int(box.left() + dx), int(box.top())) for dx in range(int(box.width()))]
