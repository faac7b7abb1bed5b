"""The hot folder against hostile or odd files, at the source level (no model): each costs bounded work,
is refused once with the rule it broke named, and never stops the folder. The end-to-end version, with
the service, its records and its memory measured, is in tests/apps/test_service.py."""
from __future__ import annotations

import os
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.capture import CorruptFrame, HotFolderSource
from inspector.capture.image_header import HeaderError, read_header


def source_for(folder: Path, **options) -> HotFolderSource:
    settings = dict(settle_seconds=0.0, pair_wait_seconds=0.0, abandon_seconds=60.0, rescan_seconds=0.0) | options
    source = HotFolderSource(folder, **settings)
    source.open()
    return source


def encoded(extension: str, level: int = 90, size: tuple[int, int] = (48, 64)) -> bytes:
    ok, data = cv2.imencode(extension, np.full((*size, 3), level, np.uint8))
    assert ok
    return data.tobytes()


def png_declaring(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def backdate(path: Path | bytes, seconds: float = 30.0) -> None:
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp))


@pytest.mark.parametrize("extension", [".png", ".jpg", ".tif", ".bmp"])
def test_header_gives_the_size_and_completeness_without_decoding(tmp_path, extension):
    data = encoded(extension, size=(30, 50))
    path = tmp_path / f"board{extension}"
    path.write_bytes(data)
    header = read_header(path, len(data))
    assert (header.width, header.height, header.complete) == (50, 30, True)
    path.write_bytes(data[: len(data) // 2])
    try:
        assert not read_header(path, len(data) // 2).complete
    except HeaderError as error:  # a TIFF's directory comes last: no header yet is also "not complete"
        assert not error.finished


def test_a_template_over_the_pixel_budget_fails_its_board_naming_the_limit(tmp_path):
    (tmp_path / "a_test.png").write_bytes(encoded(".png"))
    (tmp_path / "a_temp.png").write_bytes(png_declaring(30000, 30000))
    (tmp_path / "b.png").write_bytes(encoded(".png"))
    for name in ("a_test.png", "a_temp.png"):
        backdate(tmp_path / name, 60)
    backdate(tmp_path / "b.png", 30)
    source = source_for(tmp_path, max_image_pixels=10_000_000)
    with pytest.raises(CorruptFrame, match=r"a_test\.png: its template .*a_temp\.png: PNG of 30000 x 30000 = "
                                           r"900000000 pixels, over the limit max_image_pixels=10000000"):
        source.read()
    assert source.read().frame_id == "b.png"  # the next board is not held up


def test_a_name_that_is_not_utf8_is_inspected_once_even_across_a_restart(tmp_path):
    raw = os.path.join(os.fsencode(tmp_path), b"\xff\xfeboard.png")
    with open(raw, "wb") as handle:
        handle.write(encoded(".png"))
    backdate(raw)
    source = source_for(tmp_path)
    frame = source.read()
    assert frame.frame_id == "\\xff\\xfeboard.png" and frame.image.shape == (48, 64, 3)
    source.ack(frame)
    source.close()
    again = source_for(tmp_path)
    assert again.read() is None  # remembered by the ledger under its bytes
    assert [status for *_, status, _ in again.ledger.entries()] == ["done"]


@pytest.mark.parametrize("extension", [".tif", ".png", ".jpg", ".bmp"])
def test_a_file_written_in_chunks_is_one_frame_when_whole(tmp_path, extension):
    data = encoded(extension, size=(120, 160))
    path = tmp_path / f"slow{extension}"
    source = source_for(tmp_path)  # settle 0: every chunk looks settled; only the TIFF's own structure tells
    cuts = sorted(set(range(1, len(data), 37)) | set(range(max(1, len(data) - 80), len(data))))
    for end in cuts:  # cut anywhere, the last bytes each: never a frame, never a failure
        path.write_bytes(data[:end])
        assert source.read() is None, end
    path.write_bytes(data)
    frame = source.read()
    assert frame.frame_id == f"slow{extension}" and frame.image.shape == (120, 160, 3)


def test_size_cap_and_symlinks_out_of_the_folder_are_refused_links_inside_followed(tmp_path):
    folder = tmp_path / "incoming"
    folder.mkdir()
    (folder / "big.png").write_bytes(encoded(".png") + b"\0" * 5000)
    outside = tmp_path / "secret.png"
    outside.write_bytes(encoded(".png"))
    (folder / "out.png").symlink_to(outside)
    (folder / "sub").mkdir()
    (folder / "sub" / "real.png").write_bytes(encoded(".png"))
    (folder / "in.png").symlink_to(folder / "sub" / "real.png")
    for index, name in enumerate(("big.png", "out.png", "in.png")):
        os.utime(folder / name, (time.time() - 60 + index, time.time() - 60 + index), follow_symlinks=False)
    backdate(outside, 59)
    backdate(folder / "sub" / "real.png", 58)
    source = source_for(folder, max_file_bytes=4000)
    failures = []
    frames = []
    for _ in range(3):
        try:
            frames.append(source.read().frame_id)
        except CorruptFrame as error:
            failures.append(str(error))
    assert frames == ["in.png"]
    assert any("big.png: " in f and "over the limit max_file_bytes=4000" in f for f in failures), failures
    assert any("out.png: a symbolic link to" in f and "outside the hot folder" in f for f in failures), failures
