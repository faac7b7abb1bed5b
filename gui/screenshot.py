"""Run ``inspector gui`` on a real X server (Xvfb), save a screenshot, print frame rate and latency.

    python -m gui.screenshot --out docs/gui-screenshot.png [--seconds 8] [--fps 30] [--model PKG]

1. starts Xvfb on a free display (or uses ``--display`` if one is running),
2. starts ``inspector gui --source demo`` on it as its own process, with settings, evidence and reviews
   in a temporary folder (the operator's own settings are not touched),
3. after ``--seconds`` grabs the X screen (what a person would see), crops it to the window, saves a PNG,
4. stops the GUI with SIGTERM, which closes it as the close button would; the GUI then prints its
   measurements (frames shown, FPS, latency from ``Frame.captured_monotonic`` to the first paint of that
   frame with its boxes, model time, dropped frames), and this script prints that line.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gui.settings import GuiSettings, save_settings

SCREEN = (1600, 1000)
SUMMARY_PREFIX = "inspector gui: "


def free_display() -> str:
    for number in range(99, 200):
        if not Path(f"/tmp/.X11-unix/X{number}").exists() and not Path(f"/tmp/.X{number}-lock").exists():
            return f":{number}"
    raise RuntimeError("no free X display number between :99 and :199")


def start_xvfb(display: str) -> subprocess.Popen:
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        raise RuntimeError("Xvfb is not installed (make sysdeps installs it)")
    process = subprocess.Popen([xvfb, display, "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24", "-nolisten", "tcp"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    socket = Path(f"/tmp/.X11-unix/X{display[1:]}")
    deadline = time.monotonic() + 15
    while not socket.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"Xvfb did not start on {display}")
        time.sleep(0.1)
    return process


def inspector_command() -> list[str]:
    script = Path(sys.executable).with_name("inspector")
    return [str(script)] if script.is_file() else [sys.executable, "-c", "from inspector.cli import main; main()"]


def grab_screen(display: str, out: Path) -> tuple[int, int]:
    """Save the X screen, cropped to what is drawn on it (the window), as PNG; returns its size."""
    os.environ["DISPLAY"] = display
    os.environ["QT_QPA_PLATFORM"] = "xcb"
    import numpy as np
    from PySide6.QtGui import QGuiApplication, QImage

    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])
    if QGuiApplication.platformName() != "xcb":
        raise RuntimeError(f"expected to grab a real X screen, but Qt runs on {QGuiApplication.platformName()}")
    shot = app.primaryScreen().grabWindow(0).toImage().convertToFormat(QImage.Format.Format_RGB888)
    width, height = shot.width(), shot.height()
    rows = np.frombuffer(shot.constBits(), np.uint8).reshape(height, shot.bytesPerLine())[:, : width * 3]
    drawn = np.argwhere(rows.reshape(height, width, 3).max(axis=2) > 0)  # Xvfb's empty screen is black
    if len(drawn) == 0:
        raise RuntimeError("the X screen is empty: the GUI showed no window")
    (top, left), (bottom, right) = drawn.min(axis=0), drawn.max(axis=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    shot.copy(int(left), int(top), int(right - left + 1), int(bottom - top + 1)).save(str(out), "PNG")
    return int(right - left + 1), int(bottom - top + 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/gui-screenshot.png"))
    parser.add_argument("--seconds", type=float, default=8.0, help="how long the GUI runs before the screenshot")
    parser.add_argument("--source", default="demo")
    parser.add_argument("--fps", type=float, default=None, help="pace of the demo (default: its own 2 frames/s)")
    parser.add_argument("--model", default=None, help="model package (default: the shipped one)")
    parser.add_argument("--display", default=None, help="use this running X server instead of starting Xvfb")
    args = parser.parse_args(argv)

    xvfb = None
    display = args.display or free_display()
    if args.display is None:
        xvfb = start_xvfb(display)
    work = Path(tempfile.mkdtemp(prefix="gui-screenshot-"))
    try:
        config = work / "gui.json"
        save_settings(config, GuiSettings(source=args.source, evidence_dir=str(work / "evidence"),
                                          review_dir=str(work / "reviews")))
        command = inspector_command() + ["gui", "--source", args.source, "--config", str(config)]
        if args.fps is not None:
            command += ["--fps", str(args.fps)]
        if args.model is not None:
            command += ["--model", args.model]
        env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
        env.update(DISPLAY=display, QT_QPA_PLATFORM="xcb")
        started = time.monotonic()
        gui = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while time.monotonic() - started < args.seconds:
            if gui.poll() is not None:
                raise RuntimeError(f"inspector gui exited early ({gui.returncode}):\n{gui.stderr.read()[-3000:]}")
            time.sleep(0.2)
        size = grab_screen(display, args.out)
        gui.send_signal(signal.SIGTERM)
        _, errors = gui.communicate(timeout=60)
        summary = [line for line in errors.splitlines() if line.startswith(SUMMARY_PREFIX)]
        if gui.returncode != 0 or not summary:
            raise RuntimeError(f"inspector gui ended with {gui.returncode} and no summary:\n{errors[-3000:]}")
        print(f"screenshot: {args.out} ({size[0]}x{size[1]}) after {args.seconds:g} s on {display} "
              f"(command: {' '.join(command[-6:])})")
        print(summary[-1][len(SUMMARY_PREFIX):])
        return 0
    finally:
        if "gui" in locals() and gui.poll() is None:
            gui.kill()
        if xvfb is not None:
            xvfb.terminate()
            xvfb.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
