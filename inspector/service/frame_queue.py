"""The bounded queue between the capture thread and the inference worker.

Live sources (camera, stream, video, demo) must not wait for inference: when the queue is full the OLDEST
waiting frame is dropped, so the worker always sees the most recent boards and latency stays bounded.
A hot folder must never lose a file: its reader waits for room instead (back-pressure).
"""
from __future__ import annotations

import threading
from collections import deque

from inspector.capture import Frame


class FrameQueue:
    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"queue capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._frames: deque[Frame] = deque()
        self._condition = threading.Condition()
        self._closed = False

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def closed(self) -> bool:
        return self._closed

    def put_dropping_oldest(self, frame: Frame) -> Frame | None:
        """Enqueue ``frame``; when full, drop and return the oldest waiting frame (else None)."""
        with self._condition:
            dropped = self._frames.popleft() if len(self._frames) >= self.capacity else None
            self._frames.append(frame)
            self._condition.notify_all()
            return dropped

    def put_waiting(self, frame: Frame, stop: threading.Event) -> bool:
        """Enqueue ``frame``, waiting for room; False (not enqueued) when ``stop`` is set or the queue closed."""
        with self._condition:
            while len(self._frames) >= self.capacity:
                if stop.is_set() or self._closed:
                    return False
                self._condition.wait(timeout=0.1)
            if self._closed:
                return False
            self._frames.append(frame)
            self._condition.notify_all()
            return True

    def get(self, timeout: float) -> Frame | None:
        """The oldest frame, or None after ``timeout`` s (or at once when closed and empty)."""
        with self._condition:
            if not self._frames and not self._closed:
                self._condition.wait(timeout=timeout)
            if not self._frames:
                return None
            frame = self._frames.popleft()
            self._condition.notify_all()
            return frame

    def close(self) -> None:
        """No more frames will come; get() hands out what is left, then None."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
