"""The service's side of recipes: which recipe is active, switching between parts, refusing a recipe that
fails validation (the active one stays, the reason is returned and alarmed), keeping the active recipe in
``<data_dir>/active_recipe.json`` across restarts and power loss, and recording every switch and refusal in
the audit trail (who: the PLC front end and its peer address, or the HTTP user; old -> new name and version).
The recipe files themselves: ``recipes.py``.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from inspector.service.recipes import REGISTRY_PREFIX, Recipe, RecipeError, load_recipe, recipe_path

if TYPE_CHECKING:
    from inspector.service.service import Service

log = logging.getLogger("inspector.service.recipes")  # the name operators' log filters know
STATE_FILE = "active_recipe.json"
AUDIT_ACTION = "select recipe"


def _write_state(path: Path, name: str, version: str) -> None:
    """Atomically (temp file, fsync, rename, fsync of the directory): a power cut leaves the old or the new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".active-recipe-")
    try:
        with os.fdopen(descriptor, "w") as handle:
            json.dump({"name": name, "version": version}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@dataclass
class ActiveRecipe:
    """What ``Service._inspect`` takes in one read: the recipe and the detector that goes with it."""

    recipe: Recipe
    detector: Any  # DetectorProcess


class RecipeManager:
    """Loads, validates and switches the service's recipe (PLC, HTTP). One load at a time."""

    def __init__(self, service: "Service", directory: Path, state_file: Path):
        self.service = service
        self.directory = Path(directory)
        self.state_file = Path(state_file)
        self._lock = threading.Lock()
        self._follow_lock = threading.Lock()
        self.active: Optional[ActiveRecipe] = None
        self.last_refusal: Optional[str] = None

    def _stored(self) -> dict:
        try:
            stored = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        return stored if isinstance(stored, dict) else {}

    def stored_name(self) -> Optional[str]:
        return self._stored().get("name")

    def load_initial(self, name: Optional[str]) -> None:
        """At start-up: ``name`` (configuration) or the stored active recipe. Raises RecipeError. A recipe
        or version other than the one active before the restart is an audited change by the configuration."""
        stored = self._stored()
        name = name or stored.get("name")
        if name is None:
            return
        active = self._prepare(recipe_path(self.directory, name))
        self._activate(active)
        before = f"{stored.get('name')} version {stored.get('version')}" if stored.get("name") else None
        if before != _label(active):
            self._audit("configuration", None, before, active, "switched at start-up")

    def _prepare(self, path: Path) -> ActiveRecipe:
        recipe = load_recipe(path)
        current = self.active.detector if self.active is not None else self.service.detector
        if recipe.package_id == current.manifest.package_id:
            detector = current
        else:
            from inspector.service.inference import DetectorProcess, DetectorStartError

            try:
                detector = DetectorProcess(recipe.model_dir, backend=self.service.config.backend,
                                           threads=self.service.config.threads)
            except DetectorStartError as error:
                raise RecipeError(f"{path}: field 'model': {error}") from None
        if detector.needs_template and recipe.template is None and self.service.source.kind in ("camera", "stream",
                                                                                                    "video") \
                and getattr(self.service.source, "template", None) is None and self.service.config.template is None:
            if detector is not current:
                detector.close()
            raise RecipeError(f"{path}: field 'template': the model compares each frame with a golden template "
                              f"and this {self.service.source.kind} source has none")
        return ActiveRecipe(recipe, detector)

    def _activate(self, active: ActiveRecipe) -> None:
        previous = self.active
        self.active = active
        service = self.service
        old_detector = previous.detector if previous is not None else service.detector
        service.detector = active.detector
        service.model_name = active.detector.manifest.name
        service.package_id = active.detector.manifest.package_id
        service.recipe_name, service.recipe_version = active.recipe.name, active.recipe.version
        _write_state(self.state_file, active.recipe.name, active.recipe.version)
        if old_detector is not active.detector:
            if service._owns_detector:
                old_detector.close()  # between parts: nothing is being detected with it
            service._owns_detector = True
        if service.plc is not None:
            service.plc.set_recipe(active.recipe.name, active.recipe.version)
        camera = getattr(service.source, "source", None)  # inside the ReconnectingSource
        settings = active.recipe.spec.camera
        if hasattr(camera, "apply_settings") and (settings.exposure_us is not None or settings.gain_db is not None):
            try:
                camera.apply_settings(exposure_us=settings.exposure_us, gain_db=settings.gain_db)
            except Exception as error:  # noqa: BLE001 - a camera gone now gets them when it is reopened
                log.warning("recipe %s: camera settings not applied now: %s", active.recipe.name, error)
        log.info("recipe %s version %s active (model %s)", active.recipe.name, active.recipe.version,
                 service.model_name)

    def follow_registry(self) -> Optional[tuple[bool, str]]:
        """When the active recipe's model is ``registry:DIR`` and that registry's current model changed (a
        promotion or a rollback), reload the recipe: the new model takes over between parts, like any recipe
        switch (a model that fails to load is refused and alarmed; the running one stays). None: no change.
        The service's monitor calls this every second."""
        active = self.active
        if active is None or not active.recipe.spec.model.startswith(REGISTRY_PREFIX):
            return None
        with self._follow_lock:  # the monitor and a caller at once must not switch twice
            return self._follow_registry(active)

    def _follow_registry(self, active: "ActiveRecipe") -> Optional[tuple[bool, str]]:
        from inspector.registry import CurrentModelWatch, Registry

        registry_dir = (active.recipe.file.parent / active.recipe.spec.model[len(REGISTRY_PREFIX):]).resolve()
        watch = getattr(self, "_registry_watch", None)
        if watch is None or watch.registry.root != registry_dir:
            current = Registry(registry_dir).current()
            watch = self._registry_watch = CurrentModelWatch(Registry(registry_dir), current and current["id"])
        change = watch.changed()
        if change is None:
            return None
        accepted, reason = self.request(active.recipe.name, source=f"registry {registry_dir} ({change[0]})")
        watch.accept(change[0])  # handled: a refusal is alarmed once, not every second; the next promotion retries
        return accepted, reason

    def request(self, name: str, source: str = "http", *, who: Optional[str] = None,
                role: Optional[str] = None) -> tuple[bool, str]:
        """Validate ``name`` and switch to it between parts. (accepted, reason); a refusal is alarmed and
        the active recipe stays. ``who`` (the HTTP user, the PLC front end with its peer address; default
        ``source``) and ``role`` go into the audit trail with the old and the new recipe."""
        who = who or source
        plc = self.service.plc
        with self._lock:
            current = self.active
            try:
                active = self._prepare(recipe_path(self.directory, name))
            except RecipeError as error:
                return self._refuse(name, str(error), source, who, role, current)
            self.last_refusal = None
            if plc is None:
                self._activate(active)
                self._audit(who, role, current, active, "switched")
                return True, "active"
            pending = plc.state != "READY"
            if pending:
                plc.set_recipe_status("pending")
                self._audit(who, role, current, active, "pending: applied after the current part")

            def switch() -> None:
                before = self.active
                self._activate(active)
                self._audit(who, role, before, active, "switched after the part in progress" if pending else "switched")
                plc.set_recipe_status("accepted")  # after the audit entry: what the PLC sees is recorded

            plc.between_parts(switch)
            return True, "pending: applied after the current part" if pending else "active"

    def switch_now(self, name: str, who: str) -> tuple[bool, str]:
        """Switch at once, for the worker choosing the recipe of the part it is about to judge (no part is
        in progress: ``request`` would wait for the PLC's Ack of the very part that asks). Validated and
        audited like a request; a refusal keeps the active recipe and is alarmed."""
        plc = self.service.plc
        with self._lock:
            current = self.active
            try:
                active = self._prepare(recipe_path(self.directory, name))
            except RecipeError as error:
                return self._refuse(name, str(error), who, who, None, current)
            self.last_refusal = None
            self._activate(active)
            self._audit(who, None, current, active, "switched")
            if plc is not None:
                plc.set_recipe_status("accepted")
            return True, "active"

    def _refuse(self, name: str, reason: str, source: str, who: str, role: Optional[str],
                current: Optional[ActiveRecipe]) -> tuple[bool, str]:
        """A recipe that failed validation: the active one stays; alarmed, audited, shown to the PLC."""
        self.last_refusal = reason
        current_name = current.recipe.name if current else "(none)"
        self.service.raise_alarm("recipe_refused", "warning", f"recipe {name!r} requested by {source} refused, "
                                 f"{current_name} stays active: {reason}", recipe=name)
        self._audit(who, role, current, name, f"refused: {reason}")
        if self.service.plc is not None:
            self.service.plc.set_recipe_status(f"refused: {reason}")
        return False, reason

    def _audit(self, who: str, role: Optional[str], old, new, outcome: str) -> None:
        """One audit entry for a recipe request; the trail failing must not stop the line (logged loudly)."""
        audit = getattr(self.service, "audit", None)
        if audit is None:
            return
        try:
            audit.record(who, AUDIT_ACTION, "recipe", _label(old), _label(new), role=role, outcome=outcome)
        except Exception:
            log.exception("audit trail: the recipe request by %s (%s -> %s) was not recorded", who, _label(old),
                          _label(new))


def _label(recipe) -> Optional[str]:
    """'board-a version 3' for an active recipe, the bare name for one that was only asked for."""
    if recipe is None:
        return None
    if isinstance(recipe, str):
        return recipe
    recipe = getattr(recipe, "recipe", recipe)  # ActiveRecipe -> Recipe
    return f"{recipe.name} version {recipe.version}"
