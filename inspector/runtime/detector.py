"""``Detector``: load a model package, run it on a frame (and its golden template), get typed detections.

    detector = Detector.load("models/default", backend="lite", threads=2)
    result = detector.detect(frame, template)            # template only for image+template models
    result.boxes, result.scores, result.class_ids, result.class_names, result.timing
    detector.info                                        # backend, precision, threads that really run

Per frame: letterbox to the package's input size (``inspector.data.transforms``, the same code
training used) -> the network (decoded boxes and per-class scores) -> NMS in numpy
(``inspector.models.nms``, the same code training evaluated with) -> boxes mapped back to the pixels
of the image that was passed in. With ``align=True`` the frame is first registered to the template
(``alignment.align_to_template``); a frame that cannot be aligned raises ``AlignmentError``.

This module never imports paddle unless the Paddle Inference backend is asked for.
"""
from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from inspector.data.layouts import InputLayout, input_layout
from inspector.data.transforms import Scratch, gray_plane, letterbox, letterbox_gray, to_input, unletterbox_boxes
from inspector.export.manifest import PRECISIONS, PackageError
from inspector.models.nms import select_detections
from inspector.runtime.alignment import Alignment, align_to_template
from inspector.runtime.changes import ChangeSettings, UnknownChange, find_unknown_changes
from inspector.runtime.backends import BackendError, LiteBackend, PaddleInferenceBackend
from inspector.runtime.package import ModelPackage, lite_target_for_this_machine, open_package, resolve_package_path

BACKENDS = ("lite", "paddle")


@dataclass(frozen=True)
class Timing:
    """Milliseconds spent on one frame, per stage."""

    preprocess_ms: float  # alignment (if asked for), letterbox, channel stacking
    infer_ms: float  # the network
    postprocess_ms: float  # NMS and mapping boxes back
    changes_ms: float = 0.0  # unknown-change flags, when asked for

    @property
    def total_ms(self) -> float:
        return self.preprocess_ms + self.infer_ms + self.postprocess_ms + self.changes_ms


@dataclass
class Detections:
    """The defects found in one image, best first."""

    boxes: np.ndarray  # (N, 4) float32 x1, y1, x2, y2 in pixels of the image passed to detect()
    scores: np.ndarray  # (N,) float32
    class_ids: np.ndarray  # (N,) int64
    class_names: list[str]  # (N,) each detection's class name
    image_size: tuple[int, int]  # (width, height) of the image passed to detect()
    timing: Timing
    alignment: Alignment | None = None  # set when the frame was registered to the template first
    unknown_changes: list[UnknownChange] | None = None  # set when asked for: template differences no box explains

    def __len__(self) -> int:
        return len(self.boxes)

    def to_dict(self) -> dict:
        """JSON-ready: one entry per detection, plus timing and alignment quality."""
        return {
            "image_size": list(self.image_size),
            "detections": [
                {"box": [round(float(v), 2) for v in box], "score": round(float(score), 4), "class_id": int(cid),
                 "class_name": name}
                for box, score, cid, name in zip(self.boxes, self.scores, self.class_ids, self.class_names)
            ],
            "timing_ms": {k: round(v, 3) for k, v in asdict(self.timing).items()},
            "alignment": None if self.alignment is None else self.alignment.to_dict(),
            **({} if self.unknown_changes is None else
               {"unknown_changes": [change.to_dict() for change in self.unknown_changes]}),
        }


@dataclass(frozen=True)
class RuntimeInfo:
    """What actually runs, read back from the engine rather than copied from the request."""

    backend: str  # "lite" | "paddle"
    target: str  # the package target that was loaded: "lite-x86" | "lite-arm" | "paddle"
    engine: str  # engine, version and model file
    precision: str  # "fp32" | "int8" | "int8-simulated" (quantized graph on FP32 kernels)
    threads: int
    device: str
    package: str
    package_id: str
    package_precision: str  # what the package's graph was exported as
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


