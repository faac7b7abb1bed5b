"""Model registry: which model packages exist, which one the line runs, and the gate a new one must pass.

A registry is a directory::

    REGISTRY/registry.json        the index (written atomically: temp file, fsync, rename; under a lock)
    REGISTRY/packages/<id>/       registered packages, copied in (or referenced where they lie)
    REGISTRY/evaluations/         each golden-set evaluation's detections (<id>@<golden fingerprint>.npz)

The index holds every registered model (its package identity, metrics from its manifest, provenance,
who registered it and when), the golden set (a labeled dataset directory, optionally one split of a
split file) fixed for the registry, the stack of promoted models (the top one is *current*: what the
line runs) and an append-only event log (register, golden, promote, refused, rollback), each with
who, when and the numbers it was decided on.

``promote`` runs the candidate through the runtime (``Detector``, Paddle Lite, the package's own score
threshold) on the golden set and compares it with the current model evaluated the same way (cached
per package and golden set): official DeepPCB AP and F (F-maximising threshold), F at the package's
operating threshold, and every class's recall at that threshold. A candidate worse than the current
model by more than the tolerance on any of them is refused, with the numbers; ``force=True`` promotes
it anyway and the event records that it was forced and what it failed. Every promotion and refusal also
states the official AP difference with its paired bootstrap interval over the golden boards (both models' kept
detections; the tolerances still decide). ``rollback`` makes the
previously promoted model current again. Records are never deleted.

This is an application module: it uses the runtime and the data readers, never training code.
"""
from __future__ import annotations

import contextlib
import fcntl
import getpass
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from inspector.data.split import write_json_atomic
from inspector.export.manifest import MANIFEST_FILE, PackageError
from inspector.runtime.package import open_package

INDEX_FILE = "registry.json"
LOCK_FILE = ".registry.lock"
FORMAT_VERSION = 1
# An evaluator may return the golden boards' detections under this key: the registry keeps them in
# evaluations/<model>@<golden fingerprint>.npz so that a promotion states the official AP difference with its paired
# bootstrap interval (on a small golden set a difference of a point can be the boards, not the models).
DETECTIONS_KEY = "detections"
DEFAULT_TOLERANCE = {"official_ap": 0.01, "official_f": 0.01, "f1_at_threshold": 0.01, "class_recall": 0.03}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class RegistryError(ValueError):
    """A registry operation that cannot be done; the message says why and what to do."""


class PromotionRefused(RegistryError):
    """The candidate is worse than the current model beyond the tolerance; ``failures`` lists how."""

    def __init__(self, message: str, failures: list[dict], candidate: dict, current: dict) -> None:
        super().__init__(message)
        self.failures = failures
        self.candidate = candidate
        self.current = current


@dataclass(frozen=True)
class GoldenSet:
    """The fixed labeled boards every promotion is judged on."""

    data: str  # dataset directory (DeepPCB, VOC or COCO layout)
    split_file: str | None = None  # a split.json; then only ``split`` of it is used
    split: str = "val"
    format: str | None = None

    def fingerprint(self) -> str:
        """Identity of the golden set's content: sample keys, their boxes and classes."""
        dataset = self.load()
        digest = hashlib.sha256(json.dumps(dataset.class_names).encode())
        for sample in sorted(dataset.samples, key=lambda s: s.key):
            digest.update(f"{Path(sample.key).name}:{sample.boxes.round(1).tolist()}:{sample.classes.tolist()}\n".encode())
        return digest.hexdigest()[:16]

    def load(self):
        from inspector.data import load_dataset
        from inspector.data.split import load_split

        dataset = load_dataset(self.data, format=self.format)
        if self.split_file:
            train, val = load_split(dataset, self.split_file)
            dataset = val if self.split == "val" else train
        if len(dataset) == 0:
            raise RegistryError(f"{self.data}: the golden set has no boards")
        return dataset

    def to_dict(self) -> dict:
        return {"data": self.data, "split_file": self.split_file, "split": self.split, "format": self.format}


