"""Frame sources (inspector.capture): demo, video file, stream, camera failure, hot folder, reconnection."""
from __future__ import annotations

import functools
import http.server
import json
import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.capture import (DEMO_DIR, CorruptFrame, DemoSource, Frame, FrameSource, HotFolderSource,
                               ReconnectingSource, SourceEnded, SourceError, open_source)
from inspector.data import DEEPPCB_CLASSES, load_dataset

REPO = Path(__file__).resolve().parents[2]
# The shipped model's split (its package keeps a copy): the demo must show boards it never trained on.
TRAINING_SPLIT = Path(__file__).resolve().parents[2] / "models" / "default" / "split.json"


# -- helpers -----------------------------------------------------------------------------------------

def gray_image(level: int, size: tuple[int, int] = (48, 64)) -> np.ndarray:
    return np.full((*size, 3), level, dtype=np.uint8)


def write_image(path: Path, image: np.ndarray, age_seconds: float | None = 30.0) -> bytes:
    """Write ``image`` to ``path`` (format from the extension); backdate it so it counts as settled."""
    ok, encoded = cv2.imencode(path.suffix, image)
    assert ok
    data = encoded.tobytes()
    path.write_bytes(data)
    if age_seconds is not None:
        stamp = time.time() - age_seconds
        os.utime(path, (stamp, stamp))
    return data


def write_video(path: Path, levels: list[int], fps: float = 20.0) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    assert writer.isOpened()
    for level in levels:
        writer.write(gray_image(level))
    writer.release()


def read_all(source: FrameSource, limit: int = 100) -> list[Frame]:
    frames = []
    for _ in range(limit):
        frame = source.read()
        if frame is None:
            break
        frames.append(frame)
    return frames


def folder_source(folder: Path, **options) -> HotFolderSource:
    settings = dict(settle_seconds=0.2, pair_wait_seconds=0.2, abandon_seconds=60.0, rescan_seconds=0.0) | options
    source = HotFolderSource(folder, **settings)
    source.open()
    return source


# -- demo --------------------------------------------------------------------------------------------

def test_demo_frames_carry_templates_ground_truth_and_are_paced():
    with open_source("demo", fps=20) as source:
        assert isinstance(source, DemoSource)
        assert (source.kind, source.droppable) == ("demo", True)
        started = time.monotonic()
        frames = [source.read() for _ in range(14)]  # 12 boards, then it loops
        elapsed = time.monotonic() - started
    # 13 periods of 1/20 s between the first and the 14th frame, no bursts.
    assert 13 / 20 - 0.02 <= elapsed < 13 / 20 + 1.0
    assert [f.sequence for f in frames] == list(range(14))
    assert len({f.frame_id for f in frames}) == 14
    assert frames[12].path == frames[0].path  # looped
    assert frames[0].frame_id.startswith("demo:group") and frames[0].frame_id.endswith(":0")
    for frame in frames:
        assert frame.image.dtype == np.uint8 and frame.image.shape == (640, 640, 3)
        assert frame.template is not None and frame.template.shape == frame.image.shape
        assert frame.path.name.endswith("_test.jpg")
        assert (frame.path.parent / frame.path.name.replace("_test", "_temp")).is_file()
        assert frame.source == "demo"
        assert frame.captured_monotonic >= started
    boxes, class_ids = source.ground_truth(frames[0])
    assert boxes.shape == (len(class_ids), 4) and len(class_ids) > 0
    assert boxes.dtype == np.float32 and class_ids.dtype == np.int64
    # The image on disk is the frame: DeepPCB boards are binarised, the template differs where defects are.
    assert np.array_equal(frames[0].image, cv2.imread(str(frames[0].path)))
    assert not np.array_equal(frames[0].image, frames[0].template)


def test_demo_default_pace_is_two_frames_a_second_and_close_interrupts_the_wait():
    source = open_source("demo")
    source.open()
    source.read()
    threading.Timer(0.1, source.close).start()
    started = time.monotonic()
    assert source.read() is None  # the 0.5 s wait ended by close()
    assert time.monotonic() - started < 0.4


def test_demo_without_loop_ends():
    with open_source("demo", fps=1000, loop=False) as source:
        assert len([source.read() for _ in range(12)]) == 12
        with pytest.raises(SourceEnded, match="demo: ended after 12 boards"):
            source.read()


