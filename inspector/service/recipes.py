"""Recipes: what a line needs to inspect one board type, as one YAML file an engineer reviews in git.

    # recipes/board-a.yaml
    name: board-a                 # the file is <name>.yaml
    version: "3"                  # bump it with every change; every record carries name and version
    description: 4-layer controller board, top side
    model: ../models/default      # model package (relative to this file), "default" (the shipped one), or
                                  # registry:../models/registry (that registry's current, promoted model)
    template: golden/board-a.png  # golden template for sources whose frames carry none (cameras)
    ignore_regions:               # frame pixels x1, y1, x2, y2: a defect whose centre is inside is ignored
      - [0, 0, 40, 640]           #   (fixtures, labels, a connector the model keeps flagging)
    score_threshold: 0.30         # default score threshold of every class
    thresholds:                   # per-class score thresholds (class names of the model)
      open: 0.50
      short: 0.25
    camera:                       # applied by sources that can (GenICam); kept with the records otherwise
      exposure_us: 8000
      gain_db: 0.0
      pixel_format: Mono8
    trigger: software             # software | hardware | free-run
    part_id_pattern: "SN-A[0-9]{6}"  # regular expression (whole id): with recipe_by_part_id, a part whose id
                                  # (PLC PartId, else the code read from the board) matches is judged with
                                  # this recipe; recipe_choice.py

``load_recipe`` validates with pydantic and then against the files: the model package's manifest, the
template image, class names; every error names the file and the field. ``RecipeManager`` (the service)
switches recipes between parts only, refuses one that fails validation (the active one stays, the reason
is returned and alarmed), and keeps the active recipe's name in ``<data_dir>/active_recipe.json``
(written atomically), so it survives a restart and a power loss: ``recipe_manager.py``.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

log = logging.getLogger(__name__)

SHIPPED_PACKAGE = Path(__file__).resolve().parents[2] / "models" / "default"
REGISTRY_PREFIX = "registry:"  # model: registry:DIR follows that registry's current (promoted) model
RECIPE_SUFFIXES = (".yaml", ".yml")
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"


class RecipeError(ValueError):
    """A recipe cannot be used; the message names the file and the field and says what was expected."""


class CameraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    exposure_us: Optional[float] = Field(None, gt=0, le=10_000_000)
    gain_db: Optional[float] = Field(None, ge=0, le=48)
    pixel_format: Optional[str] = Field(None, pattern=r"^[A-Za-z0-9_]{1,32}$")


class RecipeFile(BaseModel):
    """The YAML file's schema (extra keys are refused: a misspelt key is an error, not a silent default)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=f"^{NAME_PATTERN}$")
    version: str = Field(min_length=1, max_length=32)
    description: str = ""
    model: str = Field("default", min_length=1, description="package directory relative to the file, or default")
    template: Optional[str] = None
    ignore_regions: list[tuple[float, float, float, float]] = Field(default_factory=list)
    score_threshold: Optional[float] = Field(None, ge=0.0, le=1.0)
    thresholds: dict[str, float] = Field(default_factory=dict)
    camera: CameraSettings = Field(default_factory=CameraSettings)
    trigger: Literal["software", "hardware", "free-run"] = "software"
    part_id_pattern: Optional[str] = Field(None, min_length=1, max_length=256,
                                           description="regular expression the whole part id must match")

    @field_validator("part_id_pattern")
    @classmethod
    def _pattern_compiles(cls, pattern: Optional[str]) -> Optional[str]:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"expected a regular expression (Python re), {pattern!r} is not one: {error}") \
                    from None
        return pattern

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    @field_validator("ignore_regions")
    @classmethod
    def _boxes(cls, regions: list) -> list:
        for index, (x1, y1, x2, y2) in enumerate(regions):
            if not (0 <= x1 < x2 and 0 <= y1 < y2):
                raise ValueError(f"region {index}: expected [x1, y1, x2, y2] with 0 <= x1 < x2 and 0 <= y1 < y2, "
                                 f"got {[x1, y1, x2, y2]}")
        return regions

    @field_validator("thresholds")
    @classmethod
    def _threshold_range(cls, thresholds: dict) -> dict:
        for name, value in thresholds.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"class {name!r}: expected a score between 0 and 1, got {value}")
        return thresholds


