"""MLLP (Minimal Lower Layer Protocol) transport over asyncio: frame decoder, server, client.

A frame is ``0x0B`` + message + ``0x1C 0x0D``. The server hands each frame's bytes to a handler
and frames the handler's reply; messages on one connection are handled strictly in order,
connections run concurrently.

Logging goes to the ``identity.hl7v2.mllp`` logger as ``event key=value`` lines. Message
content is never logged at INFO or above.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import socket
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from identity.hl7v2.errors import FrameTooLargeError, MLLPConnectionError
from identity.hl7v2.tokenizer import to_bytes

__all__ = [
    "END_BLOCK",
    "START_BLOCK",
    "FrameDecoder",
    "Handler",
    "MLLPClient",
    "MLLPServer",
    "encode_frame",
]

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c"
CARRIAGE_RETURN = b"\x0d"
_SB = 0x0B
_EB = 0x1C
_CR = 0x0D

DEFAULT_MAX_MESSAGE_BYTES = 1 << 20
DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_MAX_CONNECTIONS_PER_CLIENT = 32
_READ_SIZE = 64 * 1024

logger = logging.getLogger("identity.hl7v2.mllp")

Handler = Callable[[bytes], Awaitable[bytes | None]]
"""Gets the raw bytes of one message, returns the raw reply (or None for no reply)."""


@dataclass(frozen=True, slots=True)
class Peer:
    """One connection's other end: its address and, over TLS, its verified certificate
    (``ssl.SSLSocket.getpeercert()``'s dict; None when it sent none)."""

    address: str
    certificate: dict[str, Any] | None = None


current_peer: contextvars.ContextVar[Peer | None] = contextvars.ContextVar(
    "mllp_peer", default=None
)
"""The peer of the connection a handler is called for (set by the server for the task that
serves the connection): identity.hl7v2.senders reads it."""


def encode_frame(message: bytes) -> bytes:
    """Wrap one message in an MLLP frame."""
    if _SB in message or _EB in message:
        raise ValueError("an HL7 message must not contain the MLLP block characters 0x0B or 0x1C")
    return START_BLOCK + message + END_BLOCK + CARRIAGE_RETURN


class FrameDecoder:
    """Turns a byte stream into MLLP frames; pure and synchronous.

    ``feed(chunk)`` returns the payloads of every frame completed by ``chunk`` (possibly none,
    possibly several). Bytes outside a frame are discarded and logged. A start block inside an
    unfinished frame abandons that frame (the sender restarted) and starts a new one. An end
    block followed by a byte other than CR still ends the frame (logged). A frame longer than
    ``max_message_bytes`` raises :class:`FrameTooLargeError`; the decoder is unusable after.
    """

    def __init__(
        self, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, *, peer: str = ""
    ) -> None:
        if max_message_bytes < 1:
            raise ValueError("max_message_bytes must be positive")
        self.max_message_bytes = max_message_bytes
        self.peer = peer
        self.discarded_bytes = 0
        self._buffer = bytearray()
        self._in_frame = False
        self._scanned = 0  # bytes of _buffer already known to hold no block character
        self._failed = False

    @property
    def pending_bytes(self) -> int:
        """Bytes of an unfinished frame held back."""
        return len(self._buffer)

    @property
    def in_frame(self) -> bool:
        """True while a frame has started and not ended."""
        return self._in_frame

    def _discard(self, count: int, reason: str) -> None:
        if count:
            self.discarded_bytes += count
            logger.warning("mllp.discarded peer=%s bytes=%d reason=%s", self.peer, count, reason)

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add ``chunk``; return the payloads of the frames it completes, in order."""
        if self._failed:
            raise FrameTooLargeError(len(self._buffer), self.max_message_bytes)
        frames: list[bytes] = []
        buffer = self._buffer
        buffer += chunk
        while buffer:
            if not self._in_frame:
                start = buffer.find(START_BLOCK)
                if start < 0:
                    self._discard(len(buffer), "outside_frame")
                    buffer.clear()
                    break
                self._discard(start, "outside_frame")
                del buffer[: start + 1]
                self._in_frame = True
                self._scanned = 0
                continue
            end = buffer.find(END_BLOCK, self._scanned)
            restart = buffer.find(START_BLOCK, self._scanned, len(buffer) if end < 0 else end)
            if restart >= 0:
                self._discard(restart, "frame_restarted")
                del buffer[: restart + 1]
                self._scanned = 0
                continue
            if end < 0:
                self._scanned = len(buffer)
                self._check_size(len(buffer))
                break
            self._check_size(end)
            if end + 1 >= len(buffer):
                # the end block is the last byte so far: wait for the CR that should follow
                self._scanned = end
                break
            frames.append(bytes(buffer[:end]))
            if buffer[end + 1] == _CR:
                del buffer[: end + 2]
            else:
                logger.warning("mllp.end_block_without_cr peer=%s", self.peer)
                del buffer[: end + 1]
            self._in_frame = False
            self._scanned = 0
        return frames

    def _check_size(self, size: int) -> None:
        if size > self.max_message_bytes:
            self._failed = True
            raise FrameTooLargeError(size, self.max_message_bytes)


class _Connection:
    """State of one accepted connection, seen by stop()."""

    __slots__ = ("peer", "client", "task", "busy", "writer")

    def __init__(
        self, peer: str, client: str, task: asyncio.Task[None], writer: asyncio.StreamWriter
    ) -> None:
        self.peer = peer
        self.client = client  # the peer's address without its port: what per-client limits count
        self.task = task
        self.writer = writer
        self.busy = False  # True from a frame's arrival until its reply is written


def _peer(writer: asyncio.StreamWriter) -> tuple[str, str]:
    """(``address:port`` for the log, ``address`` for the per-client count)."""
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}", str(peer[0])
    return str(peer), str(peer)


class MLLPServer:
    """An asyncio MLLP server that passes each message to ``handler`` and frames its reply.

    One connection: read → handle → reply → next, strictly in order. Connections run
    concurrently. Idle connections are closed after ``idle_timeout`` seconds; a frame larger
    than ``max_message_bytes`` closes its connection; so does a handler that raises (the
    sender gets no reply and must resend, as in HL7 original mode). A connection accepted while
    ``max_connections`` are open, or ``max_connections_per_client`` from the same address, is
    closed at once (after the TLS handshake, with TLS), with no reply: there is no message yet.
    """

    def __init__(
        self,
        handler: Handler,
        host: str = "127.0.0.1",
        port: int = 2575,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        idle_timeout: float = 300.0,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_connections_per_client: int = DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
        ssl_context: ssl.SSLContext | None = None,
        backlog: int = 1024,
        sock: socket.socket | None = None,
    ) -> None:
        self._handler = handler
        self._sock = sock  # a listening socket to serve instead of host and port
        self.host = host
        self._requested_port = port
        self.max_message_bytes = max_message_bytes
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.max_connections_per_client = max_connections_per_client
        self._ssl_context = ssl_context
        self._backlog = backlog
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._per_client: dict[str, int] = {}
        self._refusal_logged_at = -1e9
        self._refusals_suppressed = 0
        self._stopping = False

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("server is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("server already started")
        self._stopping = False
        if self._sock is not None:
            self._server = await asyncio.start_server(
                self._serve_connection, sock=self._sock, ssl=self._ssl_context
            )
        else:
            self._server = await asyncio.start_server(
                self._serve_connection,
                self.host,
                self._requested_port,
                ssl=self._ssl_context,
                backlog=self._backlog,
            )
        logger.info(
            "mllp.listening host=%s port=%d tls=%s",
            self.host,
            self.port,
            "true" if self._ssl_context is not None else "false",
        )

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, let messages being handled finish and their replies be written,
        then close every connection. Handlers still running after ``grace`` are cancelled."""
        server = self._server
        if server is None:
            return
        self._stopping = True
        server.close()
        for connection in list(self._connections):
            if not connection.busy:
                connection.task.cancel()
        tasks = [connection.task for connection in self._connections]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                logger.warning("mllp.stop_cancelled_in_flight")
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        await server.wait_closed()
        self._server = None
        logger.info("mllp.stopped")

    async def __aenter__(self) -> MLLPServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer, client = _peer(writer)
        if self._stopping:
            writer.close()
            return
        refusal = self._refusal(client)
        if refusal is not None:
            self._log_refusal(peer, *refusal)
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(writer.wait_closed(), 5.0)
            return
        ssl_object = writer.get_extra_info("ssl_object")
        if ssl_object is not None:  # the handshake is done (a failed one never gets here)
            logger.info(
                "mllp.connection_opened peer=%s tls=%s client_certificate=%s",
                peer,
                ssl_object.version(),
                "yes" if ssl_object.getpeercert() else "no",
            )
        else:
            logger.info("mllp.connection_opened peer=%s", peer)
        current_peer.set(Peer(peer, ssl_object.getpeercert() if ssl_object else None))
        decoder = FrameDecoder(self.max_message_bytes, peer=peer)
        reason = "eof"
        connection = _Connection(peer, client, task, writer)
        self._connections.add(connection)  # counted from here, forgotten in finally
        self._per_client[client] = self._per_client.get(client, 0) + 1
        try:
            while not self._stopping:
                try:
                    chunk = await asyncio.wait_for(reader.read(_READ_SIZE), self.idle_timeout)
                except TimeoutError:
                    reason = "idle_timeout"
                    break
                if not chunk:
                    break
                try:
                    frames = decoder.feed(chunk)
                except FrameTooLargeError as exc:
                    logger.warning(
                        "mllp.frame_too_large peer=%s size=%d limit=%d",
                        peer,
                        exc.size,
                        exc.limit,
                    )
                    reason = "frame_too_large"
                    break
                if frames:
                    connection.busy = True
                    reason = await self._handle_frames(frames, writer, peer)
                    connection.busy = False
                    if reason:
                        break
                    reason = "eof"
            else:
                reason = "server_stopping"
        except asyncio.CancelledError:
            reason = "server_stopping" if self._stopping else "cancelled"
        except (ConnectionError, OSError) as exc:
            reason = f"connection_error:{type(exc).__name__}"
        finally:
            self._forget(connection)
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(writer.wait_closed(), 5.0)
            logger.info("mllp.connection_closed peer=%s reason=%s", peer, reason)

    def _refusal(self, client: str) -> tuple[str, int] | None:
        """Why a new connection from ``client`` is refused (reason, limit), or None."""
        if len(self._connections) >= self.max_connections:
            return "max_connections", self.max_connections
        if self._per_client.get(client, 0) >= self.max_connections_per_client:
            return "max_connections_per_client", self.max_connections_per_client
        return None

    def _log_refusal(self, peer: str, reason: str, limit: int) -> None:
        """One WARNING per second at most: a client that keeps connecting must not flood the
        log (``suppressed`` counts the refusals not logged since the last line)."""
        now = time.monotonic()
        if now - self._refusal_logged_at < 1.0:
            self._refusals_suppressed += 1
            return
        logger.warning(
            "mllp.connection_refused peer=%s reason=%s limit=%d suppressed=%d",
            peer, reason, limit, self._refusals_suppressed,
        )  # fmt: skip
        self._refusal_logged_at = now
        self._refusals_suppressed = 0

    def _forget(self, connection: _Connection) -> None:
        if connection not in self._connections:
            return
        self._connections.discard(connection)
        left = self._per_client[connection.client] - 1
        if left:
            self._per_client[connection.client] = left
        else:
            del self._per_client[connection.client]

    async def _handle_frames(
        self, frames: list[bytes], writer: asyncio.StreamWriter, peer: str
    ) -> str:
        """Handle frames in order; return a reason to close the connection, or ""."""
        for frame in frames:
            try:
                reply = await self._handler(frame)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("mllp.handler_failed peer=%s bytes=%d", peer, len(frame))
                return "handler_failed"
            if reply is not None:
                writer.write(encode_frame(reply))
                await writer.drain()
            logger.debug(
                "mllp.replied peer=%s in=%d out=%d",
                peer,
                len(frame),
                0 if reply is None else len(reply),
            )
            if self._stopping:
                return "server_stopping"
        return ""


class MLLPClient:
    """An asyncio MLLP client: one request, one reply, in order.

    ``send`` connects on first use (and again after the connection was lost). A reply that
    does not come within ``timeout`` seconds raises TimeoutError and drops the connection,
    so that a late reply can never be taken for the next message's.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 30.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes
        self._ssl_context = ssl_context
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._decoder = FrameDecoder(max_message_bytes)
        self._replies: deque[bytes] = deque()
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def connect(self) -> None:
        if self.connected:
            return
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, ssl=self._ssl_context), self.timeout
        )
        self._decoder = FrameDecoder(self.max_message_bytes, peer=f"{self.host}:{self.port}")
        self._replies.clear()

    async def send(self, message: bytes | str) -> bytes:
        """Send one message and return the payload of the reply frame.

        A str is encoded with the character set named in its own MSH-18 (ASCII if none).
        """
        payload = to_bytes(message) if isinstance(message, str) else message
        frame = encode_frame(payload)
        async with self._lock:
            try:
                return await asyncio.wait_for(self._exchange(frame), self.timeout)
            except BaseException:
                await self._drop()
                raise

    async def _exchange(self, frame: bytes) -> bytes:
        await self.connect()
        assert self._reader is not None and self._writer is not None
        if self._replies:
            logger.warning("mllp.unsolicited_replies count=%d", len(self._replies))
            self._replies.clear()
        self._writer.write(frame)
        await self._writer.drain()
        while not self._replies:
            chunk = await self._reader.read(_READ_SIZE)
            if not chunk:
                raise MLLPConnectionError("connection closed by the peer before the reply")
            self._replies.extend(self._decoder.feed(chunk))
        return self._replies.popleft()

    async def _drop(self) -> None:
        writer = self._writer
        self._reader = self._writer = None
        self._replies.clear()
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def close(self) -> None:
        async with self._lock:
            await self._drop()

    async def __aenter__(self) -> MLLPClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