def test_demo_boards_are_twelve_validation_pairs_with_every_defect_type():
    dataset = load_dataset(DEMO_DIR)
    assert len(dataset) == 12 and dataset.has_templates and not dataset.problems
    assert all(count > 0 for count in dataset.class_counts().values())
    assert dataset.class_names == list(DEEPPCB_CLASSES)
    val_keys = set(json.loads(TRAINING_SPLIT.read_text())["val"])
    for sample in dataset.samples:
        assert sample.image_path.relative_to(DEMO_DIR).as_posix() in val_keys


def test_ground_truth_refuses_a_frame_from_elsewhere(tmp_path):
    write_video(tmp_path / "line.avi", [10, 20])
    with open_source("demo", fps=1000) as demo, open_source(str(tmp_path / "line.avi")) as video:
        demo.read()
        with pytest.raises(ValueError, match="not one of the demo boards"):
            demo.ground_truth(video.read())


# -- video file and stream ---------------------------------------------------------------------------

LEVELS = [0, 50, 100, 150, 200, 250]


def levels_of(frames: list[Frame]) -> list[int]:
    return [int(round(float(f.image.mean()))) for f in frames]


def test_video_file_is_read_frame_by_frame_at_its_own_rate_and_ends(tmp_path):
    write_video(tmp_path / "line.avi", LEVELS, fps=20)
    source = open_source(str(tmp_path / "line.avi"), loop=False)
    with source:
        assert (source.kind, source.droppable, source.fps) == ("video", True, 20.0)
        started = time.monotonic()
        frames = [source.read() for _ in LEVELS]
        elapsed = time.monotonic() - started
        with pytest.raises(SourceEnded, match=r"line\.avi: ended after 6 frames"):
            source.read()
    assert elapsed >= 5 / 20 - 0.02
    assert np.allclose(levels_of(frames), LEVELS, atol=3)  # MJPEG is lossy
    assert [f.frame_id for f in frames] == [f"line.avi:{i:06d}" for i in range(6)]
    assert all(f.path is None and f.template is None for f in frames)


def test_video_file_loops_and_fps_overrides_the_files_rate(tmp_path):
    write_video(tmp_path / "line.avi", LEVELS, fps=2)  # its own rate would take 7 s for 15 frames
    with open_source(str(tmp_path / "line.avi"), fps=200) as source:
        started = time.monotonic()
        frames = [source.read() for _ in range(15)]
        assert time.monotonic() - started < 2.0
    assert np.allclose(levels_of(frames), LEVELS * 2 + LEVELS[:3], atol=3)
    assert [f.sequence for f in frames] == list(range(15))


def test_video_frames_carry_the_given_template_and_a_bad_template_is_named(tmp_path):
    write_video(tmp_path / "line.avi", LEVELS)
    write_image(tmp_path / "golden.png", gray_image(77))
    with open_source(str(tmp_path / "line.avi"), template=tmp_path / "golden.png") as source:
        frame = source.read()
    assert frame.template is not None and int(frame.template[0, 0, 0]) == 77
    (tmp_path / "broken.png").write_bytes(b"not an image")
    for template in (tmp_path / "broken.png", tmp_path / "missing.png"):
        with pytest.raises(SourceError, match=f"template {template}"):
            open_source(str(tmp_path / "line.avi"), template=template)


def test_unreadable_video_file_is_a_source_error(tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 1000)
    with pytest.raises(SourceError, match="broken.mp4: cannot open as a video"):
        open_source(str(tmp_path / "broken.mp4")).open()


@pytest.fixture
def http_server(tmp_path):
    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=tmp_path))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


def test_http_stream_is_read_through_ffmpeg_and_its_end_is_a_failure(tmp_path, http_server):
    write_video(tmp_path / "line.avi", LEVELS)
    with open_source(f"{http_server}/line.avi") as source:
        assert (source.kind, source.droppable) == ("stream", True)
        frames = [source.read() for _ in LEVELS]
        assert np.allclose(levels_of(frames), LEVELS, atol=3)
        assert frames[0].frame_id == "stream:000000"
        with pytest.raises(SourceError, match="no frame"):
            source.read()  # a live stream that stops is a failure to reconnect from