class Detector:
    """A loaded, verified package on one backend. Build it with ``Detector.load``.

    One engine per Detector and engines are not thread-safe: give each worker thread its own.
    """

    def __init__(self, package: ModelPackage, backend: LiteBackend | PaddleInferenceBackend, info: RuntimeInfo) -> None:
        self.package = package
        self.manifest = package.manifest
        self.backend = backend
        self.info = info
        spec = self.manifest.input
        # The network's input, written in place at every frame (to_input's ``out``): a frame-sized array made
        # afresh per frame costs page faults every frame. One per detector, as the engine is.
        self._input = np.empty((1, spec.channels, spec.size, spec.size), np.float32)
        self._scratch = Scratch()  # the frame's intermediate planes, for the same reason

    @classmethod
    def load(cls, package_dir: Path | str | None = None, backend: str = "lite", threads: int = 1,
             precision: str | None = None) -> "Detector":
        """Verify and load a package (``None``: the shipped default) on ``backend`` with ``threads`` threads.

        ``precision`` (``fp32`` | ``int8``), when given, must be the package's; None accepts what it has.
        """
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
        if precision is not None and precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {PRECISIONS} or None, got {precision!r}")
        if threads < 1:
            raise ValueError(f"threads: expected at least 1, got {threads}")
        path = resolve_package_path(package_dir)
        target = lite_target_for_this_machine() if backend == "lite" else "paddle"
        package = open_package(path, target)
        manifest = package.manifest
        if precision is not None and precision != manifest.precision:
            raise PackageError(f"{path}: the package holds a {manifest.precision} model, {precision} was requested")
        if backend == "lite":
            (nb_file,) = package.target_files(target)
            engine, ran, note = _lite_engine(nb_file, threads, manifest.precision_of(target))
            if manifest.precision_of(target) != manifest.precision:
                note = (f"this package's {target} model is the FP32 twin of its {manifest.precision} model "
                        f"({manifest.provenance.get('lite_x86_source', 'see the manifest')})")
        else:
            model_file, params_file = package.target_files("paddle")
            spec = manifest.input
            engine, ran, note = _paddle_engine(model_file, params_file, threads, manifest.precision, precision,
                                               (1, spec.channels, spec.size, spec.size))
        info = RuntimeInfo(backend=backend, target=target, engine=engine.description, precision=ran,
                           threads=engine.threads, device=_cpu_name(), package=str(path),
                           package_id=package.package_id, package_precision=manifest.precision, note=note)
        detector = cls(package, engine, info)
        detector._check_outputs()
        return detector

    # ------------------------------------------------------------------ properties from the manifest

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest.class_names)

    @property
    def input_size(self) -> int:
        return self.manifest.input.size

    @property
    def layout(self) -> InputLayout:
        return input_layout(self.manifest.input.mode)

    @property
    def needs_template(self) -> bool:
        return self.layout.needs_template

    # ------------------------------------------------------------------ running

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The network alone: ``(1, C, S, S)`` float32 -> decoded ``boxes (1, K, 4)``, ``scores (1, K, C)``."""
        boxes, scores = self.backend.run(images)
        return boxes, scores

    def detect(
        self,
        image: np.ndarray,
        template: np.ndarray | None = None,
        *,
        align: bool = False,
        score_threshold: float | None = None,
        nms_threshold: float | None = None,
        max_detections: int | None = None,
        unknown_changes: bool | ChangeSettings = False,
    ) -> Detections:
        """Defects in ``image`` (BGR uint8, as ``cv2.imread`` gives), boxes in its pixels.

        ``template``: the golden board, required by ``image+template`` models and refused by others.
        ``align``: register ``image`` to ``template`` first (for frames that are not pre-aligned);
        raises ``AlignmentError`` when that fails. Thresholds default to the package's.
        ``unknown_changes``: also flag where the frame differs from ``template`` and no detection explains
        it (``changes.find_unknown_changes``; True for the default settings); needs a template, which a
        model of input mode 'image' then uses for the flags only.
        """
        start = time.perf_counter()
        layout = self.layout
        net_image = self._checked_frame(image, "image")
        if self.needs_template and template is None:
            raise ValueError(f"this model compares each frame with its golden template (input mode "
                             f"{layout.mode!r}): pass the template image")
        if unknown_changes is not False and template is None:
            raise ValueError("unknown_changes needs the golden template to compare the frame with")
        if not self.needs_template and template is not None and unknown_changes is False:
            raise ValueError(f"this model looks at the frame alone (input mode {layout.mode!r}): it takes no template")
        alignment = None
        model_image = image
        net_template = None
        if template is not None:
            net_template = self._checked_frame(template, "template")
            if template.ndim != image.ndim or (image.ndim == 3 and template.shape[2] != image.shape[2]):
                raise ValueError(f"template has {_channels(template)} channel(s) but the image has {_channels(image)}: "
                                 f"give both in the same colour format")
            if align:
                alignment = align_to_template(image, template)
                model_image = alignment.aligned
                net_image = gray_plane(model_image) if layout.color == "GRAY" else model_image
            elif template.shape[:2] != image.shape[:2]:
                raise ValueError(f"template is {template.shape[1]}x{template.shape[0]} but the image is "
                                 f"{image.shape[1]}x{image.shape[0]}: pass align=True to register the frame to it")
        elif align:
            raise ValueError("align=True needs a template to align to")
        size = layout.letterbox_size(self.input_size)
        fit = letterbox_gray if layout.color == "GRAY" else letterbox
        resized, scale, pad = fit(net_image, size, self._scratch, "image")
        resized_template = None if net_template is None or not self.needs_template else \
            fit(net_template, size, self._scratch, "template")[0]
        batch = to_input(resized, resized_template, layout.mode, out=self._input[0], scratch=self._scratch)[None]
        # Space-to-depth packs the letterboxed frame `block` times smaller: the network's pixels.
        scale, pad = scale / layout.block, (pad[0] / layout.block, pad[1] / layout.block)
        prepared = time.perf_counter()

        boxes, scores = self.infer(batch)
        inferred = time.perf_counter()

        post = self.manifest.postprocess
        kept_boxes, kept_scores, kept_classes = select_detections(
            boxes[0], scores[0],
            score_threshold=post.score_threshold if score_threshold is None else score_threshold,
            nms_threshold=post.nms_threshold if nms_threshold is None else nms_threshold,
            max_detections=post.max_detections if max_detections is None else max_detections,
            method=post.nms,  # type: ignore[arg-type]
        )
        height, width = model_image.shape[:2]
        kept_boxes = unletterbox_boxes(kept_boxes, scale, pad, (width, height))
        changes, changes_ms = None, 0.0
        if unknown_changes is not False:  # on the template's grid, before boxes go back to the frame
            settings = unknown_changes if isinstance(unknown_changes, ChangeSettings) else None
            changes_start = time.perf_counter()
            changes = find_unknown_changes(model_image, template, kept_boxes, settings)
            changes_ms = (time.perf_counter() - changes_start) * 1e3
            if alignment is not None:
                moved = alignment.boxes_to_frame(np.array([c.box for c in changes], np.float32).reshape(-1, 4),
                                                 (image.shape[1], image.shape[0]))
                changes = [replace(c, box=tuple(float(v) for v in box)) for c, box in zip(changes, moved)]
        if alignment is not None:
            kept_boxes = alignment.boxes_to_frame(kept_boxes, (image.shape[1], image.shape[0]))
        done = time.perf_counter()
        return Detections(
            boxes=kept_boxes,
            scores=kept_scores,
            class_ids=kept_classes,
            class_names=[self.manifest.class_names[int(c)] for c in kept_classes],
            image_size=(int(image.shape[1]), int(image.shape[0])),
            timing=Timing((prepared - start) * 1e3, (inferred - prepared) * 1e3,
                          (done - inferred) * 1e3 - changes_ms, changes_ms),
            alignment=alignment,
            unknown_changes=changes,
        )

    def _checked_frame(self, image: np.ndarray, name: str) -> np.ndarray:
        """``image`` as the network's layout takes it (grey layouts: one grey plane), once it is a uint8 frame
        in the colour format the package was trained on: a colour model is not given grey frames, nor a grey
        model colour ones (grey stored as three equal planes is grey, and any of them is the grey plane)."""
        _check_image(image, name)
        layout = self.layout
        if layout.color == "RGB" and _channels(image) == 1:
            raise ValueError(f"{name}: {self.info.package} expects colour BGR (H, W, 3) frames (input layout "
                             f"{layout.mode!r}), got a grey {image.shape} frame; use a grey model (layout "
                             f"'gray-diff-s2d') for a monochrome camera")
        if layout.color == "GRAY" and _channels(image) == 3:
            grey = _equal_planes(image, [self._scratch.array(f"{name}-{c}", image.shape[:2]) for c in "bgr"])
            if grey is None:
                raise ValueError(f"{name}: {self.info.package} expects grey frames (input layout {layout.mode!r}), "
                                 f"got a colour frame whose channels differ; use a colour model (layout "
                                 f"'image+template') for a colour camera")
            return grey
        return gray_plane(image) if layout.color == "GRAY" else image

    def _check_outputs(self) -> None:
        """One run on a blank input: the engine must return what the manifest promises."""
        spec = self.manifest.input
        blank = np.zeros((1, spec.channels, spec.size, spec.size), np.float32)
        outputs = self.backend.run(blank)
        expected = [self.manifest.outputs["boxes"]["shape"], self.manifest.outputs["scores"]["shape"]]
        got = [list(o.shape) for o in outputs]
        if got != expected:
            raise PackageError(f"{self.info.package}: the {self.info.backend} model returns {got}, the manifest "
                               f"says {expected}")


def _lite_engine(nb_file: Path, threads: int, package_precision: str) -> tuple[LiteBackend, str, str]:
    """Paddle Lite on the ``.nb``; the precision is that of the kernels the converter bound."""
    engine = LiteBackend(nb_file, threads)
    note = ""
    if package_precision == "int8" and engine.precision != "int8":
        note = "Paddle Lite bound no INT8 kernel for this target: the quantized model runs in FP32"
    elif engine.precision == "int8":
        note = f"{engine.kernels['int8']} of {sum(engine.kernels.values())} convolution kernels run in INT8"
    return engine, engine.precision, note


def _paddle_engine(model_file: Path, params_file: Path, threads: int, package_precision: str,
                   requested: str | None, input_shape: tuple[int, ...]) -> tuple[PaddleInferenceBackend, str, str]:
    """Paddle Inference with oneDNN INT8 for a quantized package. oneDNN fails some INT8 graphs only when
    they first run, so INT8 gets a trial run here; if it fails and INT8 was not explicitly requested,
    the quantized graph runs on FP32 kernels, and the returned note says so."""
    if package_precision != "int8":
        return PaddleInferenceBackend(model_file, params_file, threads), "fp32", ""
    try:
        engine = PaddleInferenceBackend(model_file, params_file, threads, int8=True)
        engine.run(np.zeros(input_shape, np.float32))
        return engine, "int8", ""
    except BackendError as error:
        if requested == "int8":
            raise
        engine = PaddleInferenceBackend(model_file, params_file, threads, int8=False)
        reason = str(error).strip().splitlines()[0]
        return engine, "int8-simulated", f"oneDNN INT8 could not run this model ({reason}); FP32 kernels run the quantized graph"


def _check_image(image: np.ndarray, name: str) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3) \
            or (image.ndim == 3 and image.shape[2] not in (1, 3)) or min(image.shape[:2]) < 1:
        shape = getattr(image, "shape", None)
        raise ValueError(f"{name}: expected a BGR uint8 (H, W, 3) or grey (H, W) image, got "
                         f"{getattr(image, 'dtype', type(image).__name__)} {shape}")


def _channels(image: np.ndarray) -> int:
    return 1 if image.ndim == 2 else int(image.shape[2])


def _equal_planes(image: np.ndarray, planes: list[np.ndarray] | None = None) -> np.ndarray | None:
    """The grey plane of a 3-channel frame whose planes are equal (grey stored as BGR), None for a colour
    picture. The blue plane is exactly what ``cv2.COLOR_BGR2GRAY`` would give for equal planes (its fixed-point
    weights sum to one), without a second pass over the frame. ``planes``: three (H, W) uint8 arrays to split
    into (reused: see ``Scratch``); the grey plane returned is the first."""
    blue, green, red = cv2.split(image, planes)
    if cv2.norm(blue, green, cv2.NORM_INF) or cv2.norm(blue, red, cv2.NORM_INF):
        return None
    return blue


def _cpu_name() -> str:
    """The CPU model as the OS names it, and the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return f"{line.split(':', 1)[1].strip()} ({platform.machine()})"
    except OSError:
        pass
    return platform.processor() or platform.machine()
