"""``run_gui``: what ``inspector gui`` starts."""
from __future__ import annotations

import signal
import sys
from pathlib import Path

from gui.settings import default_config_path, load_settings


def run_gui(model: str | None = None, source: str | None = None, fps: float | None = None,
            config: Path | None = None) -> int:
    """Open the window (``model``/``source`` override the saved settings and are saved); returns the exit code.

    SIGTERM and Ctrl-C close the window as its close button would (settings saved, evidence finished).
    On exit one line goes to stderr: boards judged, frame rate, capture-to-screen latency, dropped frames.
    """
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from gui.main_window import MainWindow

    config_path = Path(config) if config is not None else default_config_path()
    settings, message = load_settings(config_path)
    if model is not None:
        settings.model = str(model)
    if source is not None:
        settings.source = str(source)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("PCB inspector")
    window = MainWindow(settings, config_path, fps=fps, startup_message=message)
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: window.close())
    wake = QTimer(interval=200)  # Python runs signal handlers only when it gets control back from Qt
    wake.timeout.connect(lambda: None)
    wake.start()
    window.show()
    code = app.exec()
    print(f"inspector gui: {window.performance_summary()}", file=sys.stderr, flush=True)
    return code