def test_unreachable_stream_fails_fast_with_its_password_hidden():
    # Nothing listens on port 1 here: the connection is refused at once.
    with pytest.raises(SourceError, match=r"stream rtsp://operator:\*\*\*@127\.0\.0\.1:1/line: cannot open") as error:
        open_source("rtsp://operator:secret@127.0.0.1:1/line").open()
    assert "secret" not in str(error.value)


def test_missing_camera_index_is_a_clear_source_error():
    source = open_source("63")
    assert (source.kind, source.droppable) == ("camera", True)
    with pytest.raises(SourceError, match="camera 63: cannot open: no camera at this index"):
        source.open()
    with pytest.raises(SourceError, match="camera 63: not open"):
        source.read()


@pytest.mark.parametrize("spec, expected", [
    ("no/such/place", "no such file or folder"),
    ("ftp://host/x", "unsupported URL scheme"),
    ("", "empty source"),
])
def test_bad_spec_names_it_and_the_accepted_forms(spec, expected):
    with pytest.raises(SourceError, match=expected) as error:
        open_source(spec)
    assert spec in str(error.value)
    assert '"demo"' in str(error.value) and "camera index" in str(error.value) and "rtsp://" in str(error.value)


def test_a_file_that_is_not_a_video_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(SourceError, match=r"notes\.txt.*not a video \(\.txt\)"):
        open_source(str(tmp_path / "notes.txt"))


# -- hot folder --------------------------------------------------------------------------------------

def test_hot_folder_yields_each_image_once_oldest_first(tmp_path):
    for name, age in [("c.png", 10), ("a.jpg", 30), ("b.bmp", 20), ("d.tif", 20)]:
        write_image(tmp_path / name, gray_image(len(name) * 10), age_seconds=age)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    write_image(tmp_path / "sub" / "nested.png", gray_image(1))
    write_image(tmp_path / ".hidden.png", gray_image(1))
    source = open_source(str(tmp_path))
    assert isinstance(source, HotFolderSource) and (source.kind, source.droppable) == ("folder", False)
    with source:
        frames = read_all(source)
        assert [f.frame_id for f in frames] == ["a.jpg", "b.bmp", "d.tif", "c.png"]  # mtime, then name
        assert [f.sequence for f in frames] == [0, 1, 2, 3]
        assert all(f.path == tmp_path / f.frame_id and f.template is None for f in frames)
        assert all(f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 for f in frames)
        assert source.read() is None  # each once, even before it is acknowledged
        for frame in frames:
            source.ack(frame)
        assert source.read() is None
    assert (tmp_path / ".inspector" / "hotfolder-ledger.sqlite3").is_file()


def test_hot_folder_lists_again_only_after_rescan_seconds_once_it_found_nothing(tmp_path):
    source = folder_source(tmp_path, rescan_seconds=0.3)
    assert source.read() is None
    write_image(tmp_path / "late.png", gray_image(3))
    assert source.read() is None  # a consumer polling every few ms does not list the folder each time
    time.sleep(0.35)
    assert source.read().frame_id == "late.png"


def test_hot_folder_pairs_deeppcb_templates_and_never_yields_them(tmp_path):
    pair = DEMO_DIR / "group00041" / "00041"
    for name in ("00041002_test.jpg", "00041002_temp.jpg"):
        data = (pair / name).read_bytes()
        (tmp_path / name).write_bytes(data)
        os.utime(tmp_path / name, (time.time() - 30, time.time() - 30))
    write_image(tmp_path / "board.png", gray_image(5))
    write_image(tmp_path / "golden.png", gray_image(99), age_seconds=None)
    fallback = tmp_path / "golden.png"
    source = folder_source(tmp_path, template=cv2.imread(str(fallback)))
    frames = read_all(source)
    by_name = {f.frame_id: f for f in frames}
    assert "00041002_temp.jpg" not in by_name
    assert np.array_equal(by_name["00041002_test.jpg"].template, cv2.imread(str(pair / "00041002_temp.jpg")))
    assert int(by_name["board.png"].template[0, 0, 0]) == 99  # no pair: the fallback template


