"""The board's serial read from a code in the frame (inspector/service/serial_codes.py), on images made here
with zxing-cpp's own writer: Data Matrix, Code 128 and QR read back; only the configured formats; several
codes choose by format priority, then size, then reading order; grey and colour frames; a small Data Matrix
on a synthetic board; the setting refused with its name, the bad value and the known names; OpenCV's QR
reader, with one warning, when zxing-cpp cannot be imported."""
from __future__ import annotations

import logging
import sys

import cv2
import numpy as np
import pytest

from inspector.service import serial_codes
from inspector.service.serial_codes import (DEFAULT_CODE_FORMATS, SerialCodeReader, missing_decoder_note,
                                           parse_code_formats)
from line_helpers import code_image


def canvas(height: int = 480, width: int = 640) -> np.ndarray:
    return np.full((height, width), 255, np.uint8)


def paste(image: np.ndarray, code: np.ndarray, x: int, y: int) -> np.ndarray:
    image[y:y + code.shape[0], x:x + code.shape[1]] = code if image.ndim == 2 else code[..., None]
    return image


@pytest.mark.parametrize("code_format, name", [("DataMatrix", "datamatrix"), ("Code128", "code128"),
                                               ("QRCode", "qr")])
def test_each_default_format_reads_back(code_format, name):
    frame = paste(canvas(), code_image(code_format, "SN-2024-000117", scale=3), 40, 60)
    codes = SerialCodeReader().read_all(frame)
    assert [(code.text, code.format) for code in codes] == [("SN-2024-000117", name)]
    assert SerialCodeReader().read(frame) == "SN-2024-000117"


def test_a_frame_without_a_code_gives_none():
    from inspector.data.synth import generate_pair

    reader = SerialCodeReader()
    assert reader.read(canvas()) is None
    assert reader.read(generate_pair(np.random.default_rng(5)).tested) is None


def test_a_format_not_configured_is_not_read():
    matrix = paste(canvas(), code_image("DataMatrix", "SN-77"), 50, 50)
    label = paste(canvas(), code_image("Code39", "SN-77", scale=2), 20, 50)
    assert SerialCodeReader().read(label) is None  # Code 39 is not in the default formats
    assert SerialCodeReader(["qr", "code128"]).read(matrix) is None
    assert SerialCodeReader(["code39"]).read(label) == "SN-77"
    assert SerialCodeReader(["datamatrix"]).read(matrix) == "SN-77"


def test_several_codes_the_first_configured_format_wins_then_the_largest_then_reading_order(caplog):
    both = canvas()
    paste(both, code_image("QRCode", "QR-SUPPLIER", scale=5), 300, 40)  # larger, but of a later format
    paste(both, code_image("DataMatrix", "DM-BOARD", scale=3), 40, 300)
    assert SerialCodeReader(["datamatrix", "qr"]).read(both) == "DM-BOARD"
    assert SerialCodeReader(["qr", "datamatrix"]).read(both) == "QR-SUPPLIER"

    sizes = canvas()
    paste(sizes, code_image("DataMatrix", "DM-COMPONENT", scale=3), 20, 20)
    paste(sizes, code_image("DataMatrix", "DM-LABEL", scale=6), 300, 200)
    reader = SerialCodeReader(["datamatrix"])
    with caplog.at_level(logging.DEBUG, logger="inspector.service.serial_codes"):
        assert reader.read(sizes, "frame-1") == "DM-LABEL"
        assert reader.read(sizes, "frame-2") == "DM-LABEL"
    said = [(record.levelno, record.getMessage()) for record in caplog.records]
    assert said[0][0] == logging.WARNING and "frame-1: 2 datamatrix codes with different texts" in said[0][1]
    assert "chose 'DM-LABEL'" in said[0][1] and "'DM-COMPONENT'" in said[0][1]
    assert said[1][0] == logging.DEBUG  # warned once: a line whose boards always carry both is no fault

    panel = canvas(480, 800)  # a panel: the same code size on every board
    for number, (x, y) in enumerate([(520, 260), (40, 260), (520, 30), (40, 30)]):
        paste(panel, code_image("DataMatrix", f"PANEL-{number}", scale=4), x, y)
    assert reader.read(panel) == "PANEL-3"  # the topmost, then the leftmost
    assert [code.text for code in reader.read_all(panel)] == ["PANEL-3", "PANEL-2", "PANEL-1", "PANEL-0"]


def test_grey_and_colour_frames_alike():
    grey = paste(canvas(), code_image("DataMatrix", "SN-COLOUR-1", scale=3), 100, 100)
    bgr = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    bgr[..., 2] = np.maximum(bgr[..., 2], 40)  # a reddish board: still a colour frame, not three equal planes
    strided = np.zeros((bgr.shape[0], bgr.shape[1] * 2, 3), np.uint8)
    strided[:, ::2] = bgr  # strided[:, ::2] is the frame as a view that is not contiguous (a crop, a channel pick)
    reader = SerialCodeReader()
    for frame in (grey, grey[..., None], bgr, cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA), strided[:, ::2]):
        assert reader.read(frame) == "SN-COLOUR-1"
    assert reader.read(np.zeros((10, 10), np.float32), "odd-frame") is None  # refused, logged, never raised


