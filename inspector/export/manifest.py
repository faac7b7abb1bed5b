"""The model package format: ``manifest.json`` and the files it lists, readable without paddle.

A package is a directory that describes itself completely::

    models/NAME/
        manifest.json      what the model is, how to feed it, what it outputs, and a sha256 per file
        model.pdmodel      Paddle Inference program (legacy, non-PIR format: what Paddle Lite converts)
        model.pdiparams    its weights
        model_x86.nb       Paddle Lite model for x86 CPUs   (target ``lite-x86``)
        model_arm.nb       Paddle Lite model for ARM CPUs   (target ``lite-arm``)
        split.json         the train/val split of the run it came from (when there was one)

The exporter (``inspector.export.package``) writes it; the runtime (``inspector.runtime.package``)
verifies it before running anything. This module holds the schema both sides agree on, and nothing
heavier than the standard library (and the input-layout table, ``inspector.data.layouts``, and the NMS
methods of ``inspector.models.nms``), so the runtime can read a manifest without paddle.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from inspector.data.layouts import INPUT_MODES, input_layout
from inspector.models.nms import DEFAULT_NMS, DEFAULT_NMS_THRESHOLD, NMS_METHODS

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
PADDLE_MODEL_FILE = "model.pdmodel"
PADDLE_PARAMS_FILE = "model.pdiparams"
SPLIT_FILE = "split.json"
LITE_MODEL_FILES = {"x86": "model_x86.nb", "arm": "model_arm.nb"}  # Paddle Lite valid_targets -> file
TARGETS = ("paddle", "lite-x86", "lite-arm")
PRECISIONS = ("fp32", "int8")


class PackageError(ValueError):
    """A model package that cannot be used; the message names the package, the file or field, and
    what was expected."""


@dataclass(frozen=True)
class InputSpec:
    """How to turn a BGR frame (and its template) into the network input (see ``inspector.data.transforms``)."""

    size: int  # the network input's side (the letterboxed square is size * space_to_depth)
    mode: str  # the input layout, one of inspector.data.layouts.INPUT_MODES
    channels: int  # the layout's channels: 3, 6 or 12
    name: str = "images"  # the program's input name
    layout: str = "NCHW"
    color: str = "RGB"  # "RGB": colour planes of each image; "GRAY": one grey plane per image (layouts)
    scale: float = 1 / 255  # uint8 pixel value -> network value
    letterbox_pad_value: int = 0  # grey level of the border added to make the frame square
    space_to_depth: int = 1  # block of the layout's space-to-depth packing (1: none)


@dataclass(frozen=True)
class PostprocessDefaults:
    """Defaults of the NMS that runs after the network (numpy, ``inspector.models.nms``)."""

    score_threshold: float
    # Packages exported before the "agnostic" method existed say "hard" / 0.5, and keep running that way.
    nms_threshold: float = DEFAULT_NMS_THRESHOLD
    max_detections: int = 100
    nms: str = DEFAULT_NMS  # "hard" (greedy per class) | "agnostic" (greedy across classes) | "matrix"


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    bytes: int


@dataclass
class Manifest:
    """Everything ``manifest.json`` holds; ``to_dict``/``from_dict`` convert to and from the JSON."""

    name: str
    created: str  # ISO 8601, UTC
    class_names: list[str]
    input: InputSpec
    outputs: dict[str, Any]  # {"boxes": {...}, "scores": {...}, "nms_in_graph": False}
    postprocess: PostprocessDefaults
    precision: str  # "fp32" | "int8": what the exported graph computes in
    files: dict[str, FileEntry]
    targets: dict[str, list[str]]  # "paddle" | "lite-x86" | "lite-arm" -> the files that target needs
    model: dict[str, Any] = field(default_factory=dict)  # the ModelConfig it was built from (descriptive)
    # Per target, when one differs from ``precision`` (e.g. an INT8 package whose x86 .nb is its FP32 twin).
    target_precision: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] | None = None  # measured through the package at export, when data was given
    provenance: dict[str, Any] = field(default_factory=dict)  # source run, data, train config, git commit
    format_version: int = FORMAT_VERSION

    def precision_of(self, target: str) -> str:
        """What the graph of ``target`` computes in (``precision`` unless the package says otherwise)."""
        return self.target_precision.get(target, self.precision)

    @property
    def package_id(self) -> str:
        """A short identity of the package's content: the sha256 of its files' sha256s."""
        digest = hashlib.sha256()
        for name in sorted(self.files):
            digest.update(f"{name}:{self.files[name].sha256}\n".encode())
        return digest.hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        data = {
            "format_version": self.format_version,
            "name": self.name,
            "created": self.created,
            "class_names": list(self.class_names),
            "input": asdict(self.input),
            "outputs": self.outputs,
            "postprocess": asdict(self.postprocess),
            "precision": self.precision,
            "model": self.model,
            "files": {name: asdict(entry) for name, entry in sorted(self.files.items())},
            "targets": self.targets,
            "target_precision": self.target_precision,
            "metrics": self.metrics,
            "provenance": self.provenance,
        }
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str) -> "Manifest":
        """Parse and validate; a PackageError names ``source`` and the first bad field."""
        fields = _Fields(data, source)
        version = fields.integer("format_version", minimum=1)
        if version > FORMAT_VERSION:
            raise PackageError(f"{source}: field 'format_version': this runtime reads up to version "
                               f"{FORMAT_VERSION}, the package is version {version} (update the inspector)")
        class_names = fields.get("class_names", list, "a non-empty list of class names")
        if not class_names or not all(isinstance(n, str) and n for n in class_names):
            raise PackageError(f"{source}: field 'class_names': expected a non-empty list of non-empty strings")
        raw_input = fields.section("input")
        input_spec = InputSpec(
            size=raw_input.integer("size", minimum=1),
            mode=raw_input.choice("mode", INPUT_MODES),
            channels=raw_input.integer("channels", minimum=1),
            name=raw_input.get("name", str, "the program's input name"),
            layout=raw_input.choice("layout", ("NCHW",)),
            color=raw_input.choice("color", ("RGB", "GRAY")),
            scale=raw_input.number("scale", minimum=0.0),
            letterbox_pad_value=raw_input.integer("letterbox_pad_value", minimum=0),
            # Packages written before space-to-depth layouts existed have no such field: 1.
            space_to_depth=raw_input.integer("space_to_depth", minimum=1) if "space_to_depth" in raw_input.data else 1,
        )
        layout = input_layout(input_spec.mode)
        for name, expected, got in (("channels", layout.channels, input_spec.channels),
                                    ("color", layout.color, input_spec.color),
                                    ("space_to_depth", layout.block, input_spec.space_to_depth)):
            if got != expected:
                raise PackageError(f"{source}: field 'input.{name}': input mode {input_spec.mode!r} needs "
                                   f"{expected}, the manifest says {got}")
        raw_post = fields.section("postprocess")
        postprocess = PostprocessDefaults(
            score_threshold=raw_post.number("score_threshold", minimum=0.0, maximum=1.0),
            nms_threshold=raw_post.number("nms_threshold", minimum=0.0, maximum=1.0),
            max_detections=raw_post.integer("max_detections", minimum=1),
            nms=raw_post.choice("nms", NMS_METHODS),
        )
        files = {}
        for name, entry in fields.get("files", dict, "an object of file name -> {sha256, bytes}").items():
            entry_fields = _Fields(entry, source, prefix=f"files.{name}.")
            sha = entry_fields.get("sha256", str, "a 64-digit hex sha256")
            if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
                raise PackageError(f"{source}: field 'files.{name}.sha256': expected 64 lowercase hex digits, got {sha!r}")
            if "/" in name or "\\" in name or name in ("", ".", ".."):
                raise PackageError(f"{source}: field 'files': {name!r} is not a plain file name inside the package")
            files[name] = FileEntry(sha, entry_fields.integer("bytes", minimum=0))
        targets = {}
        for target, names in fields.get("targets", dict, "an object of target -> file names").items():
            if target not in TARGETS:
                raise PackageError(f"{source}: field 'targets': unknown target {target!r}; expected some of {TARGETS}")
            if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
                raise PackageError(f"{source}: field 'targets.{target}': expected a non-empty list of file names")
            unlisted = [n for n in names if n not in files]
            if unlisted:
                raise PackageError(f"{source}: field 'targets.{target}': {unlisted} not listed under 'files'")
            targets[target] = list(names)
        if not targets:
            raise PackageError(f"{source}: field 'targets': the package offers no target")
        target_precision = data.get("target_precision") or {}
        if not isinstance(target_precision, dict) or any(
                t not in targets or p not in PRECISIONS for t, p in target_precision.items()):
            raise PackageError(f"{source}: field 'target_precision': expected an object of offered target -> one of "
                               f"{PRECISIONS}, got {target_precision!r}")
        outputs = fields.get("outputs", dict, "a description of the outputs")
        for output in ("boxes", "scores"):
            shape = outputs.get(output, {}).get("shape") if isinstance(outputs.get(output), dict) else None
            if not isinstance(shape, list) or len(shape) != 3 or not all(isinstance(d, int) for d in shape):
                raise PackageError(f"{source}: field 'outputs.{output}.shape': expected [batch, K, {4 if output == 'boxes' else 'C'}]")
        if outputs["scores"]["shape"][2] != len(class_names):
            raise PackageError(f"{source}: field 'outputs.scores.shape': {outputs['scores']['shape'][2]} scores per "
                               f"box, but {len(class_names)} class names")
        metrics = data.get("metrics")
        if metrics is not None and not isinstance(metrics, dict):
            raise PackageError(f"{source}: field 'metrics': expected an object or null")
        return cls(
            name=fields.get("name", str, "the package name"),
            created=fields.get("created", str, "an ISO 8601 time"),
            class_names=list(class_names),
            input=input_spec,
            outputs=outputs,
            postprocess=postprocess,
            precision=fields.choice("precision", PRECISIONS),
            files=files,
            targets=targets,
            target_precision=dict(target_precision),
            model=data.get("model") or {},
            metrics=metrics,
            provenance=data.get("provenance") or {},
            format_version=version,
        )


def read_manifest(package_dir: Path | str) -> Manifest:
    """Read and validate ``package_dir/manifest.json`` (PackageError when missing or invalid)."""
    path = Path(package_dir) / MANIFEST_FILE
    if not path.is_file():
        raise PackageError(f"{package_dir}: not a model package ({MANIFEST_FILE} missing)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise PackageError(f"{path}: unreadable ({error})") from error
    except json.JSONDecodeError as error:
        raise PackageError(f"{path}: not valid JSON at line {error.lineno}, column {error.colno}: {error.msg}") from error
    return Manifest.from_dict(data, str(path))


def write_manifest(package_dir: Path | str, manifest: Manifest) -> Path:
    path = Path(package_dir) / MANIFEST_FILE
    path.write_text(json.dumps(manifest.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def sha256_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path: Path | str) -> FileEntry:
    return FileEntry(sha256_file(path), Path(path).stat().st_size)


class _Fields:
    """Typed access to one JSON object's fields, with errors that name the field's full path."""

    def __init__(self, data: Any, source: str, prefix: str = "") -> None:
        if not isinstance(data, dict):
            where = f"field '{prefix.rstrip('.')}'" if prefix else "the manifest"
            raise PackageError(f"{source}: {where}: expected a JSON object, got {type(data).__name__}")
        self.data, self.source, self.prefix = data, source, prefix

    def _fail(self, key: str, expected: str, value: Any = None, missing: bool = False) -> PackageError:
        what = "is missing" if missing else f"is {value!r}"
        return PackageError(f"{self.source}: field '{self.prefix}{key}' {what}; expected {expected}")

    def get(self, key: str, kind: type, expected: str) -> Any:
        if key not in self.data:
            raise self._fail(key, expected, missing=True)
        value = self.data[key]
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise self._fail(key, expected, value)
        return value

    def section(self, key: str) -> "_Fields":
        return _Fields(self.get(key, dict, "an object"), self.source, f"{self.prefix}{key}.")

    def integer(self, key: str, minimum: int) -> int:
        expected = f"an integer >= {minimum}"
        value = self.get(key, int, expected)
        if value < minimum:
            raise self._fail(key, expected, value)
        return value

    def number(self, key: str, minimum: float, maximum: float = math.inf) -> float:
        expected = f"a number in [{minimum}, {maximum}]"
        value = self.get(key, (int, float), expected)
        if not (math.isfinite(value) and minimum <= value <= maximum):
            raise self._fail(key, expected, value)
        return float(value)

    def choice(self, key: str, allowed: tuple[str, ...]) -> str:
        expected = f"one of {list(allowed)}"
        value = self.get(key, str, expected)
        if value not in allowed:
            raise self._fail(key, expected, value)
        return value
