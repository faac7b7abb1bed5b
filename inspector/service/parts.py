"""Trigger mode and traceability: the PLC front end (OPC UA, Modbus TCP) asks for parts, the recipe manager
decides model, template and thresholds, and every record names its part and recipe.

A mixin of ``Service`` (``inspector/service/service.py``).
"""
from __future__ import annotations

import logging
import queue
import time
from typing import Any, Optional

from inspector.capture import Frame
from inspector.service.config import ServiceConfig
from inspector.service.errors import ServiceError
from inspector.service.records import Record, new_record_id
from inspector.service.serial_codes import serial_reader

log = logging.getLogger("inspector.service.service")


class PartsMixin:
    """PLC trigger mode, recipes, and the traceability fields of a record."""

    def _set_up_plc(self, config: ServiceConfig) -> None:
        """With a PLC front end configured (OPC UA, Modbus TCP) frames are captured on trigger only."""
        from inspector.service.plc import PlcLink

        self.recipe_name: Optional[str] = None
        self.recipe_version: Optional[str] = None
        self.triggers: queue.Queue = queue.Queue()
        self.parts: dict[str, Any] = {}  # frame_id -> PartRequest, between capture and inspection
        self.plc_link = PlcLink.from_config(self, config)
        self.plc = None if self.plc_link is None else self.plc_link.handshake
        self.trigger_mode = self.plc_link is not None
        self.recipes = None
        if config.recipes is not None:
            from inspector.service.recipe_manager import STATE_FILE, RecipeManager
            from inspector.service.recipes import RecipeError

            self.recipes = RecipeManager(self, config.recipes, config.data_dir / STATE_FILE)
            try:
                self.recipes.load_initial(config.recipe)
            except RecipeError as error:
                raise ServiceError(f"recipe: {error}") from error
        self.serial_codes = None  # read_serial_code / recipe_by_part_id: built now, so a missing decoder warns at start
        if config.read_serial_code or config.recipe_by_part_id:
            self.serial_codes = serial_reader(config.serial_code_formats)
        self.recipe_patterns = None  # recipe_by_part_id: the part_id_pattern of each recipe (recipe_choice.py)
        self._recipe_choice_problem: Optional[str] = None  # the alarmed reason no recipe was chosen
        if config.recipe_by_part_id:
            from inspector.service.recipe_choice import PartIdPatterns

            self.recipe_patterns = PartIdPatterns(config.recipes)

    def _choose_recipe(self, part_id: Optional[str], origin: str) -> None:
        """recipe_by_part_id: before a part is judged, switch to the recipe whose part_id_pattern matches its
        id. The worker judges one part at a time, so this is between parts by construction. No id, no match or
        several matches: the active recipe stays and one alarm is raised (again only after a part was matched
        in between, so a stream of unreadable codes does not flood the alarm channel; each record still names
        the recipe it was judged with)."""
        if self.recipe_patterns is None:
            return
        choice = self.recipe_patterns.choose(part_id)
        if choice.recipe is None:
            if self._recipe_choice_problem != choice.problem:
                active = self.recipes.active
                self.raise_alarm(choice.problem, "warning", f"{choice.reason}; judged with the active recipe "
                                 f"{active.recipe.name if active else '(none)'}", part_id=part_id)
            self._recipe_choice_problem = choice.problem
            return
        self._recipe_choice_problem = None
        active = self.recipes.active
        if active is None or active.recipe.name != choice.recipe:
            self.recipes.switch_now(choice.recipe, who=f"part id {part_id} ({origin}) matching its part_id_pattern")

    def request_inspection(self, request) -> None:
        """An accepted PLC trigger: the capture thread takes the next frame for this part."""
        self.triggers.put(request)

    def commit_unjudged_part(self, request, error: str) -> Record:
        """A triggered part that got no frame: an ERROR record with its PartId, and ERROR to the PLC."""
        record = Record(record_id=new_record_id(), line=self.line, source=self.source.name,
                        frame_id=f"part:{request.part_id}:{request.number}", frame_file=None, file_version=None,
                        captured_at=time.time(), verdict="ERROR", defects=[], model_name=self.model_name,
                        package_id=self.package_id,
                        latency_ms=round((time.monotonic() - request.triggered_monotonic) * 1e3, 3), error=error,
                        **self._trace(request))
        self._commit(record)
        self.plc.result(request, "ERROR", 0)
        self._after_commit(record, 0.0)
        return record

    def _trace(self, part, active=None, serial: Optional[str] = None) -> dict[str, Any]:
        """Traceability fields of a record: the PLC's PartId (else the serial read from the board's code) and
        the recipe the frame was judged with."""
        name, version = (self.recipe_name, self.recipe_version) if active is None else \
            (active.recipe.name, active.recipe.version)
        part_id = None if part is None else (part.part_id or None)
        return {"part_id": part_id or serial, "recipe": name, "recipe_version": version}

    def _serial_from_code(self, frame: Frame, part) -> Optional[str]:
        """With ``read_serial_code`` (or ``recipe_by_part_id``): the board's serial from a code of
        ``serial_code_formats`` in the frame (``serial_codes``: Data Matrix, QR, Code 128 ...), when the PLC gave
        none. None when off, when the PLC named the part, or when no code is readable."""
        if self.serial_codes is None or (part is not None and part.part_id):
            return None
        return self.serial_codes.read(frame.image, frame.frame_id)
