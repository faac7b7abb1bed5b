"""The PLC side of a line: one handshake state machine (handshake.py) behind OPC UA (opcua.py) and Modbus
TCP (modbus.py) front ends, and trigger-driven capture (capture.py). deploy/plc/README.md is the PLC
programmer's reference (address space, register map, timing).

``PlcLink.from_config(service, config)`` builds what the configuration asks for (nothing without
``opcua``/``modbus``); the Service starts it after its threads and stops it first.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, Optional

from inspector.service.plc.handshake import (BUSY, READY, RESULT, VERDICT_CODES, Handshake, HandshakeTimings,
                                             Outputs, PartRequest)

if TYPE_CHECKING:
    from inspector.service.config import ServiceConfig
    from inspector.service.service import Service

log = logging.getLogger(__name__)
PLC_ROLE = "plc"  # the audit trail's role of a change a PLC made

__all__ = ["BUSY", "READY", "RESULT", "VERDICT_CODES", "Handshake", "HandshakeTimings", "Outputs", "PartRequest",
           "PlcLink"]

RecipeSelector = Callable[[str, str], tuple[bool, str]]  # (name, who asked) -> (accepted, reason)


class PlcLink:
    """The handshake and its front ends for one service."""

    def __init__(self, handshake: Handshake, front_ends: list, service: "Service"):
        self.handshake = handshake
        self.front_ends = front_ends
        self.service = service

    @classmethod
    def from_config(cls, service: "Service", config: "ServiceConfig") -> Optional["PlcLink"]:
        if not (config.opcua or config.modbus):
            return None
        timings = HandshakeTimings(ack_timeout_s=config.ack_timeout_s,
                                   result_timeout_s=max(config.result_timeout_s, config.capture_timeout_s + 1.0))
        handshake = Handshake(service.request_inspection, service.raise_alarm, timings)
        link = cls(handshake, [], service)
        if config.opcua:
            from inspector.service.plc.opcua import OpcUaFrontEnd
            from inspector.service.plc.opcua_security import OpcUaSecurity

            security = OpcUaSecurity(config.opcua_cert, config.opcua_key, config.opcua_allow_unsecured,
                                     config.opcua_trusted_clients)
            link.front_ends.append(OpcUaFrontEnd(config.opcua, config.line, handshake, link.select_recipe, security))
        if config.modbus:
            from inspector.service.plc.modbus import ModbusFrontEnd

            link.front_ends.append(ModbusFrontEnd(config.modbus, handshake, link.select_recipe))
        return link

    def select_recipe(self, name: str, who: str = "plc") -> tuple[bool, str]:
        """The PLC's recipe request; the service's recipe manager decides (validation, between parts) and
        records it in the audit trail as made by ``who`` (the front end and the PLC's address)."""
        manager = getattr(self.service, "recipes", None)
        if manager is None:
            reason = "no recipes directory configured (recipes: / --recipes)"
            self.handshake.set_recipe_status(f"refused: {reason}")
            return False, reason
        return manager.request(name, source="plc", who=who, role=PLC_ROLE)

    def start(self) -> None:
        self.handshake.start()
        started = []
        try:
            for front_end in self.front_ends:
                front_end.start()
                started.append(front_end)
        except BaseException:
            for front_end in started:
                front_end.stop()
            self.handshake.stop()
            raise

    def stop(self) -> None:
        for front_end in self.front_ends:
            try:
                front_end.stop()
            except Exception:
                log.exception("stopping %s failed", front_end)
        self.handshake.stop()
