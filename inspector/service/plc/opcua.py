"""The PLC handshake as an OPC UA server (asyncua), in a thread with its own event loop.

Address space (namespace ``urn:pcb-inspector``; node ids are strings ``Inspector.<line>.<Name>``, so a PLC
program can address them without browsing):

    Objects/Inspector/<line>/
        PartId          String   PLC writes   serial of the next board (before Trigger)
        Trigger         Boolean  PLC writes   1 = inspect one board now; the service clears it
        Ack             Boolean  PLC writes   1 = result taken; the service clears it and ResultValid
        Busy            Boolean  read         a part is being captured and judged
        ResultValid     Boolean  read         Verdict/DefectCount/ResultPartId belong to the last part
        Ready           Boolean  read         a Trigger is accepted now (not Busy, no result waiting)
        Verdict         String   read         OK | NG | ERROR ('' before the first result)
        DefectCount     Int32    read
        ResultPartId    String   read         the PartId the result belongs to
        Recipe          String   read         active recipe name ('' without recipes)
        RecipeVersion   String   read
        RecipeRequest   String   PLC writes   a recipe name: load it (as SelectRecipe; for PLCs that cannot call methods)
        RecipeStatus    String   read         answer to the last request ('accepted', 'pending', 'refused: why')
        Heartbeat       UInt32   read         +1 every second
        TriggersRejected UInt32  read         triggers refused because the station was not Ready
        LastAlarm       String   read         the last handshake alarm in words
        SelectRecipe(name: String) -> Boolean  method

Security (opcua_security.py): with the station's certificate and key, Basic256Sha256 Sign and SignAndEncrypt
(security policy None only when explicitly allowed), to the clients whose certificates are in
``opcua_trusted_clients`` when it is set; without them, policy None as before: bind the server to the machine
network's interface only (e.g. ``opc.tcp://192.168.0.10:4840``). Anonymous identity in both cases.
deploy/plc/README.md.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from inspector.service.plc.handshake import Handshake, Outputs
from inspector.service.plc.opcua_security import (OpcUaSecurity, apply_security, read_station_pair,
                                                  read_trusted_clients)
from inspector.service.plc.server_thread import ServerThread

log = logging.getLogger(__name__)
NAMESPACE = "urn:pcb-inspector"

# name -> (initial value, variant type name, written by the PLC)
VARIABLES: dict[str, tuple[Any, str, bool]] = {
    "PartId": ("", "String", True),
    "Trigger": (False, "Boolean", True),
    "Ack": (False, "Boolean", True),
    "Busy": (False, "Boolean", False),
    "ResultValid": (False, "Boolean", False),
    "Ready": (True, "Boolean", False),
    "Verdict": ("", "String", False),
    "DefectCount": (0, "Int32", False),
    "ResultPartId": ("", "String", False),
    "Recipe": ("", "String", False),
    "RecipeRequest": ("", "String", True),
    "RecipeVersion": ("", "String", False),
    "RecipeStatus": ("", "String", False),
    "Heartbeat": (0, "UInt32", False),
    "TriggersRejected": (0, "UInt32", False),
    "LastAlarm": ("", "String", False),
}
# Written in this order for every new state: the result first, ResultValid after it, Busy/Ready last.
_OUTPUT_ORDER: tuple[tuple[str, Callable[[Outputs], Any]], ...] = (
    ("ResultPartId", lambda o: o.part_id),
    ("Verdict", lambda o: o.verdict),
    ("DefectCount", lambda o: o.defect_count),
    ("Recipe", lambda o: o.recipe),
    ("RecipeVersion", lambda o: o.recipe_version),
    ("RecipeStatus", lambda o: o.recipe_status),
    ("TriggersRejected", lambda o: o.triggers_rejected),
    ("LastAlarm", lambda o: o.alarm),
    ("ResultValid", lambda o: o.result_valid),
    ("Busy", lambda o: o.busy),
    ("Ready", lambda o: o.ready),
    ("Heartbeat", lambda o: o.heartbeat),
)


class OpcUaFrontEnd(ServerThread):
    protocol = "opcua"

    def __init__(self, endpoint: str, line: str, handshake: Handshake,
                 select_recipe: Callable[[str, str], tuple[bool, str]], security: OpcUaSecurity | None = None):
        self.endpoint = endpoint
        self.line = line
        self.handshake = handshake
        self.select_recipe = select_recipe
        self.security = security or OpcUaSecurity()
        self._updates: asyncio.Queue | None = None
        self._nodes: dict[str, Any] = {}
        self._part_id = ""
        self._written: dict[str, Any] = {}
        super().__init__()

    def __repr__(self) -> str:
        return f"OPC UA server {self.endpoint}"

    @property
    def where(self) -> str:
        return self.endpoint

    def start(self, timeout: float = 60.0) -> None:
        logging.getLogger("asyncua").setLevel(logging.WARNING)
        self._station_pair = self._trusted = None
        if self.security.secured:  # read and checked here: a bad file is refused before the server's start-up
            from inspector.service.errors import ServiceError

            try:
                self._station_pair = read_station_pair(self.security)
                self._trusted = read_trusted_clients(self.security)
            except ValueError as error:
                raise ServiceError(f"{self.protocol}: cannot serve {self.where} ({error})") from None
        super().start(timeout)
        if not self.security.secured:
            clients = "security policy None"
        else:
            clients = "Basic256Sha256 Sign, SignAndEncrypt" + (", None" if self.security.allow_unsecured else "")
            clients += (f"; {len(self._trusted.files)} trusted client certificate(s) from {self._trusted.directory}"
                        if self._trusted is not None else "; any client certificate")
        log.info("OPC UA server on %s: Objects/Inspector/%s (%s)", self.endpoint, self.line, clients)
        if self.security.secured and self._trusted is None:
            log.warning("OPC UA: no opcua_trusted_clients: any client certificate gets a secure channel "
                        "(for commissioning only; deploy/plc/README.md)")
        if self._trusted is not None and self.security.allow_unsecured:
            log.warning("OPC UA: opcua_allow_unsecured lets clients without a certificate in, so opcua_trusted_clients "
                        "covers the secure channels only; turn it off once every PLC encrypts")

    # ------------------------------------------------------------------ the event loop thread

    async def _main(self) -> None:
        from asyncua import Server, ua
        from asyncua.common.callback import CallbackType

        self._begin()
        self._updates = asyncio.Queue()
        self._ua = ua
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("PCB inspector")
        await apply_security(server, self.security, self._station_pair, self._trusted, self._peer)
        index = await server.register_namespace(NAMESPACE)
        inspector = await server.nodes.objects.add_object(ua.NodeId("Inspector", index),
                                                          ua.QualifiedName("Inspector", index))
        line = await inspector.add_object(ua.NodeId(f"Inspector.{self.line}", index),
                                          ua.QualifiedName(self.line, index))
        for name, (initial, type_name, writable) in VARIABLES.items():
            node = await line.add_variable(ua.NodeId(f"Inspector.{self.line}.{name}", index),
                                           ua.QualifiedName(name, index),
                                           ua.Variant(initial, getattr(ua.VariantType, type_name)))
            if writable:
                await node.set_writable()
            self._nodes[name] = node
        await line.add_method(ua.NodeId(f"Inspector.{self.line}.SelectRecipe", index),
                              ua.QualifiedName("SelectRecipe", index), self._select_recipe_method,
                              [ua.VariantType.String], [ua.VariantType.Boolean])
        self._by_node_id = {node.nodeid: name for name, node in self._nodes.items()}
        self._server = server
        server.subscribe_server_callback(CallbackType.PostWrite, self._on_write)
        await server.start()
        writer = asyncio.create_task(self._write_outputs())
        self.handshake.add_listener(self._on_outputs)
        self._listening()
        try:
            await self._stopping.wait()
        finally:
            writer.cancel()
            await server.stop()

    def _on_outputs(self, outputs: Outputs) -> None:
        """Handshake listener (any thread): queue the new state for the writer task, in order."""
        loop, updates = self._loop, self._updates
        if loop is not None and updates is not None and not loop.is_closed():
            loop.call_soon_threadsafe(updates.put_nowait, outputs)

    async def _write_outputs(self) -> None:
        """Every state in order (unchanged values are skipped), so no ResultValid edge is lost."""
        while True:
            await self._write(await self._updates.get())

    async def _write(self, outputs: Outputs) -> None:
        ua = self._ua
        for name, value_of in _OUTPUT_ORDER:
            value = value_of(outputs)
            if self._written.get(name, object()) == value:
                continue
            type_name = VARIABLES[name][1]
            await self._server.write_attribute_value(
                self._nodes[name].nodeid, ua.DataValue(ua.Variant(value, getattr(ua.VariantType, type_name))))
            self._written[name] = value

    async def _clear(self, name: str) -> None:
        ua = self._ua
        await self._server.write_attribute_value(self._nodes[name].nodeid,
                                                 ua.DataValue(ua.Variant(False, ua.VariantType.Boolean)))

    async def _on_write(self, event, _dispatcher) -> None:
        """A client wrote: PartId is remembered, Trigger and Ack are commands (cleared again at once)."""
        if not getattr(event, "is_external", True):
            return
        results = event.response_params or []
        for index, write in enumerate(event.request_params.NodesToWrite):
            if index < len(results) and not results[index].is_good():
                continue
            name = self._by_node_id.get(write.NodeId)
            if name is None or write.AttributeId != self._ua.AttributeIds.Value:
                continue
            value = write.Value.Value.Value if write.Value is not None and write.Value.Value is not None else None
            if name == "PartId":
                self._part_id = "" if value is None else str(value)
            elif name == "Trigger" and value:
                await self._clear("Trigger")
                self.handshake.trigger(self._part_id)
            elif name == "Ack" and value:
                await self._clear("Ack")
                self.handshake.ack()
            elif name == "RecipeRequest" and value:
                # Loading a model takes seconds: in a worker thread, the PLC follows RecipeStatus.
                who = self._who(event)
                future = asyncio.get_running_loop().run_in_executor(None, self._select_recipe, str(value), who)
                future.add_done_callback(_log_failure)

    def _who(self, event=None) -> str:
        """Who asked, for the audit trail: the front end, the client's address and, when the client logged
        in, its user. asyncua hands callbacks no session, but it serves each connection's requests in one
        task of its own, so the running task tells which connection (peer address) this request came on."""
        user = getattr(getattr(event, "user", None), "name", None)
        return f"PLC over OPC UA from {self._peer()}" + (f" (user {user})" if user else "")

    def _peer(self) -> str:
        """HOST:PORT of the connection whose request is being served (see ``_who``)."""
        task = asyncio.current_task()
        for client in list(getattr(getattr(getattr(self, "_server", None), "bserver", None), "clients", [])):
            if getattr(client, "_task", None) is task and client.peer_name:
                return f"{client.peer_name[0]}:{client.peer_name[1]}"
        return "unknown address"

    async def _select_recipe_method(self, _parent, name) -> list:
        """SelectRecipe(name) -> Boolean. Awaited in the connection's task (so the caller is known); the
        loading runs in a worker thread (a model takes seconds to load) while other clients are served."""
        ua = self._ua
        text = str((name.Value if hasattr(name, "Value") else name) or "")
        who = self._who()
        accepted = await asyncio.get_running_loop().run_in_executor(None, self._select_recipe, text, who)
        return [ua.Variant(bool(accepted), ua.VariantType.Boolean)]

    def _select_recipe(self, name: str, who: str) -> bool:
        accepted, reason = self.select_recipe(name, who)
        if not accepted:
            log.warning("OPC UA recipe request %r from %s refused: %s", name, who, reason)
        return accepted


def _log_failure(future) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("OPC UA recipe request failed", exc_info=future.exception())