@dataclass
class Recipe:
    """A validated recipe with its files resolved."""

    file: Path
    spec: RecipeFile
    model_dir: Optional[Path]  # None: the shipped package
    package_id: str
    class_names: list[str]
    template: Optional[np.ndarray] = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> str:
        return self.spec.version

    def lowest_threshold(self) -> Optional[float]:
        """What the detector is asked for; per-class thresholds above it are applied after detection."""
        values = list(self.spec.thresholds.values())
        if self.spec.score_threshold is not None:
            values.append(self.spec.score_threshold)
        return min(values) if values else None

    def keep(self, detections):
        """The detections this recipe accepts: per-class thresholds, ignore regions. Same type back."""
        if detections is None or len(detections) == 0 or (not self.spec.thresholds and not self.spec.ignore_regions
                                                           and self.spec.score_threshold is None):
            return detections
        from dataclasses import replace

        default = self.spec.score_threshold
        keep = []
        for index, (box, score, name) in enumerate(zip(detections.boxes, detections.scores, detections.class_names)):
            threshold = self.spec.thresholds.get(name, default)
            if threshold is not None and float(score) < threshold:
                continue
            cx, cy = (float(box[0]) + float(box[2])) / 2, (float(box[1]) + float(box[3])) / 2
            if any(x1 <= cx <= x2 and y1 <= cy <= y2 for x1, y1, x2, y2 in self.spec.ignore_regions):
                continue
            keep.append(index)
        rows = np.asarray(keep, dtype=np.int64)
        return replace(detections, boxes=detections.boxes[rows], scores=detections.scores[rows],
                       class_ids=detections.class_ids[rows], class_names=[detections.class_names[i] for i in keep])

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "file": str(self.file),
                "model": str(self.model_dir) if self.model_dir else "default", "package_id": self.package_id,
                **self.spec.model_dump(exclude={"name", "version", "model"})}


# ------------------------------------------------------------------------------------------ files

def recipe_path(directory: Path, name: str) -> Path:
    if not re.fullmatch(NAME_PATTERN, name or ""):
        raise RecipeError(f"recipe name {name!r}: expected 1-64 letters, digits, '_', '.', '-'")
    for suffix in RECIPE_SUFFIXES:
        path = Path(directory) / f"{name}{suffix}"
        if path.is_file():
            return path
    raise RecipeError(f"recipe {name!r}: no {name}.yaml in {directory}")


def list_recipes(directory: Path) -> list[Path]:
    directory = Path(directory)
    if not directory.is_dir():
        raise RecipeError(f"recipes directory {directory}: not a directory")
    return sorted(path for path in directory.iterdir() if path.suffix in RECIPE_SUFFIXES and path.is_file())


def load_recipe(path: Path | str, *, read_template: bool = True) -> Recipe:
    """Read and validate one recipe file; RecipeError naming the file and field otherwise."""
    from inspector.export.manifest import PackageError, read_manifest

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise RecipeError(f"{path}: cannot read ({error.strerror or error})") from None
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: expected a mapping of field: value, got {type(data).__name__}")
    try:
        spec = RecipeFile(**data)
    except ValidationError as error:
        problems = []
        for problem in error.errors():
            where = ".".join(str(part) for part in problem["loc"]) or "(file)"
            problems.append(f"{path}: field '{where}': {problem['msg'].removeprefix('Value error, ')}")
        raise RecipeError("\n".join(problems)) from None
    if spec.name != path.stem:
        raise RecipeError(f"{path}: field 'name': {spec.name!r} differs from the file name {path.stem!r} "
                          "(a recipe is selected by its file name)")
    model_dir = None if spec.model == "default" else (path.parent / spec.model).resolve()
    if spec.model.startswith(REGISTRY_PREFIX):  # the registry's current model (inspector.registry)
        from inspector.registry import Registry, RegistryError

        registry_dir = (path.parent / spec.model[len(REGISTRY_PREFIX):]).resolve()
        try:
            model_dir = Registry(registry_dir).current_package()
        except RegistryError as error:
            raise RecipeError(f"{path}: field 'model': {error}") from None
        if model_dir is None:
            raise RecipeError(f"{path}: field 'model': the registry {registry_dir} has no promoted model yet "
                              "(inspector models promote)")
        model_dir = model_dir.resolve()
    try:
        manifest = read_manifest(model_dir or SHIPPED_PACKAGE)
    except (PackageError, OSError) as error:
        raise RecipeError(f"{path}: field 'model': {spec.model!r} is not a usable model package ({error})") from None
    unknown = sorted(set(spec.thresholds) - set(manifest.class_names))
    if unknown:
        raise RecipeError(f"{path}: field 'thresholds': unknown class(es) {', '.join(unknown)}; the model "
                          f"{manifest.name} knows {', '.join(manifest.class_names)}")
    template = None
    if spec.template is not None:
        template_file = path.parent / spec.template
        if read_template:
            from inspector.capture.base import SourceError, read_template_file

            try:
                template = read_template_file(template_file)
            except SourceError as error:
                raise RecipeError(f"{path}: field 'template': {error}") from None
        elif not template_file.is_file():
            raise RecipeError(f"{path}: field 'template': {template_file} is not a file")
    return Recipe(file=path, spec=spec, model_dir=model_dir, package_id=manifest.package_id,
                  class_names=list(manifest.class_names), template=template)


def write_recipe(directory: Path, spec: RecipeFile) -> Path:
    """A new recipe file (refuses to overwrite one: versions are changed by editing, reviewed in git)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{spec.name}.yaml"
    if path.exists():
        raise RecipeError(f"{path}: exists already; edit it and bump its version")
    data = spec.model_dump(exclude_defaults=False)
    data["ignore_regions"] = [list(region) for region in spec.ignore_regions]
    data["camera"] = {key: value for key, value in data["camera"].items() if value is not None}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
