"""GigE Vision / USB3 Vision cameras through Aravis (GenICam), via PyGObject: ``genicam://DEVICE?options``.

    genicam://127.0.0.1                        a GigE Vision camera by address
    genicam://Basler-21234567?exposure_us=8000&gain_db=2&pixel_format=Mono8&trigger=software
    genicam://first                            the first camera Aravis finds

``DEVICE`` is an Aravis device id (``arv-tool-0.8`` lists them) or a GigE Vision camera's IP address.
Options: ``exposure_us``, ``gain_db``, ``pixel_format`` (also set by the recipe's ``camera:`` section through
``apply_settings``), ``trigger`` = ``free-run`` (default) | ``software`` | ``hardware`` (Line1, the PLC
pulses it), ``timeout_ms`` (one frame, default 2000), ``buffers`` (default 4).

- free-run: the camera streams; ``read`` returns the next buffer (None when none within 100 ms).
- software: ``fire()`` flushes stale buffers, then sends TriggerSoftware; ``read`` returns that frame.
- hardware: frames come when Line1 is pulsed; ``read`` returns them in order (the oldest first).

A camera that stops answering (unplugged, powered off) raises SourceError from ``read``/``fire`` (a register
access times out), so ``ReconnectingSource`` closes it, raises the camera alarm, and reopens with back-off.
Needs the Debian packages ``gir1.2-aravis-0.8`` (and ``aravis-tools`` for the fake camera the tests use) and
PyGObject in the virtual environment.
"""
from __future__ import annotations

import threading
import time
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np

from inspector.capture.base import FrameSource, SourceError, new_frame

SCHEME = "genicam://"
TRIGGER_MODES = ("free-run", "software", "hardware")
_OPTIONS = {"exposure_us", "gain_db", "pixel_format", "trigger", "timeout_ms", "buffers"}


def _aravis():
    try:
        import gi

        gi.require_version("Aravis", "0.8")
        from gi.repository import Aravis, GLib
    except (ImportError, ValueError) as error:
        raise SourceError(f"genicam: the Aravis GenICam library is not available ({error}); install the Debian "
                          "package gir1.2-aravis-0.8 and PyGObject (pip install 'pygobject<3.50')") from None
    return Aravis, GLib


