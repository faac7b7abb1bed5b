"""Recipes and part ids in the window. A mixin of ``MainWindow``.

A recipe (``inspector recipe list``; ``inspector/service/recipes.py``) is validated with the service's own
``load_recipe``: model package, golden template, per-class thresholds, ignore regions. A recipe that fails
is refused with the file and field named, and the active one stays. An accepted one takes effect between
two frames, all at once: with the same model its options are one assignment the inference worker reads
per frame; with another model they travel with the load request and the worker swaps model and options
together once the model is ready (a model that fails to load refuses the recipe). While such a load is
pending the window holds back its own option pushes, so nothing mixes the old and the new.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from PySide6.QtWidgets import QFileDialog

from gui.inference_process import ModelSummary
from gui.palette import WARNING_BANNER
from gui.session import ThresholdError, Thresholds
from inspector.capture import SourceError
from inspector.capture.base import read_template_file


class RecipeRefused(ValueError):
    """A recipe that cannot be used; the message names the file and the field."""


class RecipeMixin:
    """``self.recipe``: the active recipe (None: set by hand); ``self.part_id``: the next boards' id."""

    def _init_recipes(self) -> None:
        """Connects the panels (``self.recipe``, ``_pending_recipe`` and ``part_id`` are set in ``__init__``,
        before the first options are built)."""
        self.recipe_panel.folder_requested.connect(self.choose_recipes_folder)
        self.recipe_panel.refresh_requested.connect(self.refresh_recipes)
        self.recipe_panel.switch_requested.connect(self.select_recipe)
        self.part_panel.part_entered.connect(self.set_part_id)
        self.refresh_recipes()

    # ------------------------------------------------------------------ the list

    def refresh_recipes(self) -> list[str]:
        """The recipe names of the folder (as ``inspector recipe list``), shown in the selector."""
        from inspector.service.recipes import RecipeError, list_recipes

        folder = self.settings.recipes_dir
        names: list[str] = []
        if folder:
            try:
                names = [path.stem for path in list_recipes(Path(folder))]
            except RecipeError as error:
                self.recipe_panel.show_refusal(str(error))
        self.recipe_panel.set_recipes(folder, names, self.recipe.name if self.recipe else self.settings.recipe)
        self._refresh_access()  # the switch button: recipes to switch to, and an engineer to do it
        return names

    def choose_recipes_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Recipe folder", self.settings.recipes_dir or str(Path.cwd()))
        if folder:
            self.set_recipes_folder(folder)

    def set_recipes_folder(self, folder: str) -> None:
        self.settings.recipes_dir = str(folder)
        self.refresh_recipes()
        self.save_settings()

    # ------------------------------------------------------------------ switching

    def select_recipe(self, name: str) -> bool:
        """Validate recipe ``name`` and switch to it between frames (an engineer action, audited). False
        (and the reason on screen) when refused; the active recipe, model, template and thresholds then stay."""
        if not self.engineer_allowed(f"switch to recipe {name}"):
            return False
        try:
            if self._pending_recipe is not None:  # one switch at a time: its model and options go together
                raise RecipeRefused(f"the switch to {_label(self._pending_recipe[0])} is still loading its model; "
                                    "try again once it runs")
            recipe, thresholds, golden = self._prepare_recipe(name)
        except RecipeRefused as error:
            self._refuse_recipe(name, str(error))
            return False
        self._switch_to(recipe, thresholds, golden, who=self.access.engineer)
        return True

    def _prepare_recipe(self, name: str):
        """(recipe, thresholds, golden template) of a valid recipe; RecipeRefused naming file and field."""
        from inspector.export.manifest import PackageError, read_manifest
        from inspector.service.recipes import SHIPPED_PACKAGE, RecipeError, load_recipe, recipe_path

        if not self.settings.recipes_dir:
            raise RecipeRefused("no recipe folder chosen (Recipe tab, Folder…)")
        try:
            recipe = load_recipe(recipe_path(Path(self.settings.recipes_dir), name))
        except RecipeError as error:
            raise RecipeRefused(str(error)) from None
        spec = recipe.spec
        try:
            default = read_manifest(recipe.model_dir or SHIPPED_PACKAGE).postprocess.score_threshold
        except (PackageError, OSError) as error:
            raise RecipeRefused(f"{recipe.file}: field 'model': {error}") from None
        try:
            thresholds = Thresholds(spec.score_threshold if spec.score_threshold is not None else float(default),
                                    dict(spec.thresholds), tuple(spec.ignore_regions))
        except ThresholdError as error:  # the service accepts 0 ("everything"); a verdict needs a score above 0
            field = "score_threshold" if "global" in str(error) else "thresholds"
            raise RecipeRefused(f"{recipe.file}: field '{field}': {error}") from None
        golden = recipe.template if recipe.template is not None else self._manual_golden()
        return recipe, thresholds, golden

    def _manual_golden(self):
        """The template the operator loaded by hand (for a recipe that names none)."""
        if not self.settings.template:
            return None
        try:
            return read_template_file(self.settings.template)
        except SourceError:
            return None

    def _switch_to(self, recipe, thresholds: Thresholds, golden, who: str | None) -> None:
        """``who``: the engineer (audited), None when restoring the recipe that was active."""
        from inspector.service.recipes import SHIPPED_PACKAGE

        wanted = (recipe.model_dir or SHIPPED_PACKAGE).resolve()
        same_model = self.model is not None and Path(self.model.path).resolve() == wanted
        self.recipe_panel.show_refusal("")
        if same_model:
            self._apply_recipe(recipe, thresholds, golden, who)  # one options assignment: between two frames
            return
        path = "" if recipe.model_dir is None else str(recipe.model_dir)
        self._pending_recipe = (recipe, thresholds, golden, path, who)
        self._model_requested_by = who
        options = replace(self._options(), thresholds=thresholds, golden=golden, recipe=_label(recipe))
        self.recipe_panel.show_active(f"Switching to {_label(recipe)}: loading its model {path or 'default'}…")
        self.inference.load_model(path or None, self.settings.backend, self.settings.threads, options)

    def _apply_recipe(self, recipe, thresholds: Thresholds, golden, who: str | None) -> None:
        """The window's state for an accepted recipe (the worker already has it or gets it now)."""
        old = self.recipe
        self.recipe = recipe
        class_names = self.model.class_names if self.model is not None else list(thresholds.per_class)
        self.thresholds = thresholds.restricted_to(class_names)
        self.golden = golden
        self.settings.recipe = recipe.name
        self.settings.global_threshold = recipe.spec.score_threshold
        self.settings.per_class_thresholds = dict(recipe.spec.thresholds)
        if self.model is not None:
            self.threshold_panel.set_model(self.model.class_names, self.thresholds, self.model.default_threshold)
        self._push_options()
        self.save_settings()
        self.recipe_panel.show_active(
            f"Active: {_label(recipe)} — model {recipe.model_dir or 'default'}, template "
            f"{recipe.spec.template or 'none (frames carry theirs, or the one loaded by hand)'}, "
            f"{len(recipe.spec.ignore_regions)} ignore region(s)")
        self.recipe_panel.set_recipes(self.settings.recipes_dir, self._listed_recipes(), recipe.name)
        self._refresh_access()
        self.statusBar().showMessage(f"Recipe {_label(recipe)} active", 8000)
        self._update_title()
        self._audited_thresholds = self.thresholds.to_dict()  # the recipe's entry says what they became
        if who is not None:
            self.audit_change("select recipe", "recipe", _label(old) if old else None, _label(recipe),
                              outcome="switched", who=who)

    def _listed_recipes(self) -> list[str]:
        return [self.recipe_panel.choice.itemText(i) for i in range(self.recipe_panel.choice.count())]

    def _refuse_recipe(self, name: str, reason: str, who: str | None = None) -> None:
        stays = _label(self.recipe) if self.recipe else "the settings made by hand"
        self.recipe_panel.show_refusal(f"Recipe {name} refused, {stays} stays active: {reason}")
        self.message_banner.show_message(f"Recipe {name} refused, {stays} stays active: {reason}", WARNING_BANNER)
        self.audit_change("select recipe", "recipe", _label(self.recipe) if self.recipe else None, name,
                          outcome=f"refused: {reason}", who=who or self.access.engineer or "configuration")

    def _recipe_model_loaded(self, summary: ModelSummary) -> bool:
        """The model of a pending recipe is running (with its options, set by the worker): the window follows.
        False when this load was not a recipe's."""
        pending = self._pending_recipe
        if pending is None or pending[3] != self._loading_path:
            return False
        self._pending_recipe = None
        recipe, thresholds, golden, _, who = pending
        self.model = summary
        self._apply_recipe(recipe, thresholds, golden, who)
        return True

    def _recipe_model_failed(self, path: str, error: str) -> None:
        pending = self._pending_recipe
        if pending is not None and pending[3] == path:
            self._pending_recipe = None
            self._refuse_recipe(pending[0].name, f"{pending[0].file}: field 'model': {error}", who=pending[4])
            self._push_options()  # held back while the load was pending
            if self.model is None and (self.settings.model or "") != path:  # a restored recipe: the saved model
                self.load_model(self.settings.model or None)

    def restore_recipe(self) -> bool:
        """At start-up: the recipe that was active (its model, template, thresholds). False when there was
        none or it is no longer valid (said on the banner; the saved model and thresholds are used)."""
        name = self.settings.recipe
        if not name:
            return False
        try:
            recipe, thresholds, golden = self._prepare_recipe(name)
        except RecipeRefused as error:
            self.settings.recipe = ""
            self.message_banner.show_message(f"Recipe {name} not restored: {error}", WARNING_BANNER)
            return False
        self._switch_to(recipe, thresholds, golden, who=None)
        return True

    # ------------------------------------------------------------------ part id

    def set_part_id(self, part_id: str) -> None:
        """The id of the board(s) that follow (a barcode scanner types it and Enter): in their records."""
        self.part_id = "".join(ch for ch in part_id if ch.isprintable()).strip()[:64]
        self._push_options()
        self.statusBar().showMessage(f"Next part: {self.part_id or '(none)'}", 5000)


def _label(recipe) -> str:
    """As the service's audit trail names a recipe: 'board-a version 3'."""
    return f"{recipe.name} version {recipe.version}"
