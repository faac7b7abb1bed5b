"""A board's serial read from a code in the frame: Data Matrix, QR, Code 128 and a few more (zxing-cpp), for
the line service and the operator GUI alike.

PCB serials are mostly Data Matrix codes laser-marked or printed on the board, or Code 128 labels; QR codes
are the exception. When the PLC (service) or the operator (GUI) gives no part id, the serial is read here,
once per frame, and becomes the record's ``part_id`` (and, with ``recipe_by_part_id``, chooses the recipe).

Why this module lives in ``inspector/service/``: a serial is the service's part id by another route. Its text
follows the PLC's PartId rules (``plc.handshake._clean_part_id``: printable, at most 64 characters) and its
setting is a ``ServiceConfig`` field (``serial_code_formats``). The GUI is an app of the same layer and
already takes the service's rules from here (recipes, users, audit trail), so a board gets the same id at the
line and at the operator's desk. The runtime (frames in, detections out) has no use for serials and, being a
lower layer, cannot import this.

Several codes in one frame (a panel's boards, a label beside a component's code): one is chosen, never
refused, since a board with a label and coded components would otherwise never get a serial. The order:

1. the earliest format in the configured order: the site says which code is the serial (``datamatrix``
   before ``qr``: a supplier's QR code on a component never outranks the board's own Data Matrix);
2. then the largest code (area of its corners, in pixels): a board's label or marking is larger than the
   codes of the parts placed on it;
3. then the topmost, then the leftmost (reading order), then the text: the same frame gives the same serial
   every time, whatever order the decoder found the codes in.

When the chosen format holds codes with different texts, the choice is logged (a warning the first time per
reader, then at debug level: a line whose frames always carry a label and component codes is no fault).

Cheap on a line: zxing-cpp searches the configured formats only; a colour frame is turned grey once; a
reader is built once per set of formats (``serial_reader``) and reads each frame once.

Without zxing-cpp (a box the wheel does not exist for): OpenCV's QR reader, QR codes only, with one warning
that names the package to install; nothing crashes.
"""
from __future__ import annotations

import difflib
import functools
import logging
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Optional

import cv2
import numpy as np

from inspector.service.plc.handshake import _clean_part_id

log = logging.getLogger(__name__)

# Setting name -> zxing-cpp format (a family: "qr" is QR, Micro QR and rMQR; "databar" is GS1 DataBar
# Omni, Limited and Expanded). zxing-cpp reports a code's family as its ``symbology``.
CODE_FORMATS: dict[str, str] = {
    "datamatrix": "DataMatrix",
    "qr": "QRCode",
    "code128": "Code128",
    "code39": "Code39",
    "code93": "Code93",
    "databar": "DataBar",
    "pdf417": "PDF417",
    "aztec": "Aztec",
}
CODE_FORMAT_LABELS: dict[str, str] = {  # as people say them (the GUI's menu)
    "datamatrix": "Data Matrix", "qr": "QR (also Micro QR, rMQR)", "code128": "Code 128", "code39": "Code 39",
    "code93": "Code 93", "databar": "GS1 DataBar", "pdf417": "PDF417", "aztec": "Aztec",
}
DEFAULT_CODE_FORMATS: tuple[str, ...] = ("datamatrix", "qr", "code128")
ZXING_PACKAGE = "zxing-cpp"

_fallback_warned = False  # the warning that zxing-cpp is missing: once per process
_fallback_lock = threading.Lock()


def parse_code_formats(value: Any) -> tuple[str, ...]:
    """Setting names in priority order, from a list or a comma-separated string ("datamatrix,qr").

    Spelling is forgiven ("Data Matrix", "code-128", "QR" are datamatrix, code128, qr); repeats are dropped.
    ValueError names a bad value and the known names; no name at all is refused too (to read no code, leave
    read_serial_code off)."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ValueError(f"expected a list of code formats or a comma-separated string, got {value!r}")
    names: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"expected code format names, got {item!r}; known: {', '.join(CODE_FORMATS)}")
        name = "".join(char for char in item.lower() if char not in " -_")
        if not name and isinstance(value, str):
            continue  # "datamatrix, qr," or an empty variable: no name there
        if name not in CODE_FORMATS:
            close = difflib.get_close_matches(name, CODE_FORMATS, n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"unknown code format {item!r}{hint}; known: {', '.join(CODE_FORMATS)}")
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError(f"expected at least one code format of {', '.join(CODE_FORMATS)} (to read no code, "
                         "leave read_serial_code off)")
    return tuple(names)


@dataclass(frozen=True)
class BoardCode:
    """One code read from a frame."""

    text: str  # cleaned as a PLC PartId is
    format: str  # its setting name (datamatrix, qr, ...)
    area: float  # of the quadrilateral its corners span, in pixels
    top_left: tuple[int, int]  # (x, y) of its bounding box

    def sort_key(self, priority: dict[str, int]) -> tuple:
        """The documented choice (module docstring): format priority, larger first, reading order, text."""
        return priority[self.format], -self.area, self.top_left[1], self.top_left[0], self.text


def _grey(image: np.ndarray) -> np.ndarray:
    """A contiguous 8-bit grey image of a grey, BGR or BGRA frame: one conversion, whatever the decoder."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected an 8-bit image, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    elif image.ndim == 3 and image.shape[2] in (3, 4):
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)
    elif image.ndim != 2:
        raise ValueError(f"expected a grey or colour image, got shape {image.shape}")
    return np.ascontiguousarray(image)


