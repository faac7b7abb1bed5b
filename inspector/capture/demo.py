"""The demo source: real DeepPCB boards from the validation split, played like a camera."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from inspector.data import DataError, Sample, load_dataset
from inspector.capture.base import (CorruptFrame, Frame, FrameSource, Pacer, SourceEnded, SourceError, new_frame,
                                    read_only)

# Twelve pairs from the validation split of the shipped model's training run: see its README.md.
DEMO_DIR = Path(__file__).resolve().parents[1] / "assets" / "deeppcb_demo"
DEMO_FPS = 2.0


class DemoSource(FrameSource):
    """Plays the bundled DeepPCB pairs in order at ``fps``, looping; every frame carries its golden template.

    ``ground_truth(frame)`` gives the labeled boxes of a frame, for tests and for showing misses.
    """

    kind = "demo"
    droppable = True

    def __init__(self, directory: Path | str = DEMO_DIR, *, fps: float | None = None, loop: bool = True,
                 spec: str = "demo"):
        self.spec = spec
        self.directory = Path(directory)
        self.fps = DEMO_FPS if fps is None else float(fps)
        if not self.fps > 0:
            raise SourceError(f"{spec}: fps must be > 0, got {fps}")
        self.loop = loop
        self.samples: list[Sample] = []
        self.class_names: list[str] = []
        self._by_path: dict[Path, Sample] = {}
        self._decoded: dict[Path, tuple[np.ndarray, np.ndarray]] = {}  # image, template: 12 pairs, ~30 MB
        self._stop = threading.Event()
        self._pacer: Pacer | None = None
        self._position = 0
        self._sequence = 0

    def open(self) -> None:
        try:
            dataset = load_dataset(self.directory)
        except (DataError, OSError) as error:
            raise SourceError(f"{self.spec}: cannot read the demo boards in {self.directory}: {error}") from error
        usable = [sample for sample in dataset.samples if sample.template_path is not None]
        if not usable:
            raise SourceError(f"{self.spec}: {self.directory} holds no board with its golden template")
        self.samples = usable
        self.class_names = list(dataset.class_names)
        self._by_path = {sample.image_path: sample for sample in usable}
        self._stop.clear()
        self._pacer = Pacer(self.fps, self._stop)
        self._position = 0
        self._sequence = 0

    def read(self) -> Frame | None:
        if self._pacer is None:
            raise SourceError(f"{self.spec}: not open")
        if self._position == len(self.samples):
            if not self.loop:
                raise SourceEnded(f"{self.spec}: ended after {len(self.samples)} boards (loop off)")
            self._position = 0
        if not self._pacer.wait():
            return None  # closed while waiting
        sample = self.samples[self._position]
        self._position += 1
        image, template = self._load(sample)
        stem = sample.image_path.name[: -len("_test.jpg")] if sample.image_path.name.endswith("_test.jpg") \
            else sample.image_path.stem
        group = sample.image_path.parent.parent.name
        frame = new_frame(self, image.copy(), f"demo:{group}/{stem}:{self._sequence}", self._sequence,
                          path=sample.image_path, template=template)
        self._sequence += 1
        return frame

    def _load(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        if sample.image_path not in self._decoded:
            try:
                image, template = sample.load_image(), sample.load_template()
            except DataError as error:
                raise CorruptFrame(f"{self.spec}: {error}", path=sample.image_path) from error
            self._decoded[sample.image_path] = (read_only(image), read_only(template))
        return self._decoded[sample.image_path]

    def ground_truth(self, frame: Frame) -> tuple[np.ndarray, np.ndarray]:
        """``(boxes (N, 4) float32 pixel xyxy, class_ids (N,) int64)`` of a frame this source yielded.

        Class ids index ``class_names`` (DeepPCB's six types).
        """
        sample = self._by_path.get(frame.path) if frame.path is not None else None
        if sample is None:
            raise ValueError(f"{self.spec}: frame {frame.frame_id!r} is not one of the demo boards "
                             f"in {self.directory} (open the source first)")
        return sample.boxes.copy(), sample.classes.copy()

    def close(self) -> None:
        self._stop.set()
        self._pacer = None