def evaluate_package(package: Path, golden: GoldenSet, backend: str = "lite") -> dict:
    """The gate's numbers for ``package`` on ``golden``, through the runtime at the package's threshold."""
    from inspector.evaluation import evaluate_samples
    from inspector.runtime.detector import Detector
    from inspector.runtime.evaluate import detect_dataset

    detector = Detector.load(package, backend=backend, threads=max(1, min(4, os.cpu_count() or 1)))
    dataset = golden.load()
    threshold = detector.manifest.postprocess.score_threshold
    detections = detect_dataset(detector, dataset, progress=False)
    result = evaluate_samples(dataset.samples, detections, detector.class_names, score_threshold=threshold).to_dict()
    official = "official_ap" in result
    return {
        "official_ap": result["official_ap"] if official else result["map50"],
        "official_f": result["official_f"] if official else result["f1_iou033"],
        "metric_basis": "official DeepPCB AP/F" if official else "COCO mAP@0.5 and DeepPCB F (IoU > 0.33)",
        "f1_at_threshold": result["f1_iou033"],
        "score_threshold": threshold,
        "map50": result["map50"],
        "class_recall": {name: c["recall"] for name, c in result["per_class"].items() if c["recall"] is not None},
        "n_images": result["n_images"],
        "backend": detector.info.backend,
        "precision_ran": detector.info.precision,
        DETECTIONS_KEY: detections,  # kept beside the index by the registry, not in it
    }


def compare(candidate: dict, current: dict, tolerance: dict) -> list[dict]:
    """Every gate metric on which ``candidate`` is worse than ``current`` by more than its tolerance."""
    failures = []
    for key in ("official_ap", "official_f", "f1_at_threshold"):
        if candidate[key] < current[key] - tolerance[key]:
            failures.append({"metric": key, "candidate": candidate[key], "current": current[key],
                             "difference": candidate[key] - current[key], "tolerance": tolerance[key]})
    for name, recall in current["class_recall"].items():
        got = candidate["class_recall"].get(name)
        if got is None:
            continue
        if got < recall - tolerance["class_recall"]:
            failures.append({"metric": f"recall[{name}]", "candidate": got, "current": recall,
                             "difference": got - recall, "tolerance": tolerance["class_recall"]})
    return failures


def describe_difference(difference: dict | None, prefix: str = "") -> str:
    """'official AP -0.42 pt, 95% interval -1.30 to +0.41 pt (paired, ...)' after ``prefix``, or nothing."""
    if not difference:
        return ""
    from inspector.evaluation import Interval

    return (f"{prefix}official AP {100 * difference['difference']:+.2f} pt against the current model, "
            f"{Interval(**difference['interval']).text(points=True)}")


def describe_failures(failures: list[dict]) -> str:
    return "; ".join(f"{f['metric']} {f['candidate']:.4f} vs current {f['current']:.4f} "
                     f"({f['difference']:+.4f}, tolerance {f['tolerance']:.4f})" for f in failures)


