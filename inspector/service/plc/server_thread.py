"""An asyncio server (the OPC UA and Modbus front ends) on an event loop of its own thread.

The service is threaded, while asyncua and pymodbus are asyncio libraries: each front end runs its
server in one loop thread. ``start`` waits until the server listens (or reports why it cannot),
``stop`` sets an event the server's coroutine awaits and joins the thread.
"""
from __future__ import annotations

import asyncio
import logging
import threading

log = logging.getLogger(__name__)


class ServerThread:
    """Subclasses implement ``_main``: set up the server, call ``self._listening()``, then return when
    ``self._stopping`` is set. ``protocol`` prefixes errors ("opcua", "modbus"); ``where`` names the
    address in them."""

    protocol = "plc"

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name=f"plc-{self.protocol}", daemon=True)

    @property
    def where(self) -> str:
        raise NotImplementedError

    def start(self, timeout: float) -> None:
        from inspector.service.service import ServiceError

        self._thread.start()
        if not self._ready.wait(timeout):
            raise ServiceError(f"{self.protocol}: the {self!r} did not start within {timeout:g} s")
        if self._error is not None:
            raise ServiceError(f"{self.protocol}: cannot serve {self.where} ({self._error})") from self._error

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=10)

    def _listening(self) -> None:
        """Called from ``_main`` once the server accepts connections (``start`` then returns)."""
        self._ready.set()

    def _begin(self) -> None:
        """Called first in ``_main``: the loop and the stop event of this thread."""
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:  # noqa: BLE001 - reported to start(), never lost
            if not self._ready.is_set():
                self._error = error
                self._ready.set()
            else:
                log.exception("the %r stopped", self)

    async def _main(self) -> None:
        raise NotImplementedError
