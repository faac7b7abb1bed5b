"""cv2 and PySide6 live in one process on a real X display (Xvfb), not only offscreen.

opencv-python bundles its own Qt plugins and sets QT_QPA_PLATFORM_PLUGIN_PATH, which breaks PySide6's
xcb platform; the project installs opencv-python-headless instead. This test shows a cv2-decoded image in
a Qt window on Xvfb and reads the real screen back.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from inspector.data.bundled import BUNDLED_DEEPPCB

CHILD = textwrap.dedent(
    """
    import sys
    import cv2
    import numpy as np
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPixmap
    from PySide6.QtWidgets import QApplication, QLabel

    app = QApplication(sys.argv)
    assert QGuiApplication.platformName() == "xcb", QGuiApplication.platformName()
    image = cv2.imread(sys.argv[1], cv2.IMREAD_COLOR)
    image = cv2.resize(image, (320, 320), interpolation=cv2.INTER_AREA)
    rgb = np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    qimage = QImage(rgb.data, 320, 320, 3 * 320, QImage.Format.Format_RGB888)
    label = QLabel()
    label.setPixmap(QPixmap.fromImage(qimage))
    label.setWindowFlag(Qt.WindowType.FramelessWindowHint)
    label.setGeometry(0, 0, 320, 320)
    label.show()
    for _ in range(50):
        app.processEvents()
    shot = app.primaryScreen().grabWindow(0).toImage().convertToFormat(QImage.Format.Format_RGB888)
    ptr = shot.constBits()
    screen = np.frombuffer(ptr, np.uint8).reshape(shot.height(), shot.bytesPerLine())[:, : shot.width() * 3]
    screen = screen.reshape(shot.height(), shot.width(), 3)[:320, :320]
    cv2.imwrite(sys.argv[2], cv2.cvtColor(screen, cv2.COLOR_RGB2BGR))
    print("mean_abs_diff", float(np.abs(screen.astype(int) - rgb.astype(int)).mean()))
    """
)


@pytest.fixture()
def xvfb_display():
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.fail("Xvfb is not installed: run `make sysdeps` (the Makefile's test target does it as root)")
    display = f":{90 + os.getpid() % 100}"
    proc = subprocess.Popen([xvfb, display, "-screen", "0", "640x480x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    socket = Path(f"/tmp/.X11-unix/X{display[1:]}")
    deadline = time.time() + 10
    while not socket.exists() and time.time() < deadline:
        time.sleep(0.1)
    assert socket.exists(), f"Xvfb did not start on {display}"
    yield display
    proc.terminate()
    proc.wait(timeout=10)


def test_cv2_image_shown_by_pyside6_on_xvfb(xvfb_display, tmp_path):
    image = next(BUNDLED_DEEPPCB.glob("**/*_test.jpg"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    env.update(DISPLAY=xvfb_display, QT_QPA_PLATFORM="xcb")
    shot = tmp_path / "screen.png"
    result = subprocess.run([sys.executable, "-c", CHILD, str(image), str(shot)], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    diff = float(result.stdout.split("mean_abs_diff")[1])
    assert diff < 2.0, f"screen differs from the decoded image by {diff} on average"
    assert shot.stat().st_size > 1000