def test_hot_folder_test_image_waits_briefly_for_its_template(tmp_path):
    write_image(tmp_path / "x_test.png", gray_image(10), age_seconds=None)  # just written
    source = folder_source(tmp_path, settle_seconds=0.0, pair_wait_seconds=0.5)
    assert source.read() is None  # its template may be on its way
    write_image(tmp_path / "x_temp.png", gray_image(20), age_seconds=None)
    frame = source.read()
    assert frame.frame_id == "x_test.png" and int(frame.template[0, 0, 0]) == 20
    write_image(tmp_path / "y_test.png", gray_image(30), age_seconds=None)
    assert source.read() is None
    time.sleep(0.6)
    frame = source.read()
    assert frame.frame_id == "y_test.png" and frame.template is None  # none came: goes without


def test_hot_folder_test_image_with_a_broken_or_unfinished_template(tmp_path):
    write_image(tmp_path / "p_test.png", gray_image(10), age_seconds=120)
    (tmp_path / "p_temp.png").write_bytes(b"garbage IEND")  # whole-looking, undecodable
    os.utime(tmp_path / "p_temp.png", (time.time() - 120, time.time() - 120))
    write_image(tmp_path / "q_test.png", gray_image(20), age_seconds=100)  # an old board ...
    ok, encoded = cv2.imencode(".png", gray_image(30))
    (tmp_path / "q_temp.png").write_bytes(encoded.tobytes()[:50])  # ... whose template is being written now
    source = folder_source(tmp_path, abandon_seconds=5.0)
    with pytest.raises(CorruptFrame, match=r"p_test\.png: its template .*p_temp\.png is not a readable image"):
        source.read()
    assert source.read() is None  # q waits for its template, the board's age notwithstanding
    (tmp_path / "q_temp.png").write_bytes(encoded.tobytes())
    time.sleep(0.3)
    frame = source.read()
    assert frame.frame_id == "q_test.png" and int(frame.template[0, 0, 0]) == 30


