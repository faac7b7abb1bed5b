"""Colours of the window: one per defect class (the same as ``inspector.runtime.draw`` uses for saved
images, so a snapshot and the live view agree), and the verdict colours."""
from __future__ import annotations

from PySide6.QtGui import QColor

# RGB of inspector.runtime.draw's BGR palette, in the same order; tests/apps/test_gui_logic.py checks they match.
CLASS_RGB = [(230, 0, 0), (0, 160, 0), (0, 80, 230), (255, 140, 0), (200, 0, 200), (0, 160, 160), (160, 40, 90)]

PASS_COLOUR = QColor(24, 150, 60)
NG_COLOUR = QColor(205, 30, 30)
NOT_JUDGED_COLOUR = QColor(110, 110, 110)
IDLE_COLOUR = QColor(70, 70, 70)
FALSE_CALL_COLOUR = QColor(150, 150, 150)
ERROR_BANNER = "#b71c1c"
WARNING_BANNER = "#e65100"
INFO_BANNER = "#1565c0"


def class_colour(class_id: int) -> QColor:
    return QColor(*CLASS_RGB[int(class_id) % len(CLASS_RGB)])