def test_a_small_data_matrix_on_a_synthetic_board_is_read_after_jpeg():
    """Small Data Matrix codes at 3 pixels a module on a DeepPCB-like board, through JPEG: a square 12x12
    one printed dark on light (42 px with its quiet zone) and a rectangular 8x32 one laser-marked light on
    dark (the narrow kind marked on a board's edge)."""
    from inspector.data.synth import generate_pair

    board = generate_pair(np.random.default_rng(11)).tested
    printed, marked = board.copy(), board.copy()
    square = code_image("DataMatrix", "A7004211", scale=3)
    narrow = code_image("DataMatrix", "PCB-A7-004211", scale=3)
    assert square.shape == (42, 42) and narrow.shape == (30, 102)
    printed[570:570 + 42, 24:24 + 42] = square[..., None]
    marked[24:24 + 30, 500:500 + 102] = 255 - narrow[..., None]
    reader = SerialCodeReader()
    for frame, serial in ((printed, "A7004211"), (marked, "PCB-A7-004211")):
        ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok and reader.read(cv2.imdecode(jpeg, cv2.IMREAD_COLOR)) == serial


def test_the_text_is_cleaned_as_a_plc_part_id():
    long = "SN-" + "7" * 90
    frame = paste(canvas(), code_image("DataMatrix", long, scale=3), 20, 20)
    assert SerialCodeReader().read(frame) == long[:64]


def test_format_names_are_forgiving_in_spelling_and_strict_in_meaning():
    assert parse_code_formats("Data Matrix, code-128,QR,qr") == ("datamatrix", "code128", "qr")
    assert parse_code_formats(["code39", "DataBar"]) == ("code39", "databar")
    assert DEFAULT_CODE_FORMATS == parse_code_formats(list(DEFAULT_CODE_FORMATS))
    with pytest.raises(ValueError, match=r"unknown code format 'datamatrx' \(did you mean 'datamatrix'\?\); "
                                         r"known: datamatrix, qr, code128, code39"):
        parse_code_formats("datamatrx,qr")
    with pytest.raises(ValueError, match="expected at least one code format"):
        parse_code_formats(" , ")
    with pytest.raises(ValueError, match="expected code format names, got 5"):
        parse_code_formats([5])


def test_the_service_setting_refuses_an_unknown_format_naming_field_value_and_known_names(tmp_path):
    from inspector.service import ConfigError, ServiceConfig, load_config

    file = tmp_path / "inspector.yaml"
    file.write_text("source: demo\nhttp: ''\nread_serial_code: true\nserial_code_formats: [datamatrix, ean13]\n")
    with pytest.raises(ConfigError) as refused:
        load_config(file, environ={})
    message = str(refused.value)
    assert f"config field 'serial_code_formats' from {file}: unknown code format 'ean13'" in message
    assert "known: datamatrix, qr, code128, code39, code93, databar, pdf417, aztec" in message
    with pytest.raises(ConfigError, match="'serial_code_formats' from environment INSPECTOR_SERIAL_CODE_FORMATS: "
                                          "unknown code format 'datamatrx'"):
        load_config(None, environ={"INSPECTOR_SOURCE": "demo", "INSPECTOR_HTTP": "",
                                   "INSPECTOR_SERIAL_CODE_FORMATS": "datamatrx,qr"})
    config = load_config(None, environ={"INSPECTOR_SOURCE": "demo", "INSPECTOR_HTTP": "",
                                        "INSPECTOR_SERIAL_CODE_FORMATS": "code128, Data Matrix"})
    assert config.serial_code_formats == ("code128", "datamatrix")
    assert ServiceConfig(source="demo", http=None).serial_code_formats == DEFAULT_CODE_FORMATS


def test_without_zxing_cpp_qr_codes_are_still_read_with_opencv_and_one_warning(monkeypatch, caplog):
    qr = cv2.QRCodeEncoder.create().encode("SN-QR-ARM-1")
    frame = paste(canvas(), cv2.resize(qr, None, fx=5, fy=5, interpolation=cv2.INTER_NEAREST), 60, 60)
    matrix = paste(canvas(), code_image("DataMatrix", "SN-DM-1"), 60, 60)  # made while zxing-cpp is there
    monkeypatch.setitem(sys.modules, "zxingcpp", None)  # `import zxingcpp` now raises ImportError
    monkeypatch.setattr(serial_codes, "_fallback_warned", False)
    with caplog.at_level(logging.WARNING, logger="inspector.service.serial_codes"):
        reader = SerialCodeReader()
        assert reader.backend == "opencv"
        assert reader.read(frame) == "SN-QR-ARM-1"
        assert reader.read(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)) == "SN-QR-ARM-1"
        assert reader.read(matrix) is None
        assert SerialCodeReader(["datamatrix", "qr"]).read(frame) == "SN-QR-ARM-1"  # a second reader: no warning
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1 and "zxing-cpp is not installed" in warnings[0]
    assert "pip install zxing-cpp" in warnings[0]


def test_what_is_lost_without_zxing_cpp_is_said_in_one_sentence(monkeypatch):
    """The GUI's banner: nothing to say with zxing-cpp; without it, which formats are not read, or that none is."""
    assert missing_decoder_note(DEFAULT_CODE_FORMATS) is None
    monkeypatch.setitem(sys.modules, "zxingcpp", None)
    monkeypatch.setattr(serial_codes, "_fallback_warned", True)
    assert missing_decoder_note(DEFAULT_CODE_FORMATS) == ("zxing-cpp is not installed: serials are read from QR codes "
                                                          "only, not datamatrix, code128 (pip install zxing-cpp)")
    assert missing_decoder_note(["qr"]) == "zxing-cpp is not installed: serials are read from QR codes only " \
                                           "(pip install zxing-cpp)"
    assert missing_decoder_note(["Data Matrix"]) == ("zxing-cpp is not installed: no serial can be read from "
                                                     "datamatrix codes (pip install zxing-cpp)")
