"""Engineer login and the audit trail in the window. A mixin of ``MainWindow``.

Operators view and run; the engineer actions (thresholds, recipe, model, golden template, saving a review
as training data) ask ``engineer_allowed`` first, and their widgets are disabled while the session is
locked (``gui.access``). Each change made here is appended to the audit trail in the service's storage
format (``inspector.service.audit.AuditLog``, ``settings.audit_db``): who, when, what, old -> new, outcome,
so ``/audit`` and its CSV export read the GUI's entries like the service's. Threshold changes are recorded
once the knob settles (with the settings save), not per click.
"""
from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QFormLayout, QLabel, QLineEdit

from gui.access import AccessDenied, EngineerAccess, engineers_problem
from gui.palette import ERROR_BANNER, WARNING_BANNER

ACCESS_REFRESH_MS = 1000
ROLE = "engineer"


class AuditUnavailable(OSError):
    """The audit trail's file cannot be opened or created."""


class AccessMixin:
    """``self.access``: the engineer session; ``audit_change``: one entry in the audit trail."""

    def _init_access(self) -> None:
        problem = engineers_problem(self.settings.engineers)
        if problem:
            self.message_banner.show_message(f"{self.config_path}: {problem}; engineer actions stay locked",
                                             WARNING_BANNER)
        self.access = EngineerAccess({} if problem else self.settings.engineers,
                                     self.settings.engineer_unlock_minutes * 60.0)
        self._audit_log = None
        self._audited_thresholds = self.thresholds.to_dict()
        self._threshold_changer = None
        self._model_requested_by = None
        self.access_label = QLabel()
        self.statusBar().addPermanentWidget(self.access_label)
        self._access_timer = QTimer(self, interval=ACCESS_REFRESH_MS)
        self._access_timer.timeout.connect(self._refresh_access)
        self._access_timer.start()
        self._refresh_access()

    # ------------------------------------------------------------------ the session

    def engineer_allowed(self, what: str) -> bool:
        """True while an engineer is logged in; otherwise says who may do ``what`` and how."""
        if self.access.unlocked:
            return True
        self._refresh_access()
        self.message_banner.show_message(f"To {what}, an engineer must log in first (Engineer ▸ Log in…, "
                                         "Ctrl+L); operators can view and run.", WARNING_BANNER)
        return False

    def unlock_engineer(self, name: str, pin: str) -> bool:
        """Check the PIN; unlocked for ``engineer_unlock_minutes``. A refusal is shown and audited."""
        try:
            engineer = self.access.unlock(name, pin)
            self._open_audit()  # no engineer change without its record
        except AccessDenied as denied:
            self.message_banner.show_message(f"Engineer login refused: {denied}", ERROR_BANNER)
            self.audit_change("engineer login", "session", None, None, outcome=f"refused: {denied}",
                              who=name.strip() or "(no name)", role=None)
            return False
        except AuditUnavailable as error:
            self.access.lock()
            self.message_banner.show_message(f"Engineer login refused: {error}; engineer changes must be "
                                             "recorded (settings: audit_db)", ERROR_BANNER)
            return False
        if self.message_banner.text().startswith(("Engineer login", "To ")):
            self.message_banner.clear_message()
        self.audit_change("engineer login", "session", "locked", "unlocked",
                          outcome=f"for {self.settings.engineer_unlock_minutes:g} min")
        self._refresh_access()
        self.statusBar().showMessage(f"Engineer {engineer} logged in", 5000)
        return True

    def lock_engineer(self) -> None:
        engineer = self.access.engineer
        self.access.lock()
        if engineer is not None:
            self.audit_change("engineer logout", "session", "unlocked", "locked", who=engineer)
        self._refresh_access()

    def ask_engineer_login(self) -> None:
        dialog = QDialog(self)
        dialog.setWindowTitle("Engineer login")
        name, pin = QLineEdit(), QLineEdit()
        pin.setEchoMode(QLineEdit.EchoMode.Password)
        if len(self.access.engineers) == 1:
            name.setText(next(iter(self.access.engineers)))
        form = QFormLayout(dialog)
        if not self.access.engineers:
            form.addRow(QLabel(f"No engineer PIN is set. With the GUI closed, run\n"
                               f"python -m gui.access NAME --config {self.config_path}"))
        form.addRow("Name", name)
        form.addRow("PIN", pin)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(dialog.accept)
        buttons.rejected.connect(dialog.reject)
        form.addRow(buttons)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.unlock_engineer(name.text(), pin.text())
        pin.clear()

    def _refresh_access(self) -> None:
        """Label and widgets follow the session (it ends by itself when its time is up)."""
        unlocked = self.access.unlocked
        if unlocked:
            minutes, seconds = divmod(int(self.access.remaining_s()), 60)
            self.access_label.setText(f"Engineer: {self.access.engineer} ({minutes}:{seconds:02d} left)")
        else:
            self.access_label.setText("Operator (engineer actions locked)")
        self.threshold_panel.setEnabled(unlocked)
        self.model_panel.load_button.setEnabled(unlocked)
        self.recipe_panel.switch_button.setEnabled(unlocked and self.recipe_panel.choice.count() > 0)
        self.review_panel.save_button.setEnabled(unlocked and self.review is not None)
        for act in (self.model_action, self.template_action, self.save_review_action):
            act.setEnabled(unlocked)
        self.login_action.setEnabled(not unlocked)
        self.lock_action.setEnabled(unlocked)

    # ------------------------------------------------------------------ the audit trail

    def audit_change(self, action: str, target: str, old, new, *, outcome: str | None = None,
                     who: str | None = None, role: str | None = ROLE) -> bool:
        """One entry in the audit trail; False (and an error on the banner) when it cannot be written."""
        import sqlite3

        who = who or self.access.engineer or "operator"
        try:
            self._open_audit().record(who, action, target, old, new, role=role, outcome=outcome)
        except (AuditUnavailable, OSError, sqlite3.Error) as error:
            self.message_banner.show_message(f"Audit trail {self.settings.audit_db} not written ({action} by "
                                             f"{who}): {error}", ERROR_BANNER)
            return False
        return True

    def _open_audit(self):
        """The audit trail (``AuditLog``), opened once; AuditUnavailable naming the file when it cannot be."""
        import sqlite3

        from inspector.service.audit import AuditLog

        if self._audit_log is None:
            path = Path(self.settings.audit_db)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._audit_log = AuditLog(path)
            except (OSError, sqlite3.Error) as error:
                raise AuditUnavailable(f"the audit trail {path} cannot be written ({error})") from None
        return self._audit_log

    def _thresholds_settled(self) -> None:
        """The save timer fired: save, and record the thresholds if they differ from the last entry's."""
        self.save_settings()
        now = self.thresholds.to_dict()
        if now != self._audited_thresholds:
            self.audit_change("change thresholds", "thresholds", json.dumps(self._audited_thresholds, sort_keys=True),
                              json.dumps(now, sort_keys=True), who=self._threshold_changer)
            self._audited_thresholds = now

    def _close_audit(self) -> None:
        if self._save_timer.isActive():  # a threshold change still settling is recorded before the window goes
            self._save_timer.stop()
            self._thresholds_settled()
        if self._audit_log is not None:
            self._audit_log.close()
            self._audit_log = None