def test_hot_folder_skips_files_still_being_written(tmp_path):
    ok, encoded = cv2.imencode(".jpg", gray_image(120, (240, 320)))
    data = encoded.tobytes()
    target = tmp_path / "scan.jpg"
    target.write_bytes(data[: len(data) // 2])  # the scanner is half-way
    source = folder_source(tmp_path, settle_seconds=0.2)
    assert source.read() is None
    time.sleep(0.3)
    assert source.read() is None  # settled, but no JPEG end marker: still incomplete
    # TIFF has no end marker: only the settle time protects it.
    write_image(tmp_path / "fresh.tif", gray_image(7), age_seconds=None)
    assert source.read() is None
    target.write_bytes(data)  # finished
    assert source.read() is None  # just changed
    time.sleep(0.3)
    frames = read_all(source)
    assert sorted(f.frame_id for f in frames) == ["fresh.tif", "scan.jpg"]
    scan = next(f for f in frames if f.frame_id == "scan.jpg")
    assert np.array_equal(scan.image, cv2.imdecode(encoded, cv2.IMREAD_COLOR))


def test_hot_folder_restart_skips_acked_and_yields_unacked_files_again(tmp_path):
    for age, name in enumerate(["c.png", "b.png", "a.png"], start=10):
        write_image(tmp_path / name, gray_image(age), age_seconds=age)
    first = folder_source(tmp_path)
    a = first.read()
    first.ack(a)
    b = first.read()
    assert (a.frame_id, b.frame_id) == ("a.png", "b.png")
    # The process dies here: b was read but never acknowledged, and `first` is never closed.
    second = folder_source(tmp_path)
    assert [f.frame_id for f in read_all(second)] == ["b.png", "c.png"]
    # A file rewritten under a name already processed is a new board.
    write_image(tmp_path / "a.png", gray_image(200, (10, 10)), age_seconds=1)
    third = folder_source(tmp_path)
    frames = read_all(third)
    assert [f.frame_id for f in frames] == ["b.png", "c.png", "a.png"]
    assert frames[-1].image.shape == (10, 10, 3)
    with pytest.raises(ValueError, match="not read from this source"):
        third.ack(a)  # a frame of another source object
    third.ack(frames[-1])
    with pytest.raises(ValueError, match="already acknowledged"):
        third.ack(frames[-1])
    for source in (first, second, third):
        source.close()


def test_hot_folder_corrupt_file_raises_once_and_is_not_retried(tmp_path):
    write_image(tmp_path / "good.png", gray_image(1), age_seconds=10)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8" + os.urandom(500) + b"\xff\xd9")  # looks whole, does not decode
    os.utime(bad, (time.time() - 20, time.time() - 20))
    source = folder_source(tmp_path)
    with pytest.raises(CorruptFrame, match="bad.jpg: not a readable image") as error:
        source.read()
    assert error.value.path == bad and error.value.frame_id == "bad.jpg"
    assert source.read().frame_id == "good.png"
    assert source.read() is None
    assert [(name, status) for name, _, _, status, _ in source.ledger.entries()] == [("bad.jpg", "failed")]
    source.close()
    assert read_all(folder_source(tmp_path)) != [] and all(
        f.frame_id != "bad.jpg" for f in read_all(folder_source(tmp_path)))


def test_hot_folder_truncated_file_that_never_completes_becomes_corrupt(tmp_path):
    ok, encoded = cv2.imencode(".jpg", gray_image(120))
    (tmp_path / "stuck.jpg").write_bytes(encoded.tobytes()[:200])
    source = folder_source(tmp_path, abandon_seconds=0.3)
    assert source.read() is None
    time.sleep(0.4)
    with pytest.raises(CorruptFrame, match="stuck.jpg: truncated image"):
        source.read()
    assert source.read() is None


def test_hot_folder_state_dir_and_folder_errors(tmp_path):
    write_image(tmp_path / "a.png", gray_image(1))
    state = tmp_path / "elsewhere" / "state"
    with open_source(str(tmp_path), state_dir=state) as source:
        source.ack(source.read())
    assert (state / "hotfolder-ledger.sqlite3").is_file() and not (tmp_path / ".inspector").exists()
    gone = HotFolderSource(tmp_path / "unmounted")
    with pytest.raises(SourceError, match="unmounted: not a directory"):
        gone.open()
    with pytest.raises(SourceError, match="not open"):
        gone.read()


# -- reconnection ------------------------------------------------------------------------------------

class FlakySource(FrameSource):
    """A live source that can be broken and mended: while broken, open() and read() fail."""

    kind = "camera"
    droppable = True

    def __init__(self):
        self.spec = "fake-camera"
        self.broken = False
        self.is_open = False
        self.open_attempts: list[float] = []
        self.next_read_error: SourceError | None = None
        self.acked: list[Frame] = []
        self._sequence = 0

    def open(self):
        self.open_attempts.append(time.monotonic())
        if self.broken:
            raise SourceError("fake-camera: cannot open (unplugged)")
        self.is_open = True

    def read(self):
        if self.next_read_error is not None:
            error, self.next_read_error = self.next_read_error, None
            raise error
        if self.broken or not self.is_open:
            raise SourceError("fake-camera: no frame (unplugged)")
        frame = Frame(gray_image(1), f"fake:{self._sequence}", self._sequence, self.spec, time.time(),
                      time.monotonic())
        self._sequence += 1
        return frame

    def ack(self, frame):
        self.acked.append(frame)

    def close(self):
        self.is_open = False


def test_reconnecting_source_recovers_and_counts_the_reconnect():
    fake = FlakySource()
    events = []
    source = ReconnectingSource(fake, initial_backoff=0.05, max_backoff=1.0,
                                on_state=lambda state, error: events.append((state, error)))
    assert (source.spec, source.kind, source.droppable) == ("fake-camera", "camera", True)
    source.open()
    assert source.state == "connected" and source.reconnects == 0
    assert source.read() is not None
    fake.broken = True
    assert source.read() is None  # the failure: no exception
    assert source.state == "reconnecting" and not fake.is_open
    assert source.last_error == "fake-camera: no frame (unplugged)"
    assert source.read() is None  # one attempt, still unplugged
    fake.broken = False
    frame = source.read()
    assert frame is not None and source.state == "connected" and source.reconnects == 1
    source.ack(frame)
    assert fake.acked == [frame]
    assert [state for state, _ in events] == ["connected", "reconnecting", "reconnecting", "connected"]
    assert events[1][1] == "fake-camera: no frame (unplugged)"
    assert events[2][1] == "fake-camera: cannot open (unplugged)"
    source.close()
    assert source.state == "closed" and events[-1] == ("closed", None)
    assert source.read() is None


def test_reconnecting_source_backs_off_exponentially_up_to_the_cap():
    fake = FlakySource()
    source = ReconnectingSource(fake, initial_backoff=0.04, max_backoff=0.16)
    source.open()
    fake.broken = True
    for _ in range(6):
        assert source.read() is None
    # The read failure, then one open attempt per read; the waits between them double up to the cap.
    gaps = np.diff(fake.open_attempts[1:])  # [0] is the first successful open
    expected = [0.08, 0.16, 0.16, 0.16]
    assert len(gaps) == len(expected)
    assert all(want - 0.01 <= gap < want + 0.1 for gap, want in zip(gaps, expected)), gaps
    assert fake.open_attempts[1] - fake.open_attempts[0] >= 0.04 - 0.01
    # Once frames flow again the back-off starts from the beginning.
    fake.broken = False
    time.sleep(0.2)
    assert source.read() is not None
    assert source.backoff == pytest.approx(0.04)


def test_reconnecting_source_close_ends_a_waiting_read_promptly():
    fake = FlakySource()
    source = ReconnectingSource(fake, initial_backoff=5.0, max_backoff=30.0)
    source.open()
    fake.broken = True
    assert source.read() is None  # the failure; the next attempt is 5 s away
    returned = []
    reader = threading.Thread(target=lambda: returned.append(source.read()))
    started = time.monotonic()
    reader.start()
    time.sleep(0.1)
    source.close()
    reader.join(timeout=2.0)
    assert not reader.is_alive() and returned == [None]
    assert time.monotonic() - started < 1.0
    assert source.state == "closed"


def test_reconnecting_source_passes_corrupt_frames_and_the_end_through():
    fake = FlakySource()
    source = ReconnectingSource(fake, initial_backoff=0.05)
    source.open()
    fake.next_read_error = CorruptFrame("fake-camera: one bad frame")
    with pytest.raises(CorruptFrame):
        source.read()
    assert source.state == "connected" and source.read() is not None
    fake.next_read_error = SourceEnded("fake-camera: ended")
    with pytest.raises(SourceEnded):
        source.read()


def test_reconnecting_source_waits_for_a_source_missing_at_start():
    fake = FlakySource()
    fake.broken = True
    states = []
    source = ReconnectingSource(fake, initial_backoff=0.05, on_state=lambda state, error: states.append(state))
    source.open()  # does not raise: the camera may be plugged in later
    assert source.state == "connecting" and source.last_error == "fake-camera: cannot open (unplugged)"
    assert source.read() is None
    fake.broken = False
    assert source.read() is not None
    assert source.state == "connected" and source.reconnects == 0
    assert states == ["connecting", "connecting", "connected"]


def test_reconnecting_hot_folder_survives_its_share_going_away(tmp_path):
    folder = tmp_path / "share"
    folder.mkdir()
    write_image(folder / "a.png", gray_image(1))
    inner = HotFolderSource(folder, state_dir=tmp_path / "state", settle_seconds=0.0, rescan_seconds=0.0)
    with ReconnectingSource(inner, initial_backoff=0.05) as source:
        assert (source.kind, source.droppable) == ("folder", False)
        first = source.read()
        folder.rename(tmp_path / "unmounted")  # the network share drops while `first` is being inspected
        assert source.read() is None and source.state == "reconnecting"
        assert "share: cannot list" in source.last_error
        assert source.read() is None and "share: not a directory" in source.last_error
        source.ack(first)  # kept until the source is back
        assert source.pending_acks == 1
        (tmp_path / "unmounted").rename(folder)
        write_image(folder / "b.png", gray_image(2))
        frames = [source.read() for _ in range(5)]
        assert [f.frame_id for f in frames if f is not None] == ["b.png"]  # a.png was acknowledged meanwhile
        assert source.state == "connected" and source.reconnects == 1 and source.pending_acks == 0
        assert [(name, status) for name, *_, status, _ in inner.ledger.entries()] == [("a.png", "done")]
