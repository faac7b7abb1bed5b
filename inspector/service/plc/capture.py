"""Trigger-driven capture: with a PLC attached, one accepted trigger = one frame = one record.

Replaces the service's free-running capture loop (``Service._capture_loop`` hands over to
``triggered_capture_loop``). What "the next frame" is depends on the source:

- hot folder and demo (``droppable`` False, or the demo): the next item, read when the trigger comes; a hot
  folder that stays empty for the capture timeout gives an ERROR part;
- cameras, streams, video files (live): the source keeps being read (so the driver's buffer never holds
  stale frames) and frames are dropped until one whose exposure started after the trigger: the first
  frame read after the trigger time is the part's (a software trigger for cameras that run free);
- GenICam cameras with ``trigger=software``: stale buffers are flushed and the camera is triggered
  (TriggerSoftware) once per part; with ``trigger=hardware`` the PLC pulses the camera's Line1 and
  frames are matched to parts in order (the oldest buffered frame is the next part's).

A part whose frame does not come within ``capture_timeout_s`` is committed as ERROR (``CaptureTimeout``)
with the alarm ``capture_timeout``, and the PLC gets ``ERROR``: the line never waits for a frame forever.
"""
from __future__ import annotations

import logging
import queue
import time
from typing import TYPE_CHECKING, Optional

from inspector.capture import CorruptFrame, SourceEnded, SourceError
from inspector.service.plc.handshake import PartRequest

if TYPE_CHECKING:
    from inspector.service.service import Service

log = logging.getLogger(__name__)
POLL_S = 0.01  # an empty hot folder is looked at again this often while a part waits for its file
LIVE_KINDS = ("camera", "stream", "video")


def triggered_capture_loop(service: "Service") -> None:
    source = service.source
    camera = getattr(source, "source", source)  # inside the ReconnectingSource
    mode = getattr(camera, "trigger_mode", "free-run")  # GenICam: free-run | software | hardware
    live = source.kind in LIVE_KINDS and mode == "free-run"
    stop = service._stop_capture
    timeout_s = service.config.capture_timeout_s
    request: Optional[PartRequest] = None
    fired = False
    while not stop.is_set():
        if request is None:
            try:
                request = service.triggers.get(timeout=0 if live else 0.05)
                fired = False
            except queue.Empty:
                if live or (source.kind in LIVE_KINDS and source.state != "connected"):
                    _read_and_drop(service)  # a triggered camera that is gone is reopened while idle too
                continue
        if mode == "software" and not fired and source.state == "connected":
            try:
                camera.fire()
                fired = True
            except SourceError as error:  # the camera is gone: read() reports it and reconnects
                log.warning("part %s: software trigger failed: %s", request.part_id, error)
        if time.monotonic() - request.triggered_monotonic > timeout_s:
            _capture_timeout(service, request, f"no frame from {source.name} within {timeout_s:g} s")
            request = None
            continue
        try:
            frame = source.read()
        except SourceEnded as ended:
            log.info("%s", ended)
            service.source_ended = True
            _capture_timeout(service, request, f"the source ended: {ended}")
            request = None
            _fail_waiting(service, f"the source ended: {ended}", stop)
            return
        except CorruptFrame as corrupt:
            service.metrics.corrupt.inc()
            log.warning("part %s: unreadable frame: %s", request.part_id, corrupt)
            if not source.droppable and corrupt.frame_id is not None:
                service._commit_unjudged_file(corrupt, part=request)  # the file is this part's: ERROR
                request = None
            continue
        except Exception:  # a bug in a source: the part times out rather than the capture thread dying
            log.exception("reading %s failed", source.name)
            stop.wait(0.05)
            continue
        if frame is None:
            stop.wait(POLL_S)
            continue
        if live and frame.captured_monotonic < request.triggered_monotonic:
            continue  # exposed before the trigger: not this part's frame
        if service._recorded_before(frame):
            # Committed before a kill that came ahead of its acknowledgement: that board was judged, so it
            # is acknowledged and the part waiting here takes the next file.
            service._ack(frame)
            continue
        service.parts[frame.frame_id] = request
        if not service.queue.put_waiting(frame, stop):
            service.parts.pop(frame.frame_id, None)
            return
        service.metrics.queue_depth.set(len(service.queue))
        request = None


def _read_and_drop(service: "Service") -> None:
    try:
        service.source.read()
    except SourceEnded as ended:
        log.info("%s", ended)
        service.source_ended = True
        service._stop_capture.wait(0.5)
    except Exception:  # reconnects are the ReconnectingSource's business; nothing waits for this frame
        service._stop_capture.wait(0.05)


def _capture_timeout(service: "Service", request: PartRequest, why: str) -> None:
    service.raise_alarm("capture_timeout", "critical", f"part {request.part_id or '(no PartId)'}: {why}; "
                        "recorded and reported as ERROR", part_id=request.part_id)
    service.commit_unjudged_part(request, f"CaptureTimeout: {why}")


def _fail_waiting(service: "Service", why: str, stop) -> None:
    """After the source ended, every later trigger is answered ERROR at once (no PLC waits in vain)."""
    while not stop.is_set():
        try:
            request = service.triggers.get(timeout=0.1)
        except queue.Empty:
            continue
        service.commit_unjudged_part(request, f"CaptureTimeout: {why}")
