"""The PLC handshake as a Modbus TCP server (pymodbus), for PLCs without OPC UA.

Register map (PDU addresses, 0-based; any unit id). Text is ASCII, two characters per register, high byte
first, padded with NUL (0x00):

    Coils (FC1 read, FC5/FC15 write)            Discrete inputs (FC2)
      0  Trigger     PLC writes 1; cleared        0  Busy
      1  Ack         PLC writes 1; cleared        1  ResultValid
      2  RecipeLoad  PLC writes 1: load the       2  Ready
                     recipe named in HR 16-31
    Holding registers (FC3 read, FC6/FC16 write)
      0-15   PartId          32 characters, written before Trigger
      16-31  RecipeRequest   32 characters, the recipe RecipeLoad asks for
    Input registers (FC4)
      0      Verdict          0 none, 1 OK, 2 NG, 3 ERROR
      1      DefectCount
      2-3    Heartbeat        UInt32, high word first; +1 every second
      4      TriggersRejected (low 16 bits)
      5      RecipeStatus     0 none, 1 accepted, 2 refused, 3 pending (applied after the current part)
      6-21   ResultPartId     32 characters: the part the result belongs to
      22-37  Recipe           32 characters: the active recipe
      38-45  RecipeVersion    16 characters

The semantics are the handshake's (handshake.py, deploy/plc/README.md). Input registers are written before
the discrete inputs, so a PLC that sees ResultValid reads the matching Verdict.
"""
from __future__ import annotations

import contextvars
import logging
import threading
from typing import Callable, Optional

from inspector.service.plc.handshake import VERDICT_CODES, Handshake, Outputs
from inspector.service.plc.server_thread import ServerThread

log = logging.getLogger(__name__)

COIL_TRIGGER, COIL_ACK, COIL_RECIPE_LOAD = 0, 1, 2
DI_BUSY, DI_RESULT_VALID, DI_READY = 0, 1, 2
HR_PART_ID, HR_RECIPE_REQUEST, TEXT_REGISTERS = 0, 16, 16
IR_VERDICT, IR_DEFECT_COUNT, IR_HEARTBEAT, IR_TRIGGERS_REJECTED, IR_RECIPE_STATUS = 0, 1, 2, 4, 5
IR_RESULT_PART_ID, IR_RECIPE, IR_RECIPE_VERSION = 6, 22, 38
RECIPE_STATUS_CODES = {"": 0, "accepted": 1, "refused": 2, "pending": 3}
# The address of the PLC whose request is being executed: set per request task (see _peer_tracking_server),
# read where its write reaches the handshake, for the audit trail.
_REQUESTING_PEER: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("modbus_peer", default=None)


def text_to_registers(text: str, registers: int) -> list[int]:
    data = text.encode("ascii", "replace")[: registers * 2].ljust(registers * 2, b"\0")
    return [(data[i] << 8) | data[i + 1] for i in range(0, len(data), 2)]


def registers_to_text(values) -> str:
    data = b"".join(bytes(((value >> 8) & 0xFF, value & 0xFF)) for value in values)
    return data.split(b"\0", 1)[0].decode("ascii", "replace")


