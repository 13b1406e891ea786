"""The embedded broker's network side: Kafka-API requests over TCP, one asyncio loop.

Each connection's requests are answered in order, one at a time (as Kafka mutes a connection while
a request is in flight), so a long-polling fetch holds only its own connection; clients keep their
produce, fetch and group traffic on separate connections, as librdkafka does.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from pathlib import Path

from perpline.broker import handlers
from perpline.broker.cluster import Cluster
from perpline.broker.wire import Reader, WireError

log = logging.getLogger("perpline.broker")

MAX_REQUEST_BYTES = 100 << 20  # librdkafka's message.max.bytes ceiling; a bigger frame closes the connection
MAX_CONNECTIONS = 4_096
HOUSEKEEPING_S = 0.25
_SIZE = struct.Struct(">i")
_HEADER = struct.Struct(">hhi")


class BrokerServer:
    def __init__(self, host: str, port: int, spill_dir: Path | None = None) -> None:
        self.cluster = Cluster(host, port, spill_dir)
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._housekeeping: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind and listen (raises OSError when the port is taken)."""
        self._server = await asyncio.start_server(self._serve, self.cluster.host, self.cluster.port,
                                                  reuse_address=True, limit=1 << 20, backlog=1024)
        self._housekeeping = asyncio.create_task(self._tick())

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._connections):
            writer.close()
        if self._housekeeping is not None:
            self._housekeeping.cancel()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            try:
                self.cluster.housekeeping()
            except Exception:  # noqa: BLE001 (logged; the broker keeps serving)
                log.exception("housekeeping failed")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= MAX_CONNECTIONS:
            writer.close()
            return
        self._connections.add(writer)
        peer = writer.get_extra_info("peername")
        host = str(peer[0]) if peer else ""
        try:
            while True:
                size_raw = await reader.readexactly(4)
                (size,) = _SIZE.unpack(size_raw)
                if not 0 < size <= MAX_REQUEST_BYTES:
                    raise WireError(f"request of {size} bytes")
                frame = await reader.readexactly(size)
                answer = await self._answer(frame, host)
                if answer is not None:
                    writer.write(_SIZE.pack(len(answer)) + answer)
                    if writer.transport.get_write_buffer_size() > 1 << 20:
                        await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except WireError as exc:
            log.warning("bad request: connection closed", extra={"error": str(exc), "peer": host})
        finally:
            self._connections.discard(writer)
            writer.close()

    async def _answer(self, frame: bytes, host: str) -> bytes | None:
        """The response frame (correlation id + body) for one request frame, or None (acks=0)."""
        api_key, version, correlation = _HEADER.unpack_from(frame, 0)
        r = Reader(frame, _HEADER.size)
        client_id = r.nstring() or ""
        entry = handlers.VERSIONS.get(api_key)
        head = _SIZE.pack(correlation)
        if api_key == handlers.API_VERSIONS_KEY and (entry is None or version > entry[1]):
            return head + handlers.unsupported_api_versions()
        if entry is None or not entry[0] <= version <= entry[1]:
            raise WireError(f"api {api_key} version {version} not supported")
        if api_key == handlers.API_VERSIONS_KEY and version >= 3:
            r.skip_tags()
        session = handlers.Session(self.cluster, client_id, host)
        try:
            body = await entry[2](session, version, r)
        except WireError:
            raise
        except Exception:
            log.exception("request failed", extra={"api_key": api_key, "api_version": version, "client": client_id})
            raise WireError(f"api {api_key} failed") from None
        return None if body is None else head + body
