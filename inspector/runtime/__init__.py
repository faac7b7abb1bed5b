"""The runtime: what the CLI, the GUI and the service use to run a model package, and nothing else.

Modules, top-down: ``package`` (open and verify a package), ``backends`` (Paddle Lite, Paddle
Inference), ``alignment`` (register a frame to its golden template), ``detector`` (``Detector``,
``Detections``), then the tools on top of it: ``evaluate``, ``bench``, ``draw``.

It imports no training or compression code, and paddle only when the Paddle Inference backend runs.
"""
from inspector.export.manifest import PackageError
from inspector.runtime.alignment import Alignment, AlignmentError, align_to_template
from inspector.runtime.backends import BackendError
from inspector.runtime.detector import BACKENDS, Detections, Detector, RuntimeInfo, Timing
from inspector.runtime.package import DEFAULT_PACKAGE, ModelPackage, is_package, open_package, resolve_package_path

__all__ = [
    "BACKENDS",
    "DEFAULT_PACKAGE",
    "Alignment",
    "AlignmentError",
    "BackendError",
    "Detections",
    "Detector",
    "ModelPackage",
    "PackageError",
    "RuntimeInfo",
    "Timing",
    "align_to_template",
    "is_package",
    "open_package",
    "resolve_package_path",
]
