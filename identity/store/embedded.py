"""The embedded PostgreSQL used when ``database.url`` is unset (pgserver's bundled server).

Its data directory is ``<data_dir>/postgres`` and survives restarts. The server listens on a
Unix socket only. pgserver is synchronous, so start and stop run in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import warnings
from pathlib import Path
from typing import Any

from identity.errors import ConfigError

log = logging.getLogger("identity.store.embedded")

DATABASE = "identity"


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (Path(data_dir) / "postgres").resolve()
        self._server: Any = None
        self.owner = False
        """Whether this process started the server (and so stops it): a command run while
        `identity serve` runs on the same data directory (`identity calibrate`) attaches to the
        running server and leaves it running."""

    def start_sync(self) -> str:
        """Start (or attach to) the server, create the database, return its URL."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            try:
                import pgserver
            except ImportError as exc:  # the container image leaves it out
                raise ConfigError(
                    "database.url is unset and the embedded PostgreSQL (the pgserver package) "
                    "is not installed: set database.url (IDENTITY_DATABASE__URL)") from exc

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self.owner = not self._running()
        self._server = pgserver.get_server(self.pgdata, cleanup_mode=None)
        exists = self._server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}';")
        if "1 row" not in exists:
            self._server.psql(f"CREATE DATABASE {DATABASE};")
        url: str = self._server.get_uri(DATABASE)
        log.info("event=embedded_postgres_started pgdata=%s", self.pgdata)
        return url

    def _running(self) -> bool:
        """A server runs on the data directory: its postmaster.pid names a live process."""
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
            os.kill(pid, 0)
        except (OSError, ValueError):
            return False
        return True

    def stop_sync(self) -> None:
        if self._server is None:
            return
        from pgserver._commands import pg_ctl

        server, self._server = self._server, None
        if self.owner and (self.pgdata / "postmaster.pid").exists():
            try:
                pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=server.system_user)
            except subprocess.CalledProcessError as exc:
                log.warning("event=embedded_postgres_stop_failed code=%s", exc.returncode)
        # pgserver caches one handle per data directory for the process; forget it, so that a
        # later start in this process starts the server again instead of reusing a dead handle.
        server.global_process_id_list.get_and_remove(os.getpid())
        type(server)._instances.pop(self.pgdata, None)
        log.info("event=embedded_postgres_stopped pgdata=%s", self.pgdata)

    async def start(self) -> str:
        return await asyncio.to_thread(self.start_sync)

    async def stop(self) -> None:
        await asyncio.to_thread(self.stop_sync)