def _load_zxing():
    """The zxingcpp module, or None (with one warning per process) when it cannot be imported."""
    global _fallback_warned
    try:
        import zxingcpp
    except ImportError as error:
        with _fallback_lock:
            if not _fallback_warned:
                _fallback_warned = True
                log.warning("serial codes: %s is not installed (%s); reading QR codes only, with OpenCV. "
                            "Install it (pip install %s) to read Data Matrix, Code 128 and the other "
                            "serial_code_formats", ZXING_PACKAGE, error, ZXING_PACKAGE)
        return None
    return zxingcpp


def missing_decoder_note(formats: Iterable[str]) -> Optional[str]:
    """What a user must be told when zxing-cpp cannot be imported and codes of ``formats`` are to be read
    (OpenCV then reads QR codes only), in one sentence; None when zxing-cpp is there."""
    if _load_zxing() is not None:
        return None
    formats = parse_code_formats(list(formats))
    lost = [name for name in formats if name != "qr"]
    if "qr" not in formats:
        return (f"{ZXING_PACKAGE} is not installed: no serial can be read from {', '.join(formats)} codes "
                f"(pip install {ZXING_PACKAGE})")
    read = "QR codes only" + (f", not {', '.join(lost)}" if lost else "")
    return f"{ZXING_PACKAGE} is not installed: serials are read from {read} (pip install {ZXING_PACKAGE})"


class SerialCodeReader:
    """Reads the codes of the configured formats from a frame and chooses the board's serial among them."""

    def __init__(self, formats: Iterable[str] = DEFAULT_CODE_FORMATS) -> None:
        self.formats = parse_code_formats(list(formats))
        self._priority = {name: rank for rank, name in enumerate(self.formats)}
        self._zxing = _load_zxing()
        self._ambiguity_warned = False
        if self._zxing is not None:
            # Plain ints, not zxing-cpp objects: a binding object still alive when the interpreter exits (this
            # reader is cached) makes nanobind print leak reports on every exit of the service and the GUI.
            self._names = {int(getattr(self._zxing.BarcodeFormat, CODE_FORMATS[name])): name for name in self.formats}
        elif "qr" not in self.formats:
            log.warning("serial codes: without %s none of serial_code_formats (%s) can be read; no serial will "
                        "be read from frames", ZXING_PACKAGE, ", ".join(self.formats))

    @property
    def backend(self) -> str:
        """The decoder: "zxing-cpp", or "opencv" (QR codes only) when zxing-cpp is missing."""
        return ZXING_PACKAGE if self._zxing is not None else "opencv"

    def read_all(self, image: np.ndarray) -> list[BoardCode]:
        """Every code of the configured formats with a non-empty text, the chosen one first."""
        grey = _grey(image)
        codes = self._read_zxing(grey) if self._zxing is not None else self._read_opencv(grey)
        return sorted(codes, key=lambda code: code.sort_key(self._priority))

    def read(self, image: np.ndarray, where: str = "frame") -> Optional[str]:
        """The board's serial (the chosen code's text), or None when no code of the formats is readable.

        Never raises for a frame: a frame the decoder refuses is logged with ``where`` and gives None."""
        try:
            codes = self.read_all(image)
        except (ValueError, RuntimeError, cv2.error) as error:
            log.warning("%s: serial code not read: %s", where, error)
            return None
        if not codes:
            return None
        chosen = codes[0]
        others = sorted({code.text for code in codes if code.format == chosen.format and code.text != chosen.text})
        if others:
            level = logging.DEBUG if self._ambiguity_warned else logging.WARNING
            self._ambiguity_warned = True
            log.log(level, "%s: %d %s codes with different texts; chose %r (largest, then topmost/leftmost), not "
                    "%s", where, len(others) + 1, chosen.format, chosen.text, ", ".join(map(repr, others)))
        return chosen.text

    def _read_zxing(self, grey: np.ndarray) -> list[BoardCode]:
        z = self._zxing
        codes = []
        for barcode in z.read_barcodes(grey, formats=z.BarcodeFormats([z.BarcodeFormat(v) for v in self._names])):
            name = self._names.get(int(barcode.symbology))  # the family: QR for a Micro QR code
            text = _clean_part_id(barcode.text)
            if name is None or not text:
                continue
            position = barcode.position
            corners = np.array([(p.x, p.y) for p in (position.top_left, position.top_right, position.bottom_right,
                                                     position.bottom_left)], dtype=np.float64)
            codes.append(_code(text, name, corners))
        return codes

    def _read_opencv(self, grey: np.ndarray) -> list[BoardCode]:
        if "qr" not in self.formats:
            return []
        text, corners, _ = cv2.QRCodeDetector().detectAndDecode(grey)
        text = _clean_part_id(text)
        if not text or corners is None:
            return []
        return [_code(text, "qr", np.asarray(corners, dtype=np.float64).reshape(-1, 2))]


def _code(text: str, name: str, corners: np.ndarray) -> BoardCode:
    x, y = corners[:, 0], corners[:, 1]
    area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))  # shoelace
    return BoardCode(text, name, area, (int(round(x.min())), int(round(y.min()))))


@functools.lru_cache(maxsize=8)
def serial_reader(formats: tuple[str, ...] = DEFAULT_CODE_FORMATS) -> SerialCodeReader:
    """One reader per set of formats, built on first use (the GUI asks for it on every frame)."""
    return SerialCodeReader(formats)
