"""GenICam cameras (inspector/capture/genicam.py) against Aravis' fake GigE Vision camera on loopback
(`arv-fake-gv-camera-0.8`, Debian package aravis-tools; binding: gir1.2-aravis-0.8 + PyGObject).

The fake camera serves GVCP on 127.0.0.1:3956 (the protocol's fixed port), so these tests run one camera
at a time. Its image brightness follows the exposure time, which makes an exposure change visible.
"""
from __future__ import annotations

import functools
import shutil
import subprocess

import cv2
import pytest

from inspector.capture import SourceError, open_source
from line_helpers import free_port
from line_helpers import wait_for as shared_wait_for

FAKE_CAMERA = shutil.which("arv-fake-gv-camera-0.8")
try:
    import gi

    gi.require_version("Aravis", "0.8")
    from gi.repository import Aravis  # noqa: F401

    HAVE_ARAVIS = True
except (ImportError, ValueError):
    HAVE_ARAVIS = False

pytestmark = pytest.mark.skipif(not (FAKE_CAMERA and HAVE_ARAVIS),
                                reason="needs aravis-tools, gir1.2-aravis-0.8 and PyGObject (make sysdeps/setup)")


wait_for = functools.partial(shared_wait_for, interval=0.05)  # each condition asks the camera: poll gently


class FakeCamera:
    def __init__(self):
        self.process = None

    def start(self) -> None:
        self.process = subprocess.Popen([FAKE_CAMERA, "-i", "127.0.0.1"], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)

        def answers():
            if self.process.poll() is not None:
                raise AssertionError(f"the fake camera exited: {self.process.stdout.read()} (is another one "
                                     "serving 127.0.0.1:3956?)")
            try:
                source = open_source("genicam://127.0.0.1")
                source.open()
                source.close()
                return True
            except SourceError:
                return False

        wait_for(answers, 20, "the fake camera to answer", interval=0.2)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def camera():
    fake = FakeCamera()
    fake.start()
    try:
        yield fake
    finally:
        fake.kill()


def grab(source, timeout: float = 5.0):
    source.fire()
    return wait_for(source.read, timeout, "a triggered frame", interval=0.0)


def test_software_trigger_and_exposure_change_visible(camera):
    source = open_source("genicam://127.0.0.1?trigger=software&exposure_us=5000&pixel_format=Mono8")
    source.open()
    try:
        dark = grab(source)
        assert dark.image.shape == (512, 512, 3) and dark.frame_id.endswith(":000000")
        assert source.read() is None  # software trigger: no frame without a trigger
        source.apply_settings(exposure_us=50000)
        bright = grab(source)
        assert bright.image.mean() > dark.image.mean() + 20
        assert bright.captured_monotonic > dark.captured_monotonic
    finally:
        source.close()


def test_bad_specs_are_refused_by_name():
    with pytest.raises(SourceError, match="trigger='sometimes'"):
        open_source("genicam://127.0.0.1?trigger=sometimes")
    with pytest.raises(SourceError, match="unknown option"):
        open_source("genicam://127.0.0.1?exposure=5")


@pytest.mark.slow
def test_plc_triggered_camera_killed_and_restarted(camera, tmp_path):
    from inspector.service import Service, ServiceConfig
    from line_helpers import Plc

    golden = open_source("genicam://127.0.0.1?trigger=software&exposure_us=20000")
    golden.open()
    try:
        cv2.imwrite(str(tmp_path / "golden.png"), grab(golden).image)
    finally:
        golden.close()
    port = free_port()
    config = ServiceConfig(source="genicam://127.0.0.1?trigger=software&exposure_us=20000", http=None,
                           data_dir=tmp_path / "data", template=tmp_path / "golden.png", line="line1",
                           opcua=f"opc.tcp://127.0.0.1:{port}", capture_timeout_s=4.0, ack_timeout_s=30.0,
                           reconnect_initial_s=0.2, reconnect_max_s=1.0)
    service = Service(config)
    service.start()
    plc = Plc(f"opc.tcp://127.0.0.1:{port}")
    try:
        verdict, _ = plc.inspect("CAM-1")
        assert verdict in ("OK", "NG")
        camera.kill()
        assert plc.inspect("CAM-2", timeout=30)[0] == "ERROR"
        wait_for(lambda: any(a.kind == "camera_down" for a in service.recent_alarms), 30, "camera_down")
        camera.start()
        wait_for(lambda: any(a.kind == "camera_restored" for a in service.recent_alarms), 30, "camera_restored")
        assert plc.inspect("CAM-3")[0] in ("OK", "NG")
    finally:
        plc.close()
        service.stop()
    by_part = {r.part_id: r for r in service.journal.query(limit=10).items}
    assert set(by_part) == {"CAM-1", "CAM-2", "CAM-3"}
    assert by_part["CAM-2"].error.startswith("CaptureTimeout")
    assert by_part["CAM-1"].source == by_part["CAM-3"].source == "genicam://127.0.0.1?trigger=software&exposure_us=20000"