class Registry:
    """One registry directory. Every change re-reads the index under an exclusive lock and writes it back
    atomically, so two commands at once never lose each other's records."""

    def __init__(self, root: Path | str, evaluator: Callable[[Path, GoldenSet], dict] = evaluate_package) -> None:
        self.root = Path(root)
        self.evaluator = evaluator

    # ------------------------------------------------------------------ reading

    @property
    def index_path(self) -> Path:
        return self.root / INDEX_FILE

    def read(self) -> dict:
        if not self.index_path.is_file():
            return {"format_version": FORMAT_VERSION, "models": {}, "promoted": [], "events": [], "golden": None,
                    "tolerance": dict(DEFAULT_TOLERANCE), "evaluations": {}}
        try:
            index = json.loads(self.index_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise RegistryError(f"{self.index_path}: not a readable registry index ({error})") from error
        if not isinstance(index, dict) or index.get("format_version") != FORMAT_VERSION:
            raise RegistryError(f"{self.index_path}: field format_version: expected {FORMAT_VERSION}, "
                                f"got {index.get('format_version') if isinstance(index, dict) else index!r}")
        for key, kind in (("models", dict), ("promoted", list), ("events", list), ("evaluations", dict)):
            if not isinstance(index.get(key), kind):
                raise RegistryError(f"{self.index_path}: field {key}: expected a JSON {kind.__name__}")
        return index

    def current(self) -> dict | None:
        """The entry of the model the line should run, or None before the first promotion."""
        index = self.read()
        return index["models"][index["promoted"][-1]] if index["promoted"] else None

    def current_package(self) -> Path | None:
        entry = self.current()
        return None if entry is None else self.package_path(entry)

    def package_path(self, entry: dict) -> Path:
        path = Path(entry["path"])
        return path if path.is_absolute() else self.root / path

    # ------------------------------------------------------------------ changing

    def register(self, package: Path | str, name: str | None = None, by: str | None = None, note: str = "",
                 reference: bool = False) -> dict:
        """Verify ``package`` and add it (copied under ``packages/``, or referenced with ``reference``)."""
        package = Path(package)
        try:
            opened = open_package(package)
        except PackageError as error:
            raise RegistryError(f"not registered: {error}") from error
        manifest = opened.manifest
        name = name or manifest.name
        if not _NAME.match(name):
            raise RegistryError(f"name: expected letters, digits, '.', '_' or '-' (at most 64), got {name!r}")
        manifest_sha = hashlib.sha256((package / MANIFEST_FILE).read_bytes()).hexdigest()[:16]
        with self._locked() as index:
            for entry in index["models"].values():
                if entry["package_id"] == opened.package_id and entry["manifest_sha256"] == manifest_sha:
                    raise RegistryError(f"{package}: already registered as {entry['id']} (same files and manifest)")
            number = 1 + sum(1 for entry in index["models"].values() if entry["name"] == name)
            model_id = f"{name}-{number}"
            if reference:
                stored = str(package.resolve())
            else:
                target = self.root / "packages" / model_id
                if target.exists():
                    raise RegistryError(f"{target}: exists but is not in the index; move it away first")
                staging = Path(tempfile.mkdtemp(prefix=f".{model_id}.", dir=_mkdir(self.root / "packages")))
                try:
                    shutil.copytree(package, staging, dirs_exist_ok=True, symlinks=False)
                    open_package(staging)  # the copy is verified like the original
                    os.replace(staging, target)
                except BaseException:
                    shutil.rmtree(staging, ignore_errors=True)
                    raise
                stored = str(target.relative_to(self.root))
            entry = {
                "id": model_id, "name": name, "path": stored, "referenced": reference,
                "source": str(package.resolve()), "package_id": opened.package_id, "manifest_sha256": manifest_sha,
                "class_names": list(manifest.class_names), "input": {"size": manifest.input.size,
                                                                     "mode": manifest.input.mode},
                "precision": manifest.precision, "metrics": _json_safe(getattr(manifest, "metrics", {}) or {}),
                "provenance": _json_safe(getattr(manifest, "provenance", {}) or {}),
                "registered_by": by or _user(), "registered_at": _now(), "note": note,
            }
            index["models"][model_id] = entry
            index["events"].append({"action": "register", "model": model_id, "by": entry["registered_by"],
                                    "at": entry["registered_at"], "note": note})
        return entry

    def set_golden(self, golden: GoldenSet, by: str | None = None, tolerance: dict | None = None) -> dict:
        """Fix the golden set (and optionally tolerances) that every later promotion is judged on."""
        fingerprint = golden.fingerprint()  # also proves it loads
        tolerance = {**DEFAULT_TOLERANCE, **(tolerance or {})}
        for key, value in tolerance.items():
            if key not in DEFAULT_TOLERANCE or not isinstance(value, (int, float)) or value < 0:
                raise RegistryError(f"tolerance {key}: expected one of {list(DEFAULT_TOLERANCE)} with a "
                                    f"non-negative number, got {value!r}")
        with self._locked() as index:
            index["golden"] = {**golden.to_dict(), "fingerprint": fingerprint}
            index["tolerance"] = tolerance
            event = {"action": "golden", "golden": index["golden"], "tolerance": tolerance, "by": by or _user(),
                     "at": _now()}
            index["events"].append(event)
        return event

    def promote(self, model_id: str, by: str | None = None, force: bool = False, reason: str = "") -> dict:
        """Make ``model_id`` current if it is not worse than the current model on the golden set.

        Raises ``PromotionRefused`` (after recording the refusal) when it is and ``force`` is False.
        """
        index = self.read()
        entry = self._entry(index, model_id)
        if index["golden"] is None:
            raise RegistryError(f"{self.index_path}: no golden set; fix one first with "
                                "`inspector models golden DATA` (Registry.set_golden)")
        golden = GoldenSet(**{k: index["golden"][k] for k in ("data", "split_file", "split", "format")})
        fingerprint = golden.fingerprint()
        if fingerprint != index["golden"]["fingerprint"]:
            raise RegistryError(f"{golden.data}: the golden set changed since it was fixed (fingerprint "
                                f"{fingerprint}, recorded {index['golden']['fingerprint']}); set it again "
                                "with `inspector models golden` to judge on the new boards")
        current_id = index["promoted"][-1] if index["promoted"] else None
        if current_id == model_id:
            raise RegistryError(f"{model_id} is already the current model")
        current = index["models"][current_id] if current_id else None
        if current is not None and current["class_names"] != entry["class_names"]:
            raise RegistryError(f"{model_id} has classes {entry['class_names']}, the current model {current_id} "
                                f"{current['class_names']}: a registry serves one class list")
        candidate_metrics = self._evaluation(index, entry, fingerprint, golden)
        current_metrics = self._evaluation(index, current, fingerprint, golden) if current else None
        tolerance = index.get("tolerance") or dict(DEFAULT_TOLERANCE)
        failures = compare(candidate_metrics, current_metrics, tolerance) if current_metrics else []
        difference = self._paired_difference(candidate_metrics, current_metrics, golden) if current_metrics else None
        user = by or _user()
        event = {"action": "promote", "model": model_id, "previous": current_id, "by": user, "at": _now(),
                 "forced": bool(force and failures), "reason": reason, "golden_fingerprint": fingerprint,
                 "candidate": candidate_metrics, "current": current_metrics, "failures": failures,
                 "official_ap_difference": difference}
        with self._locked() as fresh:
            for key in (entry["id"], current_id):
                if key:
                    fresh["evaluations"].setdefault(f"{key}@{fingerprint}", index["evaluations"].get(f"{key}@{fingerprint}"))
            if (fresh["promoted"][-1] if fresh["promoted"] else None) != current_id:
                raise RegistryError("the current model changed while the candidate was evaluated; promote again")
            if failures and not force:
                event["action"] = "refused"
                fresh["events"].append(event)
            else:
                fresh["promoted"].append(model_id)
                fresh["events"].append(event)
        if failures and not force:
            raise PromotionRefused(f"{model_id} not promoted: worse than the current model {current_id} on the "
                                   f"golden set ({len(failures)} of the gate's metrics): {describe_failures(failures)}"
                                   f"{describe_difference(difference, '; ')}; pass --force to promote it anyway "
                                   "(recorded)", failures, candidate_metrics, current_metrics)
        return event

    def rollback(self, by: str | None = None, reason: str = "") -> dict:
        """Make the model promoted before the current one current again (the event log keeps both)."""
        with self._locked() as index:
            if len(index["promoted"]) < 2:
                raise RegistryError("nothing to roll back to: fewer than two models were ever promoted"
                                    if not index["promoted"] else
                                    f"nothing to roll back to: {index['promoted'][0]} is the only model promoted")
            left = index["promoted"].pop()
            event = {"action": "rollback", "model": index["promoted"][-1], "previous": left, "by": by or _user(),
                     "at": _now(), "reason": reason}
            index["events"].append(event)
        return event

    # ------------------------------------------------------------------ internals

    def _entry(self, index: dict, model_id: str) -> dict:
        if model_id not in index["models"]:
            known = ", ".join(index["models"]) or "none"
            raise RegistryError(f"{model_id}: no such model in {self.index_path} (registered: {known})")
        return index["models"][model_id]

    def _evaluation(self, index: dict, entry: dict, fingerprint: str, golden: GoldenSet) -> dict:
        key = f"{entry['id']}@{fingerprint}"
        if not index["evaluations"].get(key):
            path = self.package_path(entry)
            try:
                package = open_package(path)
            except PackageError as error:
                raise RegistryError(f"{entry['id']}: its package no longer verifies: {error}") from error
            if package.package_id != entry["package_id"]:
                raise RegistryError(f"{entry['id']}: {path} holds other files than were registered "
                                    f"(package id {package.package_id}, registered {entry['package_id']})")
            metrics = dict(self.evaluator(path, golden))
            detections = metrics.pop(DETECTIONS_KEY, None)
            if detections is not None:
                metrics["detections_file"] = self._keep_detections(key, detections)
            index["evaluations"][key] = {**metrics, "at": _now()}
        return index["evaluations"][key]

    def _keep_detections(self, key: str, detections: list) -> str:
        """Write one evaluation's detections under evaluations/ (atomically: two promotions may evaluate the same
        model at once) and return the path relative to the registry."""
        from inspector.evaluation import save_detections

        target = _mkdir(self.root / "evaluations") / f"{key}.npz"
        handle, staging = tempfile.mkstemp(prefix=f".{key}.", suffix=".npz", dir=target.parent)
        os.close(handle)
        try:
            save_detections(staging, detections)
            os.replace(staging, target)
        except BaseException:
            Path(staging).unlink(missing_ok=True)
            raise
        return str(target.relative_to(self.root))

    def _paired_difference(self, candidate: dict, current: dict, golden: GoldenSet) -> dict | None:
        """Candidate - current official AP on the golden boards with its paired 95 % bootstrap interval, when both
        evaluations kept their detections (None otherwise: an evaluation recorded before they were kept)."""
        from inspector.evaluation import ground_truth, load_detections, official_ap_difference_interval

        files = [self.root / metrics["detections_file"] for metrics in (candidate, current)
                 if metrics.get("detections_file")]
        if len(files) != 2 or not all(file.is_file() for file in files):
            return None
        labels = ground_truth(golden.load().samples)
        candidate_dets, current_dets = (load_detections(file) for file in files)
        if not len(candidate_dets) == len(current_dets) == len(labels):
            return None
        interval = official_ap_difference_interval(labels, candidate_dets, current_dets)
        return {"difference": candidate["official_ap"] - current["official_ap"], "interval": interval.to_dict()}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict]:
        """The index, read under an exclusive lock and written back atomically when the block succeeds."""
        _mkdir(self.root)
        with open(self.root / LOCK_FILE, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                index = self.read()
                yield index
                write_json_atomic(self.index_path, index)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


class CurrentModelWatch:
    """For a line (service or GUI) that should follow the registry: ask ``changed()`` between parts; it
    returns ``(model_id, package_dir)`` when the current model is no longer the one last seen (a promotion
    or a rollback), else None. One ``stat`` per call while nothing changed; the index is read only when its
    file changed. The caller loads the package and, only if that works, ``accept``s it, so a
    package that fails to load leaves the running model in place and is offered again next time."""

    def __init__(self, registry: Registry, running_id: str | None = None) -> None:
        self.registry = registry
        self.running_id = running_id
        self._stamp: tuple[int, int] | None = None

    def changed(self) -> tuple[str, Path] | None:
        try:
            status = self.registry.index_path.stat()
        except FileNotFoundError:
            return None
        # Every write replaces the index by a new file created while the old one still exists, so its inode
        # differs from the last one seen even when both writes fall in one tick of the clock.
        stamp = (status.st_ino, status.st_mtime_ns)
        if stamp == self._stamp:
            return None
        entry = self.registry.current()
        if entry is None or entry["id"] == self.running_id:
            self._stamp = stamp
            return None
        return entry["id"], self.registry.package_path(entry)

    def accept(self, model_id: str) -> None:
        """The line now runs ``model_id``."""
        self.running_id = model_id
        self._stamp = None


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def _json_safe(value):
    return json.loads(json.dumps(value, default=str))