class ModbusFrontEnd(ServerThread):
    protocol = "modbus"

    def __init__(self, address: str, handshake: Handshake, select_recipe: Callable[[str, str], tuple[bool, str]]):
        host, _, port = address.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self.handshake = handshake
        self.select_recipe = select_recipe
        self.context = None
        super().__init__()

    def __repr__(self) -> str:
        return f"Modbus TCP server {self.host}:{self.port}"

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        super().start(timeout)
        log.info("Modbus TCP server on %s:%d", self.host, self.port)

    async def _main(self) -> None:
        from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext, ModbusSlaveContext

        logging.getLogger("pymodbus").setLevel(logging.ERROR)
        front_end = self

        class Context(ModbusSlaveContext):
            """The device's memory; a PLC's write of a command coil or a text register reaches the handshake."""

            def setValues(self, fc_as_hex, address, values):  # noqa: N802 - pymodbus' name
                super().setValues(fc_as_hex, address, values)
                front_end._written(self.decode(fc_as_hex), address, list(values))

        # ModbusSlaveContext adds 1 to every PDU address: blocks start at 1 so PDU address 0 is index 0.
        self.context = Context(di=ModbusSequentialDataBlock(1, [False] * 8),
                               co=ModbusSequentialDataBlock(1, [False] * 8),
                               hr=ModbusSequentialDataBlock(1, [0] * 32),
                               ir=ModbusSequentialDataBlock(1, [0] * 48))
        self._begin()
        server = _peer_tracking_server()(ModbusServerContext(slaves=self.context, single=True),
                                         address=(self.host, self.port))
        if not await server.listen():
            raise OSError("the address is in use or not available here")
        self.handshake.add_listener(self._on_outputs)
        self._listening()
        try:
            await self._stopping.wait()
        finally:
            await server.shutdown()

    # ------------------------------------------------------------------ memory <-> handshake

    def _set(self, kind: str, address: int, values: list) -> None:
        """Write the device's memory from the station's side (not a PLC write: no command hook)."""
        self.context.store[kind].setValues(address + 1, values)  # PDU address -> block index (see _main)

    def _on_outputs(self, outputs: Outputs) -> None:
        """Handshake listener: input registers first, then the discrete inputs (Busy, ResultValid, Ready)."""
        if self.context is None:
            return
        status = outputs.recipe_status.split(":", 1)[0]
        registers = [VERDICT_CODES.get(outputs.verdict, 0), min(outputs.defect_count, 0xFFFF),
                     (outputs.heartbeat >> 16) & 0xFFFF, outputs.heartbeat & 0xFFFF,
                     outputs.triggers_rejected & 0xFFFF, RECIPE_STATUS_CODES.get(status, 0)]
        registers += text_to_registers(outputs.part_id, 16) + text_to_registers(outputs.recipe, 16)
        registers += text_to_registers(outputs.recipe_version, 8)
        self._set("i", 0, registers)
        self._set("d", 0, [outputs.busy, outputs.result_valid, outputs.ready])

    def _written(self, kind: str, address: int, values: list) -> None:
        """A PLC wrote (server event loop thread). Command coils are cleared at once, then acted on."""
        if kind != "c":
            return
        for offset, value in enumerate(values):
            coil = address + offset
            if not value or coil not in (COIL_TRIGGER, COIL_ACK, COIL_RECIPE_LOAD):
                continue
            self._set("c", coil, [False])
            holding = self.context.store["h"]
            if coil == COIL_TRIGGER:
                self.handshake.trigger(registers_to_text(holding.getValues(1 + HR_PART_ID, TEXT_REGISTERS)))
            elif coil == COIL_ACK:
                self.handshake.ack()
            else:
                name = registers_to_text(holding.getValues(1 + HR_RECIPE_REQUEST, TEXT_REGISTERS))
                who = f"PLC over Modbus TCP from {_REQUESTING_PEER.get() or 'unknown address'}"
                # Loading a recipe's model takes seconds: not on the server's event loop.
                threading.Thread(target=self._load_recipe, args=(name, who), name="plc-modbus-recipe",
                                 daemon=True).start()

    def _load_recipe(self, name: str, who: str) -> None:
        accepted, reason = self.select_recipe(name, who)
        if not accepted:
            log.warning("Modbus recipe request %r from %s refused: %s", name, who, reason)


def _peer_tracking_server():
    """pymodbus' TCP server whose connections note the PLC's address for the request they execute.

    pymodbus hands the datastore no connection; each request runs in a task of its own
    (``ServerRequestHandler.handle_request``), so a context variable set there is seen by the datastore's
    ``setValues`` of that request only, never by another connection's."""
    from pymodbus.server import ModbusTcpServer
    from pymodbus.server.requesthandler import ServerRequestHandler

    class PeerTrackingHandler(ServerRequestHandler):
        async def handle_request(self):
            peer = self.transport.get_extra_info("peername") if self.transport is not None else None
            _REQUESTING_PEER.set(f"{peer[0]}:{peer[1]}" if peer else None)
            await super().handle_request()

    class PeerTrackingServer(ModbusTcpServer):
        def callback_new_connection(self):
            if self.trace_connect:
                self.trace_connect(True)
            return PeerTrackingHandler(self, self.trace_packet, self.trace_pdu, self.trace_connect)

    return PeerTrackingServer

