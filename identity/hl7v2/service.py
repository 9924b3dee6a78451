"""The HL7 v2 front door as one service: the MLLP listener and the ITI-10 notifiers.

``Hl7Service(mpi, db, settings)``; ``await start()`` listens on settings.mllp.host/port (port 0
picks a free port, see ``.port``) and starts one ITI-10 worker per [[notify]] consumer;
``await stop()`` stops accepting, lets messages being handled finish and be answered, then
stops the workers (a delivery in progress is finished first).
"""

from __future__ import annotations

import logging
import socket

from identity.config import Settings
from identity.hl7v2.handler import Hl7Handler
from identity.hl7v2.mllp import MLLPServer
from identity.hl7v2.notifier import Notifier
from identity.mpi import Mpi
from identity.store.db import Database
from identity.tls import describe, server_context

log = logging.getLogger("identity.hl7v2")


class Hl7Service:
    def __init__(
        self, mpi: Mpi, db: Database, settings: Settings, sock: socket.socket | None = None
    ) -> None:
        self.mpi = mpi
        self.db = db
        self.settings = settings
        self.handler = Hl7Handler(mpi, settings)
        self.server = MLLPServer(
            self.handler.handle,
            settings.mllp.host,
            settings.mllp.port,
            max_message_bytes=settings.mllp.max_message_bytes,
            idle_timeout=settings.mllp.idle_timeout,
            max_connections=settings.mllp.max_connections,
            max_connections_per_client=settings.mllp.max_connections_per_client,
            ssl_context=(
                server_context(settings.mllp.tls, "mllp") if settings.mllp.tls else None
            ),
            sock=sock,
        )
        self.notifiers = [Notifier(mpi, settings, consumer) for consumer in settings.notify]

    @property
    def port(self) -> int:
        return self.server.port

    async def start(self) -> None:
        await self.server.start()
        for notifier in self.notifiers:
            notifier.start()
        log.info("event=hl7_started port=%d %s notifiers=%d", self.port,
                 describe(self.settings.mllp.tls), len(self.notifiers))

    async def stop(self, grace: float = 10.0) -> None:
        await self.server.stop(grace)
        for notifier in self.notifiers:
            await notifier.stop()
        log.info("event=hl7_stopped")
