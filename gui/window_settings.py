"""What the operator sets and the window keeps: the model, thresholds, golden template, overlay and
alignment switches, the evidence folder, and saving all of it. A mixin of ``MainWindow``."""
from __future__ import annotations

from pathlib import Path

from gui.evidence import EvidenceStore
from gui.inference_process import ModelSummary
from gui.palette import ERROR_BANNER, NG_COLOUR, PASS_COLOUR, WARNING_BANNER
from gui.session import Thresholds
from gui.settings import save_settings
from gui.workers import InferenceOptions
from inspector.capture import SourceError
from inspector.capture.base import read_template_file
from inspector.service.serial_codes import missing_decoder_note

CODE_NOTE_PREFIX = "Part id codes: "  # the banner's note that zxing-cpp is missing, cleared by its prefix


class SettingsMixin:
    """Model loading, thresholds and template: each change is pushed to the inference worker as one
    ``InferenceOptions`` and saved."""

    def load_model(self, path: str | None) -> None:
        self.inference.load_model(path, self.settings.backend, self.settings.threads)

    def _model_loading(self, path: str) -> None:
        self._loading_path = path
        self.model_panel.set_state(f"loading {path or 'the shipped default'}…")
        self.statusBar().showMessage(f"Loading model {path or '(shipped default)'}…")

    def select_model(self, path: str) -> None:
        """An engineer action: load another package (audited when it runs or fails)."""
        if not self.engineer_allowed("change the model"):
            return
        self._model_requested_by = self.access.engineer
        self.load_model(path)

    def _model_loaded(self, summary: ModelSummary) -> None:
        before = self.model
        self.settings.model = self._loading_path  # what was asked for ("" = the shipped default, whatever it is)
        if not self._recipe_model_loaded(summary):
            self.model = summary
            if self.recipe is not None:  # a model chosen by hand: the recipe no longer says what runs
                self.recipe, self.settings.recipe = None, ""
                self.recipe_panel.show_active("No recipe active: model, template and thresholds are set by hand.")
            if self.settings.global_threshold is None:
                thresholds = Thresholds(summary.default_threshold, self.thresholds.per_class,
                                        self.thresholds.ignore_regions)
            else:
                thresholds = self.thresholds
            self.thresholds = thresholds.restricted_to(summary.class_names)
            self.threshold_panel.set_model(summary.class_names, self.thresholds, summary.default_threshold)
        if before is not None and (before.path, before.package_id) != (summary.path, summary.package_id):
            self.audit_change("select model", "model", f"{before.path} ({before.package_id})",
                              f"{summary.path} ({summary.package_id})", outcome="loaded",
                              who=self._model_requested_by or "configuration")
        self._model_requested_by = None
        self.counters.set_class_names(summary.class_names)
        self.review_panel.set_class_names(summary.class_names)
        self.model_panel.show_model(summary)
        self.model_panel.set_state("running", PASS_COLOUR)
        self._push_options()
        if self.message_banner.text().startswith("Model"):
            self.message_banner.clear_message()
        self.statusBar().showMessage(f"Model {summary.name} loaded in {summary.load_seconds:.1f} s", 8000)
        self.view.set_placeholder("Waiting for frames…")
        self.counters.show_counters(self.session.counters)
        self._update_title()
        self.save_settings()

    def _model_failed(self, path: str, error: str) -> None:
        still = f"still running {self.model.name}" if self.model else "no model is running: load one (Ctrl+O)"
        self.message_banner.show_message(f"Model {path or '(shipped default)'} not loaded: {error} — {still}",
                                         WARNING_BANNER if self.model else ERROR_BANNER)
        self.model_panel.set_state(f"load failed; {still}", NG_COLOUR)
        if self.model is None:
            self.view.set_placeholder("No model loaded")
        if self._model_requested_by is not None:
            self.audit_change("select model", "model", f"{self.model.path} ({self.model.package_id})"
                              if self.model else None, path or "(shipped default)", outcome=f"refused: {error}",
                              who=self._model_requested_by)
            self._model_requested_by = None
        self._recipe_model_failed(path, error)  # a recipe waiting for this model is refused

    def _options(self) -> InferenceOptions:
        return InferenceOptions(self.thresholds, self.golden, self.settings.align, self.settings.show_overlay,
                                self.settings.flag_changes, part_id=self.part_id,
                                read_serial_code=self.settings.read_serial_code,
                                serial_code_formats=tuple(self.settings.serial_code_formats),
                                recipe=f"{self.recipe.name} version {self.recipe.version}" if self.recipe else "")

    def _push_options(self) -> None:
        if self._pending_recipe is not None:
            return  # a recipe's model is loading with its options: pushed once it runs (window_recipes)
        self.inference.options = self._options()  # one assignment: the worker sees old or new, never half

    def set_thresholds(self, thresholds: Thresholds) -> None:
        """An engineer action: refused (the panel shows the thresholds in force again) while locked; recorded
        in the audit trail once the knob settles (``_thresholds_settled``)."""
        if not self.engineer_allowed("change thresholds"):
            self.threshold_panel.show_thresholds(self.thresholds)
            return
        if not self._save_timer.isActive():
            self._audited_thresholds = self.thresholds.to_dict()  # in force before this burst of changes
        self._threshold_changer = self.access.engineer
        if not thresholds.ignore_regions and self.thresholds.ignore_regions:  # the panel knows no regions
            thresholds = Thresholds(thresholds.global_threshold, thresholds.per_class, self.thresholds.ignore_regions)
        self.thresholds = thresholds
        self._push_options()
        model_default = self.model.default_threshold if self.model is not None else None
        self.settings.global_threshold = None if model_default is not None and abs(
            thresholds.global_threshold - model_default) < 5e-3 else thresholds.global_threshold
        self.settings.per_class_thresholds = dict(thresholds.per_class)
        self._save_timer.start()
        if self.review is None and self.current is not None:
            self._show_live(self.current)  # the frame on screen re-judged at once

    def set_template(self, path: str) -> None:
        """An engineer action (the golden board decides verdicts), audited."""
        if not self.engineer_allowed("load a golden template"):
            return
        try:
            self.golden = read_template_file(path)
        except SourceError as error:
            self.message_banner.show_message(f"Golden template not loaded: {error}", ERROR_BANNER)
            self.audit_change("select golden template", "template", self.settings.template or None, path,
                              outcome=f"refused: {error}")
            return
        self.audit_change("select golden template", "template", self.settings.template or None, path,
                          outcome="loaded")
        self.settings.template = path
        self._push_options()
        self.save_settings()
        self.statusBar().showMessage(f"Golden template {path} ({self.golden.shape[1]}x{self.golden.shape[0]})", 8000)

    def _set_overlay(self, on: bool) -> None:
        self.settings.show_overlay = bool(on)
        self._push_options()
        self.save_settings()

    def _set_flag_changes(self, on: bool) -> None:
        self.settings.flag_changes = bool(on)
        self._push_options()
        self.save_settings()

    def _set_align(self, on: bool) -> None:
        self.settings.align = bool(on)
        self._push_options()
        self.save_settings()

    def _set_read_serial_code(self, on: bool) -> None:
        self.settings.read_serial_code = bool(on)
        self._push_options()
        self.save_settings()
        self._show_code_reading_note()

    def _show_code_reading_note(self) -> None:
        """Without zxing-cpp only QR codes are read: said on the banner while part ids are read from codes (in
        the log alone, an operator would only see Data Matrix serials never appear)."""
        note = missing_decoder_note(self.settings.serial_code_formats) if self.settings.read_serial_code else None
        if note:
            self.message_banner.show_message(f"{CODE_NOTE_PREFIX}{note}", WARNING_BANNER)
        elif self.message_banner.text().startswith(CODE_NOTE_PREFIX):
            self.message_banner.clear_message()

    def _set_serial_code_format(self, name: str, on: bool) -> None:
        """A format switched on is read after those already on (the lowest priority; the settings file may
        order them at will). The last one stays on: to read no code, switch off reading the part id."""
        formats = [known for known in self.settings.serial_code_formats if known != name] + ([name] if on else [])
        if not formats:
            self.serial_format_actions[name].setChecked(True)
            self.statusBar().showMessage("One code format at least stays on; to read none, switch off Inspect → "
                                         "Read part id from a code", 8000)
            return
        self.settings.serial_code_formats = formats
        self._push_options()
        self.save_settings()
        self._show_code_reading_note()

    def save_settings(self) -> None:
        self.settings.window_geometry = bytes(self.saveGeometry().toBase64()).decode()
        try:
            save_settings(self.config_path, self.settings)
        except OSError as error:
            self.statusBar().showMessage(f"Settings not saved to {self.config_path}: {error}", 10_000)

    def set_evidence_folder(self, folder: str) -> None:
        self.settings.evidence_dir = folder
        self.evidence.store = EvidenceStore(Path(folder))  # one assignment: the writer uses old or new
        self.save_settings()
