"""What an image file's header says (width, height) and whether the file is whole, without decoding it.

Why: decoding allocates width x height x 3 bytes before a single pixel is checked, so a 1 MB PNG that
declares 20000 x 20000 pixels costs 1.2 GB (cv2's own limit is 2^30 pixels, and only read once per
process). The hot folder reads the header first and refuses an image over its pixel budget, and it
checks that a file is complete from a few bytes (its header and its tail), so a large truncated file
is never read whole again and again while it waits to be abandoned.

Pillow's format plugins read the headers: constructing ``PngImageFile`` (etc.) directly parses only the
header and skips ``Image.open``'s process-wide decompression-bomb check, so the budget here is the only one.
"""
from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass

from PIL import BmpImagePlugin, JpegImagePlugin, PngImagePlugin, TiffImagePlugin

_TAIL_BYTES = 64
_PLUGINS = (  # (magic bytes, plugin class, format name)
    (b"\x89PNG\r\n\x1a\n", PngImagePlugin.PngImageFile, "PNG"),
    (b"\xff\xd8", JpegImagePlugin.JpegImageFile, "JPEG"),
    (b"II*\x00", TiffImagePlugin.TiffImageFile, "TIFF"),
    (b"MM\x00*", TiffImagePlugin.TiffImageFile, "TIFF"),
    (b"II+\x00", TiffImagePlugin.TiffImageFile, "TIFF"),  # BigTIFF
    (b"MM\x00+", TiffImagePlugin.TiffImageFile, "TIFF"),
    (b"BM", BmpImagePlugin.BmpImageFile, "BMP"),
)
# Bytes per value of each TIFF field type (BYTE, ASCII, SHORT, LONG, RATIONAL ... LONG8, SLONG8, IFD8).
_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8,
                    18: 8}
# TIFF tags naming where the image data lies: a TIFF is whole when every strip or tile is inside the file.
_STRIP_OFFSETS, _STRIP_BYTE_COUNTS, _TILE_OFFSETS, _TILE_BYTE_COUNTS = 273, 279, 324, 325


class HeaderError(ValueError):
    """The file does not start like a PNG/JPEG/TIFF/BMP image, or its header cannot be parsed.

    ``format`` is the format its signature names (None: unknown). ``finished``: the file ends as its format
    ends (a JPEG's or PNG's end marker is there), so the writer is done and the header is simply bad; a
    file without its end may still be being written."""

    def __init__(self, message: str, format: str | None = None, finished: bool = False):
        super().__init__(message)
        self.format = format
        self.finished = finished


@dataclass(frozen=True)
class ImageHeader:
    format: str  # "PNG" | "JPEG" | "TIFF" | "BMP"
    width: int
    height: int
    complete: bool  # its end marker is there, or (TIFF, BMP) every byte its header points at

    @property
    def pixels(self) -> int:
        return self.width * self.height


def read_header(path: os.PathLike | str, size: int) -> ImageHeader:
    """The header of the ``size``-byte image file at ``path``. Reads the header (Pillow stops at the first
    frame's dimensions) and the last bytes only. Raises HeaderError (unknown or unparsable), or OSError
    when the file cannot be opened (it vanished).

    A TIFF or BMP being written may not be parsable yet (libtiff writes the directory last): HeaderError
    then, and the caller decides how long to wait before calling the file corrupt.
    """
    with open(path, "rb") as handle:
        magic = handle.read(8)
        plugin = next(((cls, name) for prefix, cls, name in _PLUGINS if magic.startswith(prefix)), None)
        if plugin is None:
            raise HeaderError("not a PNG, JPEG, TIFF or BMP file (unknown signature)")
        cls, name = plugin
        handle.seek(0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Pillow warns on the odd EXIF of a partial TIFF
                image = cls(handle)
                width, height = image.size
                complete = _complete(name, image, handle, size)
        # Pillow reports a header cut short as OSError ("Truncated File Read") or SyntaxError.
        except (OSError, SyntaxError, struct.error, ValueError, IndexError, KeyError, TypeError, EOFError) as error:
            finished = name in ("JPEG", "PNG") and _ends(name, handle, size)
            raise HeaderError(f"{name} header unreadable ({error})", name, finished) from None
    if width <= 0 or height <= 0:
        raise HeaderError(f"{name} header states {width} x {height} pixels", name)
    return ImageHeader(name, int(width), int(height), complete)


def _complete(name: str, image, handle, size: int) -> bool:
    if name == "TIFF":
        if not _tiff_directory_inside(handle, size):
            return False
        tags = image.tag_v2
        offsets = tags.get(_STRIP_OFFSETS) or tags.get(_TILE_OFFSETS)
        counts = tags.get(_STRIP_BYTE_COUNTS) or tags.get(_TILE_BYTE_COUNTS)
        if not offsets or not counts:
            return False
        if isinstance(offsets, int):
            offsets, counts = (offsets,), (counts,)
        return max(offset + count for offset, count in zip(offsets, counts)) <= size
    if name == "BMP":
        handle.seek(2)
        stated = struct.unpack("<I", handle.read(4))[0]
        return stated == 0 or size >= stated  # some writers leave the size field 0
    return _ends(name, handle, size)


def _tiff_directory_inside(handle, size: int) -> bool:
    """Whether the first image directory (its entry count, entries and next-directory offset) lies wholly
    inside the file: libtiff writes it last, and a directory cut short can still parse."""
    handle.seek(0)
    head = handle.read(16)
    order = "<" if head[:2] == b"II" else ">"
    if struct.unpack(order + "H", head[2:4])[0] == 43:  # BigTIFF: 8-byte offsets and counts, 20-byte entries
        offset = struct.unpack(order + "Q", head[8:16])[0]
        count_size, entry_size, next_size = 8, 20, 8
    else:
        offset = struct.unpack(order + "I", head[4:8])[0]
        count_size, entry_size, next_size = 2, 12, 4
    if offset == 0 or offset + count_size > size:
        return False
    handle.seek(offset)
    count = struct.unpack(order + ("Q" if count_size == 8 else "H"), handle.read(count_size))[0]
    if offset + count_size + count * entry_size + next_size > size:
        return False
    entries = handle.read(count * entry_size)
    inline = 8 if count_size == 8 else 4  # values this small sit in the entry itself
    for start in range(0, len(entries), entry_size):
        entry = entries[start:start + entry_size]
        kind = struct.unpack(order + "H", entry[2:4])[0]
        if count_size == 8:
            values, where = struct.unpack(order + "QQ", entry[4:20])
        else:
            values, where = struct.unpack(order + "II", entry[4:12])
        length = values * _TIFF_TYPE_SIZES.get(kind, 1)
        if length > inline and where + length > size:
            return False  # an array of values (strip offsets, bits per sample ...) not yet written
    return True


def _ends(name: str, handle, size: int) -> bool:
    """Whether a JPEG or PNG file ends with its end marker."""
    handle.seek(max(size - _TAIL_BYTES, 0))
    tail = handle.read(_TAIL_BYTES)
    if name == "JPEG":
        return b"\xff\xd9" in tail  # EOI; entropy-coded data never holds FF D9, so it is the real end
    end = tail.rfind(b"IEND")  # PNG: the IEND chunk and its 4-byte CRC
    return end >= 0 and len(tail) - end >= 8
