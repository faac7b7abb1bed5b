"""What the line tests share (test_plc, test_recipes, test_registry, test_genicam, test_service ...): a PLC as
its OPC UA client sees it, waiting for a condition (never a sleep as synchronisation), a free port and dropping
demo boards into a hot folder. A plain module beside conftest.py, so every test folder imports it by name."""
from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

from inspector.capture import DEMO_DIR

NAMESPACE = "urn:pcb-inspector"


def wait_for(predicate, timeout: float, what: str, interval: float = 0.005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def free_port() -> int:
    """A TCP port nothing listens on now (the OS picks it), for a server the test starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Plc:
    """A PLC as seen from its OPC UA client: the variables under Objects/Inspector/<line>/."""

    def __init__(self, endpoint: str, line: str = "line1"):
        import asyncua.sync

        self.client = asyncua.sync.Client(endpoint, timeout=10)
        self.client.connect()
        index = self.client.get_namespace_index(NAMESPACE)
        self.line = self.client.nodes.objects.get_child([f"{index}:Inspector", f"{index}:{line}"])
        self._nodes = {}
        self._index = index

    def node(self, name: str):
        if name not in self._nodes:
            self._nodes[name] = self.line.get_child(f"{self._index}:{name}")
        return self._nodes[name]

    def read(self, name: str):
        return self.node(name).read_value()

    def write(self, name: str, value) -> None:
        self.node(name).write_value(value)

    def trigger(self, part_id: str) -> None:
        self.write("PartId", part_id)
        self.write("Trigger", True)

    def wait(self, name: str, value, timeout: float = 30.0) -> None:
        wait_for(lambda: self.read(name) == value, timeout, f"{name} == {value!r}")

    def inspect(self, part_id: str, ack: bool = True, timeout: float = 30.0) -> tuple[str, int]:
        """One full handshake; returns (Verdict, DefectCount) as the PLC read them."""
        self.trigger(part_id)
        self.wait("ResultValid", True, timeout)
        verdict, count, result_part = self.read("Verdict"), self.read("DefectCount"), self.read("ResultPartId")
        assert result_part == part_id
        if ack:
            self.write("Ack", True)
            self.wait("Ready", True)
            assert self.read("ResultValid") is False
        return verdict, count

    def local_address(self) -> str:
        """host:port of this client's end of the connection: the peer address the station sees."""
        host, port = self.client.aio_obj.uaclient.protocol.transport.get_extra_info("sockname")[:2]
        return f"{host}:{port}"

    def close(self) -> None:
        self.client.disconnect()


def recipe_audit(http, headers) -> list[dict]:
    """The audit trail's recipe entries, oldest first, as an admin reads them over HTTP (/audit)."""
    page = http.get("/audit", params={"limit": 500}, headers=headers)
    assert page.status_code == 200, page.text
    return [entry for entry in reversed(page.json()["items"]) if entry["action"] == "select recipe"]


def demo_pairs() -> list[tuple[Path, Path]]:
    tests = sorted(DEMO_DIR.rglob("*_test.jpg"))
    return [(test, test.with_name(test.name.replace("_test", "_temp"))) for test in tests]


def code_image(code_format: str, text: str, scale: int = 4):
    """A grey image (uint8, quiet zone included) of ``text`` as a code of ``code_format`` (a zxing-cpp
    ``BarcodeFormat`` name: DataMatrix, QRCode, Code128 ...), made by zxing-cpp's own writer."""
    import numpy as np
    import zxingcpp

    barcode = zxingcpp.create_barcode(text, getattr(zxingcpp.BarcodeFormat, code_format))
    return np.ascontiguousarray(zxingcpp.write_barcode_to_image(barcode, scale=scale))


def drop_coded_board(folder: Path, name: str, code_text: str, age_s: float = 60.0, code_format: str = "") -> None:
    """A defective board pair whose test image carries a code of ``code_text`` (the board's serial): a QR
    code drawn by OpenCV, or a code of ``code_format`` (``code_image``). Written as PNG (lossless: the code
    stays readable), modified ``age_s`` ago (older files are read first)."""
    import cv2

    test, temp = demo_pairs()[0]
    if code_format:
        code = code_image(code_format, code_text)
    else:
        code = cv2.resize(cv2.QRCodeEncoder.create().encode(code_text), None, fx=6, fy=6,
                          interpolation=cv2.INTER_NEAREST)
    code = cv2.cvtColor(code, cv2.COLOR_GRAY2BGR)
    board = cv2.imread(str(test))
    board[20:20 + code.shape[0], 20:20 + code.shape[1]] = code
    shutil.copy2(temp, folder / f"{name}_temp.jpg")
    cv2.imwrite(str(folder / f"{name}_test.png"), board)
    old = time.time() - age_s
    for path in (folder / f"{name}_temp.jpg", folder / f"{name}_test.png"):
        os.utime(path, (old, old))


def drop_board(folder: Path, name: str, golden: bool = False) -> None:
    """A board pair in the hot folder, template first, old modification time (taken at once)."""
    test, temp = demo_pairs()[0]
    shutil.copy2(temp, folder / f"{name}_temp.jpg")
    shutil.copy2(temp if golden else test, folder / f"{name}_test.jpg")
    old = time.time() - 60
    for suffix in ("_temp.jpg", "_test.jpg"):
        os.utime(folder / f"{name}{suffix}", (old, old))