class GenICamSource(FrameSource):
    kind = "camera"
    droppable = True

    def __init__(self, spec: str, template: np.ndarray | None = None):
        self.spec = spec
        self.template = template
        parts = urlsplit(spec)
        self.device = (parts.netloc + parts.path).strip("/")
        if not self.device:
            raise SourceError(f"source {spec!r}: expected genicam://DEVICE (an Aravis device id, an IP address, "
                              "or 'first')")
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        unknown = sorted(set(query) - _OPTIONS)
        if unknown:
            raise SourceError(f"source {spec!r}: unknown option(s) {', '.join(unknown)}; known: "
                              f"{', '.join(sorted(_OPTIONS))}")
        try:
            self.exposure_us = float(query["exposure_us"]) if "exposure_us" in query else None
            self.gain_db = float(query["gain_db"]) if "gain_db" in query else None
            self.timeout_s = float(query.get("timeout_ms", 2000)) / 1000
            self.buffers = int(query.get("buffers", 4))
        except ValueError as error:
            raise SourceError(f"source {spec!r}: a numeric option is not a number ({error})") from None
        self.pixel_format = query.get("pixel_format")
        self.trigger_mode = query.get("trigger", "free-run")
        if self.trigger_mode not in TRIGGER_MODES:
            raise SourceError(f"source {spec!r}: trigger={self.trigger_mode!r}; expected one of "
                              f"{', '.join(TRIGGER_MODES)}")
        self._camera = None
        self._stream = None
        self._sequence = 0
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ life cycle

    def open(self) -> None:
        Aravis, GLib = _aravis()
        with self._lock:
            try:
                camera = Aravis.Camera.new(None if self.device == "first" else self.device)
                if self.pixel_format:
                    camera.set_pixel_format_from_string(self.pixel_format)
                self._camera = camera
                self._apply(self.exposure_us, self.gain_db)
                if self.trigger_mode == "free-run":
                    camera.set_acquisition_mode(Aravis.AcquisitionMode.CONTINUOUS)
                    try:
                        camera.clear_triggers()
                    except GLib.Error:
                        pass  # a camera without trigger features streams anyway
                else:
                    camera.set_trigger("Software" if self.trigger_mode == "software" else "Line1")
                stream = camera.create_stream(None, None)
                payload = camera.get_payload()
                for _ in range(max(2, self.buffers)):
                    stream.push_buffer(Aravis.Buffer.new_allocate(payload))
                camera.start_acquisition()
                self._stream = stream
            except GLib.Error as error:
                self._camera = self._stream = None
                raise SourceError(f"{self.name}: cannot open the camera ({error.message})") from None
        self._sequence = 0

    def close(self) -> None:
        with self._lock:
            camera, self._camera, self._stream = self._camera, None, None
            if camera is not None:
                try:
                    camera.stop_acquisition()
                except Exception:  # noqa: BLE001 - the camera may be gone already
                    pass

    # ------------------------------------------------------------------ settings and trigger

    def apply_settings(self, exposure_us: float | None = None, gain_db: float | None = None) -> None:
        """Exposure and gain now (a recipe switch); kept for the next reopen too."""
        if exposure_us is not None:
            self.exposure_us = float(exposure_us)
        if gain_db is not None:
            self.gain_db = float(gain_db)
        with self._lock:
            if self._camera is not None:
                self._apply(self.exposure_us, self.gain_db)

    def _apply(self, exposure_us, gain_db) -> None:
        _, GLib = _aravis()
        try:
            if exposure_us is not None:
                self._camera.set_exposure_time(float(exposure_us))
            if gain_db is not None and self._camera.is_gain_available():
                self._camera.set_gain(float(gain_db))
        except GLib.Error as error:
            raise SourceError(f"{self.name}: cannot set exposure/gain ({error.message})") from None

    def fire(self) -> None:
        """Software trigger: drop frames already buffered, then expose one. SourceError if the camera is gone."""
        _, GLib = _aravis()
        with self._lock:
            if self._camera is None:
                raise SourceError(f"{self.name}: not open")
            while True:  # stale frames: exposed before this trigger
                buffer = self._stream.try_pop_buffer()
                if buffer is None:
                    break
                self._stream.push_buffer(buffer)
            try:
                self._camera.software_trigger()
            except GLib.Error as error:
                raise SourceError(f"{self.name}: the camera does not answer ({error.message})") from None

    # ------------------------------------------------------------------ frames

    def read(self):
        Aravis, GLib = _aravis()
        with self._lock:
            if self._camera is None or self._stream is None:
                raise SourceError(f"{self.name}: not open")
            wait_s = 0.1 if self.trigger_mode == "free-run" else min(self.timeout_s, 0.1)
            buffer = self._stream.timeout_pop_buffer(int(wait_s * 1e6))
            if buffer is None:
                self._check_alive(GLib)
                return None
            try:
                if buffer.get_status() != Aravis.BufferStatus.SUCCESS:
                    return None  # an incomplete frame (lost packets): not a board image
                image = _to_bgr(buffer, Aravis)
            finally:
                self._stream.push_buffer(buffer)
        frame = new_frame(self, image, f"{self.name}:{self._sequence:06d}", self._sequence, template=self.template)
        self._sequence += 1
        return frame

    def _check_alive(self, GLib) -> None:  # noqa: N803
        """No frame: is the camera still there? A register read times out when it is not."""
        if self.trigger_mode == "free-run" or time.monotonic() - getattr(self, "_last_check", 0.0) > 1.0:
            self._last_check = time.monotonic()
            try:
                self._camera.get_exposure_time()
            except GLib.Error as error:
                raise SourceError(f"{self.name}: the camera does not answer ({error.message})") from None


def _to_bgr(buffer, Aravis) -> np.ndarray:  # noqa: N803
    width, height = buffer.get_image_width(), buffer.get_image_height()
    pixel_format = buffer.get_image_pixel_format()
    data = np.frombuffer(buffer.get_data(), dtype=np.uint8)
    if pixel_format == Aravis.PIXEL_FORMAT_MONO_8:
        return cv2.cvtColor(data[: width * height].reshape(height, width), cv2.COLOR_GRAY2BGR)
    if pixel_format == Aravis.PIXEL_FORMAT_RGB_8_PACKED:
        return cv2.cvtColor(data[: width * height * 3].reshape(height, width, 3), cv2.COLOR_RGB2BGR)
    if pixel_format == Aravis.PIXEL_FORMAT_BGR_8_PACKED:
        return data[: width * height * 3].reshape(height, width, 3).copy()
    bayer = {Aravis.PIXEL_FORMAT_BAYER_RG_8: cv2.COLOR_BAYER_RG2BGR, Aravis.PIXEL_FORMAT_BAYER_GR_8: cv2.COLOR_BAYER_GR2BGR,
             Aravis.PIXEL_FORMAT_BAYER_BG_8: cv2.COLOR_BAYER_BG2BGR, Aravis.PIXEL_FORMAT_BAYER_GB_8: cv2.COLOR_BAYER_GB2BGR}
    if pixel_format in bayer:
        return cv2.cvtColor(data[: width * height].reshape(height, width), bayer[pixel_format])
    raise SourceError(f"genicam: pixel format 0x{pixel_format:08x} is not supported; use Mono8, RGB8, BGR8 or "
                      "an 8-bit Bayer format (pixel_format=...)")
