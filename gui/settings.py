"""Settings that persist between runs: one JSON file, written atomically.

Where: ``$INSPECTOR_GUI_CONFIG`` if set (tests point it at a temporary file), else
``$XDG_CONFIG_HOME/pcb-inspector/gui.json`` (``~/.config/...``). Evidence and reviews default to
``$XDG_DATA_HOME/pcb-inspector/`` (``~/.local/share/...``).

A file that cannot be read is moved aside to ``gui.json.unreadable`` (so nothing is lost) and the
defaults are used; ``load_settings`` says so in its message for the window to show.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from gui.evidence import atomic_write_json
from inspector.config_base import ConfigBase, setting
from inspector.service.serial_codes import CODE_FORMATS, DEFAULT_CODE_FORMATS

CONFIG_ENV = "INSPECTOR_GUI_CONFIG"


def _xdg(variable: str, fallback: str) -> Path:
    return Path(os.environ.get(variable) or Path.home() / fallback) / "pcb-inspector"


def default_config_path() -> Path:
    return Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else _xdg("XDG_CONFIG_HOME", ".config") / "gui.json"


def _default_threads() -> int:
    # leave a core for capture and the window
    return max(1, min(4, (os.cpu_count() or 2) - 1))


@dataclass
class GuiSettings(ConfigBase):
    """Checked against the annotations on construction (``ConfigBase``): a saved value of the wrong type is
    refused with the field's name."""

    source: str = "demo"  # camera index, video file, stream URL, image folder, or "demo"
    model: str = ""  # model package folder; "" = the shipped default
    backend: str = "lite"
    threads: int = field(default_factory=_default_threads)
    global_threshold: float | None = None  # None: the package's own score threshold
    per_class_thresholds: dict[str, float] = field(default_factory=dict)
    template: str = ""  # golden template image for sources whose frames carry none
    align: bool = True  # register frames to that template first (camera frames are not pre-aligned)
    show_overlay: bool = False  # draw the template's edges over the live frame
    flag_changes: bool = True  # flag where a board differs from its template and no detection explains it
    evidence_dir: str = field(default_factory=lambda: str(_xdg("XDG_DATA_HOME", ".local/share") / "evidence"))
    review_dir: str = field(default_factory=lambda: str(_xdg("XDG_DATA_HOME", ".local/share") / "reviews"))
    window_geometry: str = ""  # Qt's saveGeometry(), base64
    recipes_dir: str = ""  # folder of recipe files (inspector recipe list), as the service's ``recipes``
    recipe: str = ""  # the active recipe's name: loaded again at start-up
    read_serial_code: bool = False  # read a board's serial from a code in the frame when none was scanned
    # the codes read for it, in priority order: as the service's serial_code_formats (inspector/service/serial_codes)
    serial_code_formats: list[str] = setting(default_factory=lambda: list(DEFAULT_CODE_FORMATS),
                                             choices=CODE_FORMATS, non_empty=True)
    engineers: dict[str, str] = field(default_factory=dict)  # name -> PIN/token hash (python -m gui.access NAME)
    engineer_unlock_minutes: float = 15.0  # an engineer login lasts this long (Lock ends it sooner)
    review_queue: str = ""  # the line service's verification queue, <data_dir>/review.sqlite3 ("" = ask)
    operator_name: str = ""  # who decides queued boards when no engineer is logged in ("" = the login name)
    audit_db: str = field(default_factory=lambda: str(_xdg("XDG_DATA_HOME", ".local/share") / "audit.sqlite3"))


def load_settings(path: Path) -> tuple[GuiSettings, str]:
    """The saved settings (defaults for what is missing) and a message; the message is '' when all is well."""
    path = Path(path)
    if not path.exists():
        return GuiSettings(), ""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(content, dict):
            raise ValueError(f"expected a JSON object, got {type(content).__name__}")
        return _from_dict(content), ""
    except (OSError, ValueError, TypeError) as error:
        aside = path.with_name(path.name + ".unreadable")
        try:
            os.replace(path, aside)
            where = f"moved to {aside}"
        except OSError:
            where = "left in place"
        return GuiSettings(), f"settings file {path} could not be read ({error}); {where}, defaults used"


def _from_dict(content: dict) -> GuiSettings:
    """The saved values (a key this version does not know, e.g. from a newer one, is ignored)."""
    known = {spec.name for spec in fields(GuiSettings)}
    return GuiSettings(**{name: value for name, value in content.items() if name in known})


def save_settings(path: Path, settings: GuiSettings) -> None:
    atomic_write_json(Path(path), settings.to_dict())
